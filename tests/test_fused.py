"""The compiled evaluator agrees with the reference interpreter: on random expressions over random
bars (NaN gaps, flat stretches, ties), bit for bit on conditions and candidate rows and within
1e-12 relative on values; and whole clusters (time filters, candidates, forward returns, trades)
match `run_cluster_reference`."""

import datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from backtester import api, cluster, expr, fused
from backtester.bars import from_frame
from backtester.errors import ConfigError
from backtester.synth import generate

MINUTE_NS = 60 * 10**9
NY = "America/New_York"


def random_bars(seed: int, n_sessions: int) -> dict[str, np.ndarray]:
    """Sessions of random lengths (some session indices without bars), integer prices so that
    ties and crosses are common, flat stretches, and missing values in close and high."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 30, n_sessions)
    index = np.cumsum(rng.integers(1, 3, n_sessions))
    session = np.repeat(index, lengths).astype(np.int64)
    position = np.concatenate([np.arange(k) for k in lengths])
    session_open = session * 86_400 * 10**9 + 34_200 * 10**9
    timestamp = session_open + position * MINUTE_NS
    session_close = session_open + np.repeat(lengths + rng.integers(0, 3, n_sessions),
                                             lengths) * MINUTE_NS
    n = len(session)
    close = rng.integers(1, 6, n).astype(float)
    flat = rng.random(n) < 0.3
    close[1:][flat[1:]] = close[:-1][flat[1:]]                 # runs of equal closes
    open_ = rng.integers(1, 6, n).astype(float)
    high = np.maximum(open_, close) + rng.integers(0, 2, n)
    low = np.minimum(open_, close) - rng.integers(0, 2, n)
    gaps = rng.random(n) < 0.05
    close[gaps] = np.nan
    high[rng.random(n) < 0.03] = np.nan
    return {"open": open_, "high": high, "low": low, "close": close,
            "volume": rng.integers(0, 3, n).astype(float), "session": session,
            "timestamp": timestamp.astype(np.int64), "minute_of_day": (570 + position),
            "session_open": session_open.astype(np.int64),
            "session_close": session_close.astype(np.int64)}


# Expression texts: numbers and conditions, built from every construct the program compiles.
_FIELDS = st.sampled_from(["open", "high", "low", "close", "volume", "hl2"])
_SMALL = st.integers(1, 4).map(str)
_CONST = st.sampled_from(["0", "1", "2", "3", "-1", "0.5", "2.5", "1%"])
_SESSION = st.sampled_from(["day_open", "prev_day_close", "day_high_so_far", "day_low_so_far",
                            "minutes_since_open", "minutes_to_close"])


def _numbers(conditions):
    base = st.one_of(_FIELDS, _CONST, _SESSION, st.sampled_from(
        ["sma(3)", "rsi(2)", "ema(close, 2)", "obv", "bbands(5, 2).percent_b", "vwap",
         "macd(3, 6, 2).signal", "macd(3, 6, 2).macd", "atr(3)", "stoch(5, 3, 3).d",
         "highest(high, 3)", "bbands(close, 5, 2).upper", "bbands(low, 4, 2).percent_b"]))

    def extend(inner):
        return st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "**"]), inner)
            .map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            inner.map(lambda x: f"-({x})"),
            inner.map(lambda x: f"abs({x})"),
            st.tuples(st.sampled_from(["min", "max", "fill_missing"]), inner, inner)
            .map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
            st.tuples(st.sampled_from(["prev", "change", "pct_change"]), inner, _SMALL)
            .map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
            st.tuples(inner, st.integers(2, 4)).map(lambda t: f"sma({t[0]}, {t[1]})"),
            st.tuples(conditions, _SMALL).map(lambda t: f"count({t[0]}, {t[1]})"),
            st.tuples(conditions, _SMALL, st.sampled_from(["", ", default=-1"]))
            .map(lambda t: f"bars_since({t[0]}, max_bars={t[1]}{t[2]})"),
            st.tuples(conditions, inner, st.integers(0, 2), _SMALL)
            .map(lambda t: f"value_when({t[0]}, {t[1]}, {t[2]}, max_bars={t[3]})"),
            st.tuples(st.sampled_from(["highest_since", "lowest_since"]), conditions, inner,
                      _SMALL).map(lambda t: f"{t[0]}({t[1]}, {t[2]}, max_bars={t[3]})"),
        )
    return st.recursive(base, extend, max_leaves=6)


def _conditions():
    def extend(inner):
        numbers = _numbers(inner)
        return st.one_of(
            st.tuples(numbers, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), numbers)
            .map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.tuples(inner, st.sampled_from(["and", "or"]), inner, inner)
            .map(lambda t: f"({t[0]} {t[1]} {t[2]} {t[1]} {t[3]})"),
            st.tuples(inner, st.sampled_from(["and", "or"]), inner)
            .map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            inner.map(lambda x: f"not {x}"),
            st.tuples(st.sampled_from(["crosses_above", "crosses_below", "crosses"]), numbers,
                      numbers).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
            st.tuples(st.sampled_from(["rising", "falling"]), numbers, _SMALL)
            .map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
            st.tuples(st.sampled_from(["held", "within", "prev"]), inner, _SMALL)
            .map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
            numbers.map(lambda x: f"is_missing({x})"),
        )
    base = st.sampled_from(["close > open", "high >= prev(high, 1)", "true", "false",
                            "close == 3", "is_missing(close)"])
    return st.recursive(base, extend, max_leaves=5)


CONDITIONS = _conditions()
NUMBERS = _numbers(CONDITIONS)


def assert_same(node, got, want):
    if node.kind == expr.BOOL:
        np.testing.assert_array_equal(got, want, err_msg=str(node))
    else:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, equal_nan=True, err_msg=str(node))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(CONDITIONS, NUMBERS), seed=st.integers(0, 2**32 - 1),
       n_sessions=st.integers(1, 12), every_node=st.booleans())
def test_compiled_program_matches_the_interpreter_on_random_rules(text, seed, n_sessions,
                                                                   every_node):
    try:
        node = expr.parse(text)
    except ConfigError:
        reject()  # e.g. an indicator of a constant: refused by the parser, nothing to compare
    arrays = random_bars(seed, n_sessions)
    want = expr.evaluate([node], expr.Context(arrays))
    nodes = list(expr.walk(node)) if every_node else [node]
    got = fused.evaluate(nodes, expr.Context(arrays))
    for n in nodes:
        assert_same(n, got[n], want[n])


def test_three_valued_logic_follows_the_interpreter_on_every_pair():
    values = np.array([0.0, 1.0, np.nan])
    a, b = np.repeat(values, 3), np.tile(values, 3)
    n = len(a)
    arrays = {"open": a, "high": b, "low": a, "close": b, "volume": np.ones(n),
              "session": np.zeros(n, np.int64), "timestamp": np.arange(n, dtype=np.int64)}
    for text in ("open == 1 and high == 1", "open == 1 or high == 1", "not (open == 1)"):
        node = expr.parse(text)
        want = expr.evaluate([node], expr.Context(arrays))[node]
        np.testing.assert_array_equal(fused.evaluate([node], expr.Context(arrays))[node], want)


def test_division_by_zero_is_missing_not_infinite():
    arrays = random_bars(1, 2)
    node = expr.parse("close / (open - open)")
    assert np.isnan(fused.evaluate([node], expr.Context(arrays))[node]).all()


def test_dead_values_share_slots():
    # 12 comparisons and-ed together need a few rows, not one per node
    text = " and ".join(f"close > prev(close, {k})" for k in range(1, 13))
    program = fused.compile_nodes([expr.parse(text)])
    assert program.n_slots <= 6
    assert len(program.code) >= 12 + 11


# ------------------------------------------------------------------ whole clusters

@pytest.fixture(scope="module")
def barset():
    frame = generate(["AAA", "BBB"], datetime.date(2024, 3, 1), datetime.date(2024, 4, 30), seed=5)
    return from_frame(frame, timezone=NY)


WHENS = ["crosses_below(rsi(14), 40)", "rsi(14) < 35 and close < bbands(20, 2).lower",
         "close > prev(highest(high, 20), 1) or volume > 2 * volume_sma(30)",
         "crosses_above(close, vwap) and minutes_since_open >= 30",
         "held(close > ema(20), 3) and not falling(close, 2)",
         "bars_since(crosses_above(close, sma(30)), max_bars=50) <= 5",
         "obv > prev(obv, 5) and bbands(20, 2).percent_b < 0.3"]


@st.composite
def alerts(draw):
    out = []
    for i in range(draw(st.integers(1, 3))):
        alert = {"name": f"a{i}", "when": draw(st.sampled_from(WHENS)), "forward": [5, 30]}
        if draw(st.booleans()):
            start = draw(st.integers(9 * 60 + 30, 15 * 60))
            alert["between"] = [f"{start // 60:02d}:{start % 60:02d}", "15:45"]
        if draw(st.booleans()):
            alert["days"] = draw(st.lists(st.sampled_from(["mon", "tue", "wed", "thu", "fri"]),
                                          min_size=1, max_size=3, unique=True))
        if draw(st.booleans()):
            alert["skip_first"] = f"{draw(st.integers(1, 30))}min"
        if draw(st.booleans()):
            alert["skip_last"] = f"{draw(st.integers(1, 30))}min"
        if draw(st.booleans()):
            alert["exclude_dates"] = ["2024-03-05", "2024-04-10"]
        if draw(st.booleans()):
            alert["rearm_when"] = "rsi(14) > 50"
        if draw(st.booleans()):
            alert["trade"] = {"side": draw(st.sampled_from(["long", "short"])),
                              "take_profit": "1%", "stop_loss": "1atr", "max_bars": 30,
                              "exit_when": "close > sma(10)"}
        out.append(alert)
    return out


def assert_same_results(got, want):
    assert len(got.events) == len(want.events)
    for a, b in zip(got.events, want.events):
        np.testing.assert_array_equal(a.row, b.row)
        assert a.row.dtype == b.row.dtype == np.int64
        np.testing.assert_array_equal(a.timestamp, b.timestamp)
        np.testing.assert_array_equal(a.session, b.session)
        np.testing.assert_array_equal(a.rearm_runs, b.rearm_runs)
        for part in ("values", "forward"):
            x, y = getattr(a, part), getattr(b, part)
            assert x.keys() == y.keys()
            for key in y:
                np.testing.assert_array_equal(x[key], y[key], err_msg=key)
        assert (a.trades is None) == (b.trades is None)
        for key in b.trades or {}:
            np.testing.assert_array_equal(a.trades[key], b.trades[key], err_msg=key)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(alerts=alerts(), cluster_by=st.sampled_from(["week", "month", {"bars": 700}]))
def test_clusters_match_the_reference_with_time_filters_and_trades(barset, alerts, cluster_by):
    config = {"name": "t", "data": {"path": "<frame>", "timezone": NY}, "alerts": alerts,
              "schedule": {"cluster_by": cluster_by},
              "execution": {"backend": "sequential", "compare_sequential": False}}
    prep = api.prepare(config, bars=barset, backend="sequential")
    for c in prep.layout.clusters:
        bars = barset.bars[c.symbol].slice(c.read_start, c.read_end)
        got = cluster.run_cluster(prep.plan, c, bars, barset.sessions)
        want = cluster.run_cluster_reference(prep.plan, c, bars, barset.sessions)
        assert_same_results(got, want)
