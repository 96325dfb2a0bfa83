"""The per-cluster tail kernels (`forward_many_nb`, `simulate_many_nb`) give, bit for bit, what
`forward_returns` and `simulate` give one alert at a time: on random bars with sessions of random
lengths, random candidate rows per alert, every horizon kind and random trade specs."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtester import trades
from backtester.trades import Commission, Horizon, Level, TradeSpec

MINUTE_NS = 60 * 10**9


def random_bars(seed: int, n: int) -> dict[str, np.ndarray]:
    """`n` one-minute bars in sessions of random lengths, with overnight gaps and price ties."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 40, n)
    session = np.repeat(np.arange(n), lengths)[:n].astype(np.int64)
    position = np.concatenate([np.arange(k) for k in lengths])[:n]
    timestamp = session * 86_400 * 10**9 + position * MINUTE_NS
    close = 100 + np.cumsum(rng.choice([-0.5, 0.0, 0.25, 0.5], n))
    open_ = np.concatenate(([close[0]], close[:-1])) + rng.choice([-0.5, 0.0, 0.5], n)
    high = np.maximum(open_, close) + rng.choice([0.0, 0.25, 1.0], n)
    low = np.minimum(open_, close) - rng.choice([0.0, 0.25, 1.0], n)
    return {"timestamp": timestamp, "session": session, "open": open_, "high": high,
            "low": low, "close": close}


