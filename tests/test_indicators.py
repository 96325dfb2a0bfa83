"""Indicator registry: parameters, lookback and warm-up figures, the NaN policy, the cumulative
promise, parity with TA-Lib and with plain pandas definitions, and split invariance."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import talib
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backtester import expr, indicators, schedule
from backtester.bars import SymbolBars
from backtester.indicators import Sessions, bars_until_weight_below, bind_params, compute

ROOT = Path(__file__).resolve().parents[1]

BARS_PER_SESSION = 390
N_SESSIONS = 14
N_BARS = BARS_PER_SESSION * N_SESSIONS
FIRST_SESSION = 100


def make_bars(seed: int, n_bars: int = N_BARS, flat: bool = True,
              still_stretch: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Random-walk 1-minute bars in cents, with flat stretches (zero-range bars) of 3..60 bars
    when `flat` and one of `(start, length)` given as `still_stretch`, integer volumes (some
    zero) and 390-bar sessions."""
    rng = np.random.default_rng(seed)
    steps = np.round(rng.normal(0.0, 0.05, n_bars), 2)
    still = np.zeros(n_bars, dtype=bool)
    if flat:
        for start, length in zip(rng.integers(0, n_bars, n_bars // 150),
                                 rng.integers(3, 60, n_bars // 150)):
            still[start:start + length] = True
    if still_stretch is not None:
        still[still_stretch[0]:sum(still_stretch)] = True
    steps[still] = 0.0
    close = np.round(100.0 + np.cumsum(steps), 2)
    open_ = np.concatenate([[close[0]], close[:-1]])
    up = np.where(still, 0.0, np.round(np.abs(rng.normal(0, 0.03, n_bars)), 2))
    down = np.where(still, 0.0, np.round(np.abs(rng.normal(0, 0.03, n_bars)), 2))
    high = np.maximum(open_, close) + up
    low = np.minimum(open_, close) - down
    volume = rng.integers(1, 5000, n_bars).astype(float)
    volume[rng.random(n_bars) < 0.02] = 0.0
    volume[still & (rng.random(n_bars) < 0.5)] = 0.0
    bar = np.arange(n_bars)
    return {
        "open": open_, "high": high, "low": low, "close": close, "volume": volume,
        "hl2": (high + low) / 2, "hlc3": (high + low + close) / 3,
        "ohlc4": (open_ + high + low + close) / 4,
        "session": (FIRST_SESSION + bar // BARS_PER_SESSION).astype(np.int64),
        "minute_of_day": (570 + bar % BARS_PER_SESSION).astype(np.int64),
    }


def as_tuple(result) -> tuple[np.ndarray, ...]:
    return result if isinstance(result, tuple) else (result,)


def inputs_of(name: str, bars: dict[str, np.ndarray], source: np.ndarray | None = None):
    fields = indicators.get(name).inputs
    arrays = [bars[f] for f in fields]
    if source is not None:
        arrays[0] = source
    return arrays


def assert_close(actual, expected, rtol=1e-9, scale=None):
    """Equal within `rtol` relative, plus an absolute 1e-9 of the series' scale near zero."""
    finite = np.abs(expected[np.isfinite(expected)])
    scale = scale if scale is not None else (finite.max() if finite.size else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-9 * max(scale, 1e-300),
                               equal_nan=True)


# --------------------------------------------------------------------------------------------
# Parameters


@pytest.mark.parametrize(("name", "args", "message"), [
    ("rsi", [0], "period must be an integer >= 2, got 0"),
    ("sma", [-3], "period must be an integer >= 2, got -3"),
    ("sma", [2.5], "period must be an integer >= 2, got 2.5"),
    ("rsi", [14, 3], "rsi takes at most 1 parameter (period), got 2"),
    ("macd", [1, 2, 3, 4], "macd takes at most 3 parameters (fast, slow, signal), got 4"),
    ("vwap", [1], "vwap takes no parameters, got 1"),
    ("bbands", [20, -1], "nbdev must be a number >= 0, got -1"),
    ("sma", [float("nan")], "period must be an integer >= 2, got nan"),
    ("ema", [200_001], "period must be an integer <= 100000, got 200001"),
])
def test_bad_parameters_raise_one_line_value_error(name, args, message):
    with pytest.raises(ValueError) as info:
        bind_params(name, args)
    assert str(info.value) == message


def test_bind_params_fills_defaults_and_keywords_and_casts_integral_floats():
    assert bind_params("macd", [5.0], {"signal": 4}) == {"fast": 5, "slow": 26, "signal": 4}
    assert isinstance(bind_params("sma", [14.0])["period"], int)
    assert bind_params("bbands", [], {"nbdev": 1}) == {"period": 20, "nbdev": 1.0}


def test_bind_params_rejects_unknown_and_repeated_keywords():
    with pytest.raises(ValueError, match="rsi has no parameter 'length' \\(parameters: period\\)"):
        bind_params("rsi", [], {"length": 3})
    with pytest.raises(ValueError, match="rsi got parameter 'period' twice"):
        bind_params("rsi", [3], {"period": 3})


def test_unknown_indicator_is_a_key_error():
    with pytest.raises(KeyError):
        indicators.get("rsii")


def test_every_parameter_default_lies_in_its_range():
    for indicator in indicators.REGISTRY.values():
        for param in indicator.params:
            names = [p.name for p in indicator.params]
            assert bind_params(indicator.name, [], {})[param.name] == param.default, names


# --------------------------------------------------------------------------------------------
# Lookback and warm-up figures


@pytest.mark.parametrize("name", sorted(indicators.REGISTRY))
def test_lookback_is_the_bars_or_sessions_before_every_output_has_a_value(name):
    bars = make_bars(3, flat=False)
    bars["volume"] = bars["volume"] + 1.0
    outputs = as_tuple(compute(name, *inputs_of(name, bars)))
    lookback, sessions = indicators.lookback(name)
    if sessions:
        lookback = int(np.searchsorted(bars["session"], bars["session"][0] + sessions))
    for output in outputs:
        assert np.isfinite(output[lookback:]).all()
    if lookback:
        assert any(np.isnan(output[lookback - 1]) for output in outputs)


def test_relative_volume_looks_back_whole_sessions():
    assert indicators.lookback("relative_volume", sessions=4) == (0, 4)
    assert indicators.lookback_bars("relative_volume", sessions=4) == 0
    assert indicators.lookback("vwap") == (0, 0)


def test_rsi_warmup_is_lookback_plus_bars_until_start_weighs_below_1e_12():
    bars, sessions = indicators.warmup("rsi", period=14)
    k = bars - 14
    assert sessions == 0
    assert (13 / 14) ** k < 1e-12 <= (13 / 14) ** (k - 1)


@pytest.mark.parametrize("stages", [2, 3])
def test_chained_stage_weight_bound_matches_a_simulated_cascade(stages):
    decay = 1 - 2 / 21
    k = bars_until_weight_below(decay, stages=stages)
    error = np.ones(stages)  # every stage starts wrong by 1, the input is exact
    worst = []
    for _ in range(k + 1):
        previous = 0.0
        for stage in range(stages):
            error[stage] = decay * error[stage] + (1 - decay) * previous
            previous = error[stage]
        worst.append(error[-1])
    assert worst[k - 1] < 1e-12
    assert bars_until_weight_below(decay, stages=stages) > bars_until_weight_below(decay)


def test_session_anchored_indicators_warm_up_in_sessions():
    assert indicators.warmup("vwap") == (0, 1)
    assert indicators.warmup("relative_volume", sessions=5) == (0, 6)
    assert indicators.get("vwap").warmup() == Sessions(1)


# --------------------------------------------------------------------------------------------
# Split invariance: every indicator, any cluster layout, with its declared warm-up


SPLIT_CASES = [(name, {}) for name in sorted(indicators.REGISTRY)] + [
    ("rsi", {"period": 5}), ("ema", {"period": 50}), ("dema", {"period": 9}),
    ("tema", {"period": 9}), ("macd", {"fast": 5, "slow": 35, "signal": 5}),
    ("bbands", {"period": 10, "nbdev": 1.5}), ("stoch", {"fastk": 5, "slowk": 3, "slowd": 3}),
    ("stochrsi", {"period": 14, "fastk": 5, "fastd": 3}), ("adx", {"period": 7}),
    ("atr", {"period": 5}), ("relative_volume", {"sessions": 3}),
]


def slice_starts(name: str, params: dict, arrays, session: np.ndarray, starts) -> np.ndarray:
    """Where a cluster computing `name` starts reading, as the scheduler sizes it: the shared
    `warmup_starts`, counting bars in the indicator's `informative_bars`."""
    bars, sessions = indicators.warmup(name, **params)
    mask = indicators.informative_bars(name, *arrays)
    return indicators.warmup_starts(np.asarray(starts, dtype=np.int64), bars, sessions, session,
                                    [] if mask is None else [mask])


def check_split_invariance(name, params, arrays, session, cuts):
    whole = as_tuple(compute(name, *arrays, **params))
    cumulative = indicators.get(name).cumulative
    bounds = [0, *sorted(set(cuts)), len(session)]
    firsts = slice_starts(name, params, arrays, session, bounds[:-1])
    for (start, end), first in zip(itertools.pairwise(bounds), firsts.tolist()):
        part = as_tuple(compute(name, *(a[first:end] for a in arrays), **params))
        for label, full, piece in zip(indicators.get(name).outputs or [name], whole, part):
            piece = piece[start - first:]
            if cumulative:
                piece = piece - piece[0] + full[start]
            try:
                assert_close(piece, full[start:end], scale=np.nanmax(np.abs(full)))
            except AssertionError as error:
                raise AssertionError(f"{name}{params}.{label} cut [{start}, {end}) "
                                     f"from {first}: {error}") from None


cut_lists = st.lists(st.integers(1, N_BARS - 1), max_size=6)


@pytest.mark.parametrize(("name", "params"), SPLIT_CASES,
                         ids=[f"{n}-{'-'.join(map(str, p.values()))}" for n, p in SPLIT_CASES])
@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), cuts=cut_lists)
@example(seed=874, cuts=[3553])  # rsi(5) was 3.5e-9 off: a flat stretch inside its warm-up
def test_matches_one_pass_whatever_the_cluster_layout(name, params, seed, cuts):
    bars = make_bars(seed)
    check_split_invariance(name, params, inputs_of(name, bars), bars["session"], cuts)


RATIO_CASES = [("rsi", {"period": 5}), ("rsi", {}), ("stochrsi", {}), ("atr", {}),
               ("natr", {"period": 5}), ("adx", {}), ("adx", {"period": 7})]


@pytest.mark.parametrize(("name", "params"), RATIO_CASES,
                         ids=[f"{n}-{'-'.join(map(str, p.values()))}" for n, p in RATIO_CASES])
@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), length=st.integers(61, 900), after=st.integers(0, 200))
@example(seed=1, length=300, after=5)  # adx(14) was 2.8e-7 off after a 300-bar flat stretch
def test_recursive_ratios_match_one_pass_after_a_flat_stretch_of_any_length(
        name, params, seed, length, after):
    bars = make_bars(seed, still_stretch=(1500, length))
    cut = 1500 + length + after
    check_split_invariance(name, params, inputs_of(name, bars), bars["session"], [cut, cut + 7])


