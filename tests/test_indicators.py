"""Indicator registry: parameters, lookback and warm-up figures, the NaN policy, the cumulative
promise, parity with TA-Lib and with plain pandas definitions, and split invariance."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtester import indicators
from backtester.indicators import Sessions, bars_until_weight_below, bind_params, compute

BARS_PER_SESSION = 390
N_SESSIONS = 14
N_BARS = BARS_PER_SESSION * N_SESSIONS
FIRST_SESSION = 100


def make_bars(seed: int, n_bars: int = N_BARS, flat: bool = True) -> dict[str, np.ndarray]:
    """Random-walk 1-minute bars in cents, with flat stretches (zero-range bars) when `flat`,
    integer volumes (some zero) and 390-bar sessions."""
    rng = np.random.default_rng(seed)
    steps = np.round(rng.normal(0.0, 0.05, n_bars), 2)
    still = np.zeros(n_bars, dtype=bool)
    if flat:
        for start, length in zip(rng.integers(0, n_bars, n_bars // 150),
                                 rng.integers(3, 60, n_bars // 150)):
            still[start:start + length] = True
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
def test_lookback_is_the_bars_before_every_output_has_a_value(name):
    if name == "relative_volume":
        pytest.skip("its first values come after `sessions` sessions, not bars")
    bars = make_bars(3, flat=False)
    bars["volume"] = bars["volume"] + 1.0
    outputs = as_tuple(compute(name, *inputs_of(name, bars)))
    lookback = indicators.lookback_bars(name)
    for output in outputs:
        assert np.isfinite(output[lookback:]).all()
    if lookback:
        assert any(np.isnan(output[lookback - 1]) for output in outputs)


def test_rsi_warmup_is_lookback_plus_bars_until_start_weighs_below_1e_12_plus_flat_allowance():
    bars, sessions = indicators.warmup("rsi", period=14)
    k = bars - 14 - indicators.FLAT_STRETCH_BARS
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


def slice_start(name: str, params: dict, session: np.ndarray, start: int) -> int:
    bars, sessions = indicators.warmup(name, **params)
    if sessions:
        return int(np.searchsorted(session, session[start] - (sessions - 1)))
    return max(0, start - bars)


def check_split_invariance(name, params, arrays, session, cuts):
    whole = as_tuple(compute(name, *arrays, **params))
    cumulative = indicators.get(name).cumulative
    for start, end in itertools.pairwise([0, *sorted(set(cuts)), len(session)]):
        first = slice_start(name, params, session, start)
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
def test_matches_one_pass_whatever_the_cluster_layout(name, params, seed, cuts):
    bars = make_bars(seed)
    check_split_invariance(name, params, inputs_of(name, bars), bars["session"], cuts)


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


# --------------------------------------------------------------------------------------------
# Non-finite input: per finite run


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ["sma", "ema", "rsi", "macd", "bbands", "highest"])
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


def talib_direct(b):
    c, h, lo, v = b["close"], b["high"], b["low"], b["volume"]
    return {
        "sma": talib.SMA(c, 20), "ema": talib.EMA(c, 20), "wma": talib.WMA(c, 20),
        "dema": talib.DEMA(c, 20), "tema": talib.TEMA(c, 20), "rsi": talib.RSI(c, 14),
        "macd": talib.MACD(c, 12, 26, 9), "bbands": talib.BBANDS(c, 20, 2.0, 2.0, 0),
        "atr": talib.ATR(h, lo, c, 14), "natr": talib.NATR(h, lo, c, 14),
        "true_range": talib.TRANGE(h, lo, c), "stoch": talib.STOCH(h, lo, c, 14, 3, 0, 3, 0),
        "stochrsi": talib.STOCHRSI(c, 14, 14, 3, 0), "williams_r": talib.WILLR(h, lo, c, 14),
        "cci": talib.CCI(h, lo, c, 20),
        "adx": (talib.ADX(h, lo, c, 14), talib.PLUS_DI(h, lo, c, 14),
                talib.MINUS_DI(h, lo, c, 14)),
        "mfi": talib.MFI(h, lo, c, v, 14), "obv": talib.OBV(c, v), "roc": talib.ROC(c, 10),
        "momentum": talib.MOM(c, 10), "stddev": talib.STDDEV(c, 20, 1.0),
        "highest": talib.MAX(h, 20), "lowest": talib.MIN(lo, 20),
        "typical_price": talib.TYPPRICE(h, lo, c), "volume_sma": talib.SMA(v, 20),
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_talib_backed_indicators_equal_talib_called_directly(seed):
    bars = make_bars(seed, flat=False)
    for name, expected in talib_direct(bars).items():
        actual = as_tuple(compute(name, *inputs_of(name, bars)))
        for got, want in zip(actual, as_tuple(expected)):
            if name == "stochrsi":  # same arithmetic, assembled from RSI, MAX, MIN and SMA
                assert_close(got, want, rtol=1e-12)
            else:
                np.testing.assert_array_equal(got, want, err_msg=name)


def test_stochrsi_reads_a_flat_rsi_window_as_zero():
    close = np.concatenate([100 + np.cumsum(np.random.default_rng(1).normal(0, 1, 300)),
                            np.full(100, 90.0)])
    k, d = compute("stochrsi", close)
    assert (k[-60:] == 0.0).all()
    np.testing.assert_allclose(d[-60:], 0.0, atol=1e-9)  # TA-Lib's SMA keeps a running sum


# --------------------------------------------------------------------------------------------
# Parity: our own kernels against plain pandas definitions


def sliding(values: np.ndarray, period: int) -> np.ndarray:
    windows = np.lib.stride_tricks.sliding_window_view(values, period)
    return np.concatenate([np.full(period - 1, np.nan), windows.mean(axis=1)]), \
        np.concatenate([np.full(period - 1, np.nan), windows.std(axis=1)])


@settings(deadline=None, max_examples=20)
@given(seed=st.integers(0, 2**16))
def test_bbands_percent_b_bandwidth_and_zscore_equal_their_pandas_definitions(seed):
    close = make_bars(seed)["close"]
    mean, std = sliding(close, 20)
    std = np.where(std**2 < 1e-8, 0.0, std)  # TA-Lib reads a tiny variance as 0
    upper, middle, lower = mean + 2 * std, mean, mean - 2 * std
    width = pd.Series(upper - lower)
    percent_b = ((pd.Series(close) - lower) / width.where(width != 0)).to_numpy()
    bandwidth = (width / middle).to_numpy()
    zscore = ((pd.Series(close) - mean) / pd.Series(std).where(std != 0)).to_numpy()
    bands = compute("bbands", close)
    for got, want in zip(bands, (upper, middle, lower, percent_b, bandwidth)):
        assert_close(got, want, rtol=1e-7)  # TA-Lib's running sums vs a two-pass variance
    assert_close(compute("zscore", close), zscore, rtol=1e-7)
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


def test_every_kernel_names_its_pandas_oracle_or_talib_function():
    for indicator in indicators.REGISTRY.values():
        kernel = indicator.kernel
        assert getattr(kernel, "talib_functions", None) or "Equivalent" in (
            indicators.session_vwap_1d_nb.__doc__ + indicators.relative_volume_1d_nb.__doc__)
    assert math.isfinite(indicators.bars_until_weight_below(0.5))