def candidate_rows(seed: int, n: int, n_alerts: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted random rows per alert, concatenated, with their offsets (as the program gives)."""
    rng = np.random.default_rng(seed + 1)
    blocks = [np.flatnonzero(rng.random(n) < rng.choice([0.0, 0.05, 0.3])) for _ in range(n_alerts)]
    offsets = np.cumsum([0] + [len(b) for b in blocks]).astype(np.int64)
    return np.concatenate(blocks).astype(np.int64), offsets


HORIZONS = st.one_of(
    st.integers(0, 50).map(lambda k: Horizon(label=f"{k}b", bars=k)),
    st.integers(0, 90).map(lambda k: Horizon(label=f"{k}m", duration_ns=k * MINUTE_NS)),
    st.just(Horizon(label="eod", eod=True)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300),
       horizons=st.lists(st.lists(HORIZONS, max_size=4, unique_by=lambda h: h.label),
                         min_size=1, max_size=4),
       last_session_complete=st.booleans())
def test_forward_many_matches_forward_returns_per_alert(seed, n, horizons, last_session_complete):
    bars = random_bars(seed, n)
    rows, offsets = candidate_rows(seed, n, len(horizons))
    flat = [(j, h) for j, hs in enumerate(horizons) for h in hs]
    kind, value = trades.horizon_codes([h for _, h in flat])
    h_alert = np.array([j for j, _ in flat], dtype=np.int64)
    ret, mfe, mae, complete, starts = trades.forward_many_nb(
        rows, offsets, h_alert, kind, value, bars["timestamp"], bars["session"], bars["close"],
        bars["high"], bars["low"], last_session_complete)
    for h, (j, horizon) in enumerate(flat):
        expected = trades.forward_returns(
            [horizon], rows[offsets[j]:offsets[j + 1]], timestamp=bars["timestamp"],
            close=bars["close"], high=bars["high"], low=bars["low"], session=bars["session"],
            data_end=True, last_session_complete=last_session_complete)
        got = slice(starts[h], starts[h + 1])
        label = horizon.label
        for name, column in (("ret", ret), ("mfe", mfe), ("mae", mae), ("complete", complete)):
            want = expected[f"{name}_{label}"]
            assert column[got].dtype == want.dtype
            np.testing.assert_array_equal(column[got], want, strict=True)


def level(kind: str, value: float, period: int = 14) -> Level:
    return Level(kind=kind, value=value, atr_period=period)


LEVELS = st.one_of(
    st.none(),
    st.sampled_from([0.002, 0.005, 0.01]).map(lambda v: level("percent", v)),
    st.sampled_from([0.25, 1.0]).map(lambda v: level("price", v)),
    st.tuples(st.sampled_from([0.5, 2.0]), st.sampled_from([5, 14])).map(
        lambda vp: level("atr", *vp)))

SPECS = st.builds(
    TradeSpec,
    side=st.sampled_from(["long", "short"]),
    entry=st.sampled_from(["next_open", "close"]),
    take_profit=LEVELS, stop_loss=LEVELS, trailing_stop=LEVELS, trail_after=LEVELS,
    slippage=st.one_of(st.none(), st.just(level("percent", 0.001)), st.just(level("price", 0.01))),
    exit_when=st.sampled_from([None, "exit"]),
    max_bars=st.sampled_from([None, 1, 5, 60]),
    session_close=st.booleans(),
    commission=st.sampled_from([Commission(), Commission(per_share=0.005, percent=0.001,
                                                          minimum=1.0)]),
    bracket_from=st.sampled_from(["fill", "signal_close"]),
    stops_on_entry_bar=st.booleans(),
    quantity=st.sampled_from([1.0, 100.0]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300),
       specs=st.lists(st.one_of(st.none(), SPECS), min_size=1, max_size=4),
       last_session_complete=st.booleans(), row_offset=st.integers(0, 10**6))
def test_simulate_many_matches_simulate_per_alert(seed, n, specs, last_session_complete,
                                                  row_offset):
    bars = random_bars(seed, n)
    rows, offsets = candidate_rows(seed, n, len(specs))
    rng = np.random.default_rng(seed + 2)
    # values rows: 0 the exit rule (1.0 / 0.0 / NaN), 1 ATR(5), 2 ATR(14), NaN in the warm-up
    values = np.empty((3, n))
    values[0] = rng.choice([0.0, 1.0, np.nan], n, p=[0.85, 0.1, 0.05])
    for r, warm in ((1, 5), (2, 14)):
        values[r] = rng.uniform(0.1, 2.0, n)
        values[r, :warm] = np.nan
    atr_slot = {5: 1, 14: 2}
    t_alert, flags, max_bars, costs, kinds, level_values, slots, exit_slot = ([] for _ in range(8))
    for j, spec in enumerate(specs):
        if spec is None:
            continue
        t_alert.append(j)
        kind, value, slot = trades.level_codes(spec, atr_slot.__getitem__)
        kinds.append(kind)
        level_values.append(value)
        slots.append(slot)
        flag, most, cost = trades.trade_codes(spec, has_exit=True)
        flags.append(flag)
        max_bars.append(most)
        costs.append(cost)
        exit_slot.append(0 if spec.exit_when is not None else -1)
    columns, starts, uncovered = trades.simulate_many_nb(
        rows, offsets, np.array(t_alert, dtype=np.int64),
        np.array(flags, dtype=np.bool_).reshape(-1, 7), np.array(max_bars, dtype=np.int64),
        np.array(costs, dtype=np.float64).reshape(-1, 4),
        np.array(kinds, dtype=np.int64).reshape(-1, 5),
        np.array(level_values, dtype=np.float64).reshape(-1, 5),
        np.array(slots, dtype=np.int64).reshape(-1, 5), np.array(exit_slot, dtype=np.int64),
        values, bars["open"], bars["high"], bars["low"], bars["close"], bars["session"], True,
        last_session_complete, row_offset)
    assert uncovered == -1
    names = ("signal_idx", "entry_idx", "entry_price", "exit_idx", "exit_price", "reason",
             "bars_held", "gross_return", "net_return", "mfe", "mae", "both_touched")
    for t, j in enumerate(t_alert):
        spec = specs[j]
        expected = trades.simulate(
            spec, rows[offsets[j]:offsets[j + 1]], timestamp=bars["timestamp"],
            open=bars["open"], high=bars["high"], low=bars["low"], close=bars["close"],
            session=bars["session"], atr={5: values[1], 14: values[2]},
            exit_signal=values[0] == 1.0 if spec.exit_when is not None else None,
            data_end=True, last_session_complete=last_session_complete)
        assert list(expected) == list(names)
        got = slice(starts[t], starts[t + 1])
        for name, column in zip(names, columns):
            want = expected[name]
            if name in ("signal_idx", "entry_idx", "exit_idx"):
                want = want + row_offset
            assert column[got].dtype == want.dtype, name
            np.testing.assert_array_equal(column[got], want, strict=True, err_msg=name)


def test_a_halo_too_short_names_the_first_uncovered_signal():
    bars = random_bars(3, 50)
    rows = np.array([10, 45, 48], dtype=np.int64)
    spec = TradeSpec(max_bars=10, take_profit=level("percent", 0.5))
    kind, value, slot = trades.level_codes(spec, lambda period: -1)
    _, _, uncovered = trades.simulate_many_nb(
        rows, np.array([0, 3], dtype=np.int64), np.array([0], dtype=np.int64),
        np.array([[True, False, False, True, False, False, False]]), np.array([10]),
        np.array([[0.0, 0.0, 0.0, 1.0]]), kind[None], value[None], slot[None], np.array([-1]),
        np.zeros((1, 50)), bars["open"], bars["high"], bars["low"], bars["close"],
        bars["session"], False, True, 0)
    assert uncovered == 45