def test_adx_warmup_counts_directional_movement_not_moving_closes():
    # 400 bars inside one fixed range: closes move, +DM and -DM are 0, DX keeps its start error
    bars = make_bars(4, flat=False)
    base = bars["close"][1999]
    high, low, close = bars["high"].copy(), bars["low"].copy(), bars["close"].copy()
    high[2000:2400], low[2000:2400] = base + 0.5, base - 0.5
    close[2000:2400] = base + np.where(np.arange(400) % 2, 0.1, -0.1)
    moves = indicators.informative_bars("rsi", close)
    movement = indicators.informative_bars("adx", high, low, close)
    assert moves[2001:2400].all() and not movement[2001:2400].any()
    check_split_invariance("adx", {}, [high, low, close], bars["session"], [2405, 2450])


def test_warmup_starts_never_reads_less_than_the_plain_bar_count():
    rng = np.random.default_rng(3)
    session = np.repeat(np.arange(40), 50)
    starts = np.sort(rng.choice(len(session), 30, replace=False))
    for bars, sessions in [(0, 0), (7, 0), (120, 0), (0, 2), (30, 3)]:
        plain = indicators.warmup_starts(starts, bars, sessions, session)
        masked = indicators.warmup_starts(starts, bars, sessions, session,
                                          [rng.random(len(session)) < 0.3])
        assert (masked <= plain).all()
        everything = indicators.warmup_starts(starts, bars, sessions, session,
                                              [np.ones(len(session), dtype=bool)])
        np.testing.assert_array_equal(everything, plain)
    np.testing.assert_array_equal(indicators.warmup_starts(starts, 7, 0, session),
                                  np.maximum(starts - 7, 0))


def test_warmup_starts_passes_the_declared_count_of_informative_bars():
    moved = np.random.default_rng(5).random(3000) < 0.2
    moved[0] = False
    counts = np.cumsum(moved)
    starts = np.arange(1, 3000, 37)
    firsts = indicators.warmup_starts(starts, 40, 0, np.zeros(3000, np.int64), [moved])
    for start, first in zip(starts, firsts):
        assert counts[start] - counts[first] >= 40 or first == 0
        assert first == start or counts[start] - counts[first + 1] < 40  # and no further


def symbol_bars(bars: dict[str, np.ndarray]) -> SymbolBars:
    n = len(bars["close"])
    return SymbolBars("SYN", np.arange(n, dtype=np.int64) * 60 * 10**9, bars["open"],
                      bars["high"], bars["low"], bars["close"], bars["volume"],
                      bars["session"].astype(np.int32))


@pytest.mark.parametrize("rule", ["rsi(14) < 30", "rsi(high, 5) > 70 and ema(20) > close",
                                  "adx(14).adx > 25", "sma(rsi(7), 5) < 40",
                                  "atr(14) > 0.05 or vwap > close"])
def test_scheduler_halos_reach_back_over_a_flat_stretch(rule):
    bars = make_bars(11, still_stretch=(1200, 700))
    node = expr.parse(rule)
    bars_needed, sessions = expr.warmup(node)
    plan = SimpleNamespace(roots=(node,), warmup_bars=bars_needed, warmup_sessions=sessions)
    starts = np.array([0, 1905, 1950, 3000])
    firsts = schedule._warmup_starts(symbol_bars(bars), starts, plan)
    assert firsts[1] <= 1905 - bars_needed - 600 or firsts[1] == 0
    arrays = {k: v for k, v in bars.items() if k in ("open", "high", "low", "close", "volume",
                                                      "session", "minute_of_day")}
    whole = expr.evaluate([node], expr.Context(arrays))
    for (start, end), first in zip(itertools.pairwise([*starts, len(bars["close"])]), firsts):
        part = expr.evaluate([node], expr.Context({k: v[first:end] for k, v in arrays.items()}))
        for sub in expr.indicator_nodes(node):
            assert_close(part[sub][start - first:], whole[sub][start:end],
                         scale=np.nanmax(np.abs(whole[sub])))


SOURCE_CASES = [name for name in sorted(indicators.REGISTRY) if indicators.get(name).source]


@pytest.mark.parametrize("name", SOURCE_CASES)
@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), cuts=cut_lists,
       holes=st.lists(st.integers(0, N_BARS - 1), min_size=1, max_size=8))
def test_matches_one_pass_whatever_the_layout_when_the_source_has_gaps(name, seed, cuts, holes):
    bars = make_bars(seed)
    source = bars["close"].copy()
    source[holes] = np.nan
    source[holes[0]:holes[0] + 30] = np.inf  # a stretch of bad values too
    check_split_invariance(name, {}, inputs_of(name, bars, source), bars["session"], cuts)


MULTI_INPUT_CASES = [name for name in sorted(indicators.REGISTRY)
                     if len(indicators.get(name).inputs) > 1 and not indicators.get(name).cumulative]


@pytest.mark.parametrize("name", MULTI_INPUT_CASES)
@settings(deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), cuts=cut_lists,
       holes=st.lists(st.tuples(st.sampled_from(["high", "low", "close", "hlc3", "volume"]),
                                st.integers(0, N_BARS - 1)), min_size=1, max_size=10))
def test_multi_input_indicators_match_one_pass_with_holes_in_any_input(name, seed, cuts, holes):
    bars = make_bars(seed)
    for field, at in holes:
        bars[field] = bars[field].copy()
        bars[field][at:at + 1 + at % 5] = np.nan if at % 2 else np.inf
    check_split_invariance(name, {}, inputs_of(name, bars), bars["session"], cuts)


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 2**16), cuts=st.lists(st.integers(1, N_BARS - 1), max_size=6))
def test_raw_obv_in_a_rule_matches_one_pass_whatever_the_cluster_layout(seed, cuts):
    # Not only differences: the scheduler's anchors make each cluster's obv the unsplit one.
    bars = make_bars(seed)
    node = expr.parse("obv")
    arrays = {k: bars[k] for k in ("open", "high", "low", "close", "volume", "session")}
    whole = expr.evaluate([node], expr.Context(arrays))[node]
    np.testing.assert_array_equal(whole, talib.OBV(bars["close"], bars["volume"]))
    starts = np.array([0, *sorted(set(cuts))], dtype=np.int64)
    plan = SimpleNamespace(cumulative=(node,))
    anchors = dict(schedule._anchors(plan, symbol_bars(bars), starts))[node]
    for (start, end), anchor in zip(itertools.pairwise([*starts, N_BARS]), anchors):
        ctx = expr.Context({k: v[start:end] for k, v in arrays.items()}, anchors={node: anchor})
        np.testing.assert_array_equal(expr.evaluate([node], ctx)[node], whole[start:end])


# --------------------------------------------------------------------------------------------
# Non-finite input: per finite run


STATELESS = sorted(n for n, i in indicators.REGISTRY.items() if i.stateless_window)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ["sma", "ema", "rsi", "macd", "bbands", "highest", "lowest",
                                  "momentum", "roc"])
def test_a_bad_bar_gives_nan_and_the_indicator_restarts_after_it(name, bad):
    close = make_bars(5)["close"]
    hole = 1000
    source = close.copy()
    source[hole] = bad
    outputs = as_tuple(compute(name, source))
    before = as_tuple(compute(name, close[:hole]))
    after = as_tuple(compute(name, close[hole + 1:]))
    for output, head, tail in zip(outputs, before, after):
        assert np.isnan(output[hole])
        np.testing.assert_array_equal(output[:hole], head)
        np.testing.assert_array_equal(output[hole + 1:], tail)


def per_run(name, arrays, **params):
    """The NaN policy spelled out: `compute` on each finite run alone, NaN elsewhere."""
    finite = np.logical_and.reduce([np.isfinite(a) for a in arrays])
    edges = np.flatnonzero(np.diff(finite.astype(np.int8), prepend=0, append=0))
    outputs = indicators.get(name).outputs or [name]
    out = [np.full(len(finite), np.nan) for _ in outputs]
    for start, end in zip(edges[::2], edges[1::2]):
        for target, values in zip(out, as_tuple(compute(name, *(a[start:end] for a in arrays),
                                                        **params))):
            target[start:end] = values
    return out


PER_RUN_CASES = sorted(n for n, i in indicators.REGISTRY.items()
                       if not i.cumulative and "session" not in i.inputs)


@pytest.mark.parametrize("name", PER_RUN_CASES)
@settings(deadline=None, max_examples=15, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), every=st.integers(2, 40), period=st.integers(2, 12))
def test_frequent_bad_bars_give_exactly_the_per_run_values(name, seed, every, period):
    # Many short runs: the batched paths (one call for stateless windows, no call for runs
    # within the lookback) must equal one kernel call per run, bit for bit.
    bars = make_bars(seed, n_bars=3000)
    arrays = [a.copy() for a in inputs_of(name, bars)]
    rng = np.random.default_rng(seed)
    for array in arrays:
        array[rng.random(3000) < 1 / every] = np.nan
    arrays[0][::every] = np.inf
    params = {p.name: period for p in indicators.get(name).params if p.kind is int
              and p.name in ("period", "fastk")}
    got = as_tuple(compute(name, *arrays, **params))
    for output, want in zip(got, per_run(name, arrays, **params)):
        np.testing.assert_array_equal(output, want, err_msg=name)


def test_stateless_window_indicators_are_the_ones_reading_only_their_window():
    assert STATELESS == ["highest", "lowest", "momentum", "roc", "true_range", "typical_price",
                         "williams_r"]


def test_known_finite_inputs_give_the_same_values_unscanned():
    bars = make_bars(12)
    for name in ("atr", "bbands", "sma", "momentum", "obv"):
        arrays = inputs_of(name, bars)
        for a, b in zip(as_tuple(compute(name, *arrays)),
                        as_tuple(compute(name, *arrays, known_finite=True))):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="one flag per input"):
        compute("atr", *inputs_of("atr", bars), known_finite=[True])


def test_bbands_derived_outputs_are_computed_only_when_asked_for():
    close = make_bars(13)["close"]
    full = dict(zip(indicators.get("bbands").outputs, compute("bbands", close)))
    bands = compute("bbands", close, outputs=["upper"])
    assert sorted(bands) == ["lower", "middle", "upper"]
    both = compute("bbands", close, outputs=["percent_b"])
    np.testing.assert_array_equal(both["percent_b"], full["percent_b"])
    np.testing.assert_array_equal(indicators.derive("bbands", "bandwidth", [close], bands),
                                  full["bandwidth"])
    with pytest.raises(ValueError, match="bbands has no output 'width'"):
        compute("bbands", close, outputs=["width"])
    with pytest.raises(ValueError, match="not a derived output"):
        indicators.derive("bbands", "upper", [close], bands)


def test_rules_using_a_band_and_percent_b_share_one_kernel_call():
    bars = make_bars(14)
    ctx = expr.Context({k: bars[k] for k in ("open", "high", "low", "close", "volume")})
    upper, percent_b, plain = (expr.parse(t) for t in ("bbands(20, 2).upper",
                                                       "bbands(20, 2).percent_b", "bbands(20, 2)"))
    values = expr.evaluate([upper, percent_b, plain], ctx)
    full = compute("bbands", bars["close"])
    np.testing.assert_array_equal(values[upper], full[0])
    np.testing.assert_array_equal(values[plain], full[0])
    np.testing.assert_array_equal(values[percent_b], full[3])
    source = expr.parse("bbands(close / (high - low), 10, 1).bandwidth")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = bars["close"] / (bars["high"] - bars["low"])
    derived = compute("bbands", ratio, period=10, nbdev=1)
    np.testing.assert_array_equal(expr.evaluate([source], ctx)[source], derived[4])


def test_runs_no_longer_than_the_lookback_give_no_values():
    close = make_bars(5)["close"].copy()
    close[100::10] = np.nan  # runs of 9 bars, lookback 19
    assert np.isnan(compute("sma", close, period=20)[100:]).all()
    short = compute("sma", close, period=5)
    assert np.isnan(short[100:105]).all() and np.isfinite(short[105:110]).all()


def test_all_nan_and_empty_inputs():
    assert np.isnan(compute("rsi", np.full(50, np.nan))).all()
    assert compute("rsi", np.empty(0)).shape == (0,)
    assert all(o.shape == (0,) for o in compute("macd", np.empty(0)))


def test_leading_nans_of_a_derived_source_are_skipped_like_talib():
    close = make_bars(6)["close"]
    rsi = compute("rsi", close)
    np.testing.assert_array_equal(compute("sma", rsi, period=5), talib.SMA(rsi, 5))


def test_multi_input_indicators_restart_when_any_input_is_bad():
    bars = make_bars(7)
    high = bars["high"].copy()
    high[2000] = np.nan
    atr = compute("atr", high, bars["low"], bars["close"])
    assert np.isnan(atr[2000:2001 + 14]).all()
    np.testing.assert_array_equal(
        atr[2001:], compute("atr", high[2001:], bars["low"][2001:], bars["close"][2001:]))


def test_session_kernels_skip_a_bad_bar_and_carry_on():
    bars = make_bars(8)
    volume = bars["volume"].copy()
    volume[50] = np.nan
    vwap = compute("vwap", bars["hlc3"], volume, bars["session"])
    clean = volume.copy()
    clean[50] = 0.0
    expected = compute("vwap", bars["hlc3"], clean, bars["session"])
    assert np.isnan(vwap[50])
    np.testing.assert_array_equal(np.delete(vwap, 50), np.delete(expected, 50))


# --------------------------------------------------------------------------------------------
# Cumulative indicators


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 2**16), r=st.integers(0, N_BARS - 1))
def test_obv_differences_do_not_depend_on_where_the_input_starts(seed, r):
    bars = make_bars(seed)
    whole = compute("obv", bars["close"], bars["volume"])
    part = compute("obv", bars["close"][r:], bars["volume"][r:])
    np.testing.assert_array_equal(part - part[0], whole[r:] - whole[r])


def test_obv_skips_bad_bars_and_keeps_its_running_total():
    bars = make_bars(9)
    close = bars["close"].copy()
    close[[10, 500]] = np.nan
    obv = compute("obv", close, bars["volume"])
    assert np.isnan(obv[[10, 500]]).all()
    keep = np.isfinite(close)
    np.testing.assert_array_equal(obv[keep], talib.OBV(close[keep], bars["volume"][keep]))


def test_only_obv_is_cumulative_and_it_reads_raw_bars():
    cumulative = [i for i in indicators.REGISTRY.values() if i.cumulative]
    assert [i.name for i in cumulative] == ["obv"]
    assert not any(i.source for i in cumulative)


# --------------------------------------------------------------------------------------------
# Parity: TA-Lib-backed indicators equal TA-Lib called directly


TALIB_DIRECT = {
    "sma": lambda c, h, lo, v: talib.SMA(c, 20), "ema": lambda c, h, lo, v: talib.EMA(c, 20),
    "wma": lambda c, h, lo, v: talib.WMA(c, 20), "dema": lambda c, h, lo, v: talib.DEMA(c, 20),
    "tema": lambda c, h, lo, v: talib.TEMA(c, 20), "rsi": lambda c, h, lo, v: talib.RSI(c, 14),
    "macd": lambda c, h, lo, v: talib.MACD(c, 12, 26, 9),
    "bbands": lambda c, h, lo, v: talib.BBANDS(c, 20, 2.0, 2.0, 0),
    "atr": lambda c, h, lo, v: talib.ATR(h, lo, c, 14),
    "natr": lambda c, h, lo, v: talib.NATR(h, lo, c, 14),
    "true_range": lambda c, h, lo, v: talib.TRANGE(h, lo, c),
    "stoch": lambda c, h, lo, v: talib.STOCH(h, lo, c, 14, 3, 0, 3, 0),
    "stochrsi": lambda c, h, lo, v: talib.STOCHRSI(c, 14, 14, 3, 0),
    "williams_r": lambda c, h, lo, v: talib.WILLR(h, lo, c, 14),
    "cci": lambda c, h, lo, v: talib.CCI(h, lo, c, 20),
    "adx": lambda c, h, lo, v: (talib.ADX(h, lo, c, 14), talib.PLUS_DI(h, lo, c, 14),
                                talib.MINUS_DI(h, lo, c, 14)),
    "mfi": lambda c, h, lo, v: talib.MFI(h, lo, c, v, 14),
    "obv": lambda c, h, lo, v: talib.OBV(c, v), "roc": lambda c, h, lo, v: talib.ROC(c, 10),
    "momentum": lambda c, h, lo, v: talib.MOM(c, 10),
    "stddev": lambda c, h, lo, v: talib.STDDEV(c, 20, 1.0),
    "highest": lambda c, h, lo, v: talib.MAX(h, 20), "lowest": lambda c, h, lo, v: talib.MIN(lo, 20),
    "typical_price": lambda c, h, lo, v: talib.TYPPRICE(h, lo, c),
    "volume_sma": lambda c, h, lo, v: talib.SMA(v, 20),
}


def talib_direct(name: str, bars: dict[str, np.ndarray]):
    """TA-Lib called directly, at the registry's default parameters, on `bars`."""
    return as_tuple(TALIB_DIRECT[name](bars["close"], bars["high"], bars["low"], bars["volume"]))


def talib_direct_per_run(name: str, bars: dict[str, np.ndarray]):
    """TA-Lib called directly on each run of bars where the indicator's inputs are finite."""
    finite = np.logical_and.reduce([np.isfinite(a) for a in inputs_of(name, bars)])
    edges = np.flatnonzero(np.diff(finite.astype(np.int8), prepend=0, append=0))
    out = [np.full(len(finite), np.nan) for _ in indicators.get(name).kernel_outputs or [name]]
    for start, end in zip(edges[::2], edges[1::2]):
        run = {k: v[start:end] for k, v in bars.items()}
        for target, values in zip(out, talib_direct(name, run)):
            target[start:end] = values
    return out


def test_every_talib_backed_indicator_has_a_direct_reference():
    backed = {n for n, i in indicators.REGISTRY.items()
              if getattr(i.kernel, "talib_functions", ()) and n != "zscore"}
    assert backed == set(TALIB_DIRECT)


def assert_talib_parity(name: str, actual, expected):
    for got, want in zip(as_tuple(actual), expected):
        if name == "stochrsi":  # same arithmetic, assembled from RSI, MAX, MIN and SMA
            assert_close(got, want, rtol=1e-12)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize("seed", [0, 1])
def test_talib_backed_indicators_equal_talib_called_directly(seed):
    bars = make_bars(seed, flat=False)
    for name in TALIB_DIRECT:
        assert_talib_parity(name, compute(name, *inputs_of(name, bars)), talib_direct(name, bars))


@pytest.mark.parametrize("name", sorted(set(TALIB_DIRECT) - {"stochrsi", "obv"}))
@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), long_flat=st.integers(0, 500),
       holes=st.lists(st.tuples(st.sampled_from(["high", "low", "close", "volume"]),
                                st.integers(0, N_BARS - 1), st.integers(1, 40)), max_size=8))
def test_talib_backed_indicators_equal_talib_per_finite_run_with_flat_stretches_and_gaps(
        name, seed, long_flat, holes):
    # stochrsi differs on flat stretches by design (its convention); obv skips bad bars.
    bars = make_bars(seed, still_stretch=(2000, long_flat))
    for field, at, length in holes:
        bars[field] = bars[field].copy()
        bars[field][at:at + length] = np.nan
    assert_talib_parity(name, compute(name, *inputs_of(name, bars)),
                        talib_direct_per_run(name, bars))


def sample_symbols():
    frame = pd.read_parquet(ROOT / "data" / "sample" / "bars_1min.parquet")
    for symbol, rows in frame.groupby("symbol", observed=True):
        yield symbol, {k: rows[k].to_numpy(dtype=np.float64)
                       for k in ("open", "high", "low", "close", "volume")}


def test_talib_backed_indicators_equal_talib_on_the_sample_data():
    for _, bars in itertools.islice(sample_symbols(), 2):
        bars["hlc3"] = (bars["high"] + bars["low"] + bars["close"]) / 3
        for name in TALIB_DIRECT:  # as the rule evaluator calls them: bar fields unscanned
            assert_talib_parity(name, compute(name, *inputs_of(name, bars), known_finite=True),
                                talib_direct(name, bars))


def test_stochrsi_reads_a_flat_rsi_window_as_zero():
    close = np.concatenate([100 + np.cumsum(np.random.default_rng(1).normal(0, 1, 300)),
                            np.full(100, 90.0)])
    k, d = compute("stochrsi", close)
    assert (k[-60:] == 0.0).all()
    np.testing.assert_allclose(d[-60:], 0.0, atol=1e-9)  # TA-Lib's SMA keeps a running sum


# --------------------------------------------------------------------------------------------
# Parity: our own kernels against plain pandas definitions


@settings(deadline=None, max_examples=20)
@given(seed=st.integers(0, 2**16), long_flat=st.integers(0, 300))
def test_percent_b_bandwidth_and_zscore_equal_their_pandas_definitions(seed, long_flat):
    # Our kernels' arithmetic on TA-Lib's bands and moments, so 1e-9 holds exactly.
    bars = make_bars(seed, still_stretch=(1000, long_flat))
    close = pd.Series(bars["close"])
    upper, middle, lower = (pd.Series(b) for b in talib.BBANDS(bars["close"], 20, 2.0, 2.0, 0))
    width = upper - lower
    percent_b = (close - lower) / width.where(width != 0)
    bandwidth = width / middle.where(middle != 0)
    mean, std = pd.Series(talib.SMA(bars["close"], 20)), pd.Series(talib.STDDEV(bars["close"], 20))
    zscore = (close - mean) / std.where(std != 0)
    bands = compute("bbands", bars["close"])
    assert_close(bands[3], percent_b.to_numpy(), rtol=1e-9, scale=1.0)
    assert_close(bands[4], bandwidth.to_numpy(), rtol=1e-9, scale=1.0)
    assert_close(compute("zscore", bars["close"]), zscore.to_numpy(), rtol=1e-9, scale=1.0)
    assert np.isnan(bands[3][1000 + 19:1000 + long_flat]).all()  # flat windows: bands meet


def sliding(values: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray]:
    windows = np.lib.stride_tricks.sliding_window_view(values, period)
    return np.concatenate([np.full(period - 1, np.nan), windows.mean(axis=1)]), \
        np.concatenate([np.full(period - 1, np.nan), windows.std(axis=1)])


@settings(deadline=None, max_examples=10)
@given(seed=st.integers(0, 2**16))
def test_talib_bands_follow_the_population_definition_within_its_running_sums(seed):
    # TA-Lib's convention (population std, variance < 1e-8 read as 0), documented in ours;
    # its running sums carry about 1e-8 relative against a two-pass variance.
    close = make_bars(seed)["close"]
    mean, std = sliding(close, 20)
    std = np.where(std**2 < 1e-8, 0.0, std)
    for got, want in zip(compute("bbands", close)[:3], (mean + 2 * std, mean, mean - 2 * std)):
        assert_close(got, want, rtol=1e-7)
    assert_close(compute("stddev", close), std, rtol=1e-7)


def pandas_vwap(price, volume, session):
    frame = pd.DataFrame({"pv": price * volume, "v": volume, "s": session})
    sums = frame.groupby("s")[["pv", "v"]].cumsum()
    return (sums["pv"] / sums["v"]).to_numpy()


def drop_random_bars(bars, seed, share=0.1):
    keep = np.random.default_rng(seed).random(len(bars["close"])) >= share
    return {k: v[keep] for k, v in bars.items()}


@settings(deadline=None, max_examples=20)
@given(seed=st.integers(0, 2**16))
def test_session_vwap_equals_groupby_cumsum(seed):
    bars = drop_random_bars(make_bars(seed), seed)
    vwap = compute("vwap", bars["hlc3"], bars["volume"], bars["session"])
    expected = pandas_vwap(bars["hlc3"], bars["volume"], bars["session"]).copy()
    expected[~np.isfinite(expected)] = np.nan
    assert_close(vwap, expected, rtol=1e-12)


def pandas_relative_volume(volume, session, minute, sessions):
    frame = pd.DataFrame({"v": volume, "s": session, "m": minute})
    table = frame.groupby(["s", "m"])["v"].sum().unstack()
    table = table.reindex(range(session[0], session[-1] + 1))
    mean = table.rolling(sessions, min_periods=1).mean().shift(1)
    usual = mean.stack().rename("usual").reset_index()
    usual = frame.merge(usual, on=["s", "m"], how="left")["usual"].to_numpy()
    out = volume / np.where(usual == 0, np.nan, usual)
    out[session - sessions < session[0]] = np.nan
    return out


@pytest.mark.parametrize("sessions", [1, 3, 10])
@settings(deadline=None, max_examples=10)
@given(seed=st.integers(0, 2**16))
def test_relative_volume_equals_the_same_minute_mean_of_previous_sessions(sessions, seed):
    bars = drop_random_bars(make_bars(seed), seed, share=0.3)
    rvol = compute("relative_volume", bars["volume"], bars["session"], bars["minute_of_day"],
                   sessions=sessions)
    expected = pandas_relative_volume(bars["volume"], bars["session"], bars["minute_of_day"],
                                      sessions)
    assert_close(rvol, expected, rtol=1e-9)


@pytest.mark.parametrize("sessions", [1, 4])
@settings(deadline=None, max_examples=10)
@given(seed=st.integers(0, 2**16))
def test_relative_volume_with_several_bars_a_minute_and_fractional_volumes(sessions, seed):
    # Some sessions of 20-second bars (three per minute), some with minutes past 1439 (read
    # modulo a day); volumes such as crypto's.
    bars = drop_random_bars(make_bars(seed), seed, share=0.2)
    session, position = bars["session"], bars["minute_of_day"] - 570
    minute = 570 + np.where(session % 2 == 1, position, position // 3) + 1440 * (session % 5 == 0)
    volume = bars["volume"] * 0.37
    volume[np.random.default_rng(seed).random(len(volume)) < 0.01] = np.nan
    rvol = compute("relative_volume", volume, bars["session"], minute, sessions=sessions)
    keep = np.isfinite(volume)  # a bad volume is not remembered: as if the bar were missing
    expected = np.full(len(volume), np.nan)
    expected[keep] = pandas_relative_volume(volume[keep], bars["session"][keep],
                                            minute[keep] % 1440, sessions)
    assert_close(rvol, expected, rtol=1e-9)


def test_relative_volume_is_two_when_volume_doubles_its_usual_level():
    bar = np.arange(4 * BARS_PER_SESSION)
    session = bar // BARS_PER_SESSION
    minute = 570 + bar % BARS_PER_SESSION
    volume = np.where(session == 3, 200.0, 100.0)
    rvol = compute("relative_volume", volume, session, minute, sessions=3)
    assert np.isnan(rvol[: 3 * BARS_PER_SESSION]).all()
    assert (rvol[3 * BARS_PER_SESSION:] == 2.0).all()


# --------------------------------------------------------------------------------------------
# Docs and versions


def test_docs_list_every_indicator_with_its_warmup():
    text = indicators.render_docs()
    for name in indicators.REGISTRY:
        assert f"`{name}(" in text
    assert "| `vwap()` |" in text and "1 session" in text


def test_docs_file_is_generated_from_the_registry():
    path = Path(__file__).resolve().parents[1] / "docs" / "indicators.md"
    assert path.read_text(encoding="utf-8") == indicators.render_docs(), (
        "docs/indicators.md is stale: run `python -m backtester docs`")


def test_talib_version_names_package_and_c_library():
    text = indicators.talib_version()
    assert talib.__version__ in text and "C library" in text


@pytest.mark.parametrize("name", sorted(indicators.REGISTRY))
def test_every_kernel_is_talib_or_a_documented_nogil_kernel_of_ours(name):
    indicator = indicators.get(name)
    functions = getattr(indicator.kernel, "talib_functions", ())
    ours = getattr(indicator.kernel, "own_kernels", ())
    assert functions or ours, f"{name}: kernel names neither TA-Lib functions nor ours"
    assert set(functions) <= set(talib.get_functions()), name
    for kernel in ours:
        assert kernel.__name__.endswith("_nb")
        assert kernel.targetoptions.get("nogil") is True, kernel.__name__
        assert type(kernel._cache).__name__ != "NullCache", f"{kernel.__name__}: cache=False"
        assert re.search(r"Equivalent to\s+``", kernel.__doc__ or ""), (
            f"{kernel.__name__} does not name the pandas expression it equals")
    assert indicator.releases_gil
    assert all(f"`{k.__name__}`" in indicators.render_docs() for k in ours)


def test_talib_globals_are_at_their_defaults_and_checked_at_import():
    for function in ("RSI", "EMA", "ATR", "NATR", "ADX", "PLUS_DI", "MINUS_DI"):
        assert talib.get_unstable_period(function) == 0
    assert talib.get_compatibility() == 0
    talib.set_unstable_period("RSI", 5)
    try:
        with pytest.raises(ImportError, match="set_unstable_period"):
            indicators._check_talib_globals()
    finally:
        talib.set_unstable_period("RSI", 0)
    indicators._check_talib_globals()


def test_installed_talib_is_the_pinned_series_whose_wrappers_release_the_gil():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"TA-Lib>=0.8,<0.9"' in pyproject
    major, minor = (int(part) for part in talib.__version__.split(".")[:2])
    assert (major, minor) == (0, 8)


def test_bars_until_weight_below_is_finite_for_any_retention():
    assert bars_until_weight_below(0.0) == 1
    assert bars_until_weight_below(0.5) == 40
