"""The rule functions: values on hand-made bars with known answers, the session-aware functions
over a real half-day, split invariance of every history and session function, and errors that
point into the rule."""

import datetime
import itertools
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import backtester
from backtester import expr, schedule, sessions
from backtester.bars import from_frame
from backtester.errors import ConfigError

NY = "America/New_York"
MINUTE_NS = 60 * 10**9


def ctx_of(close, **extra):
    """A context of one session of bars with the given closes (open = high = low = close)."""
    close = np.asarray(close, dtype=np.float64)
    n = len(close)
    arrays = {"open": close, "high": close, "low": close, "close": close,
              "volume": np.ones(n), "session": np.zeros(n, np.int64),
              "minute_of_day": np.zeros(n, np.int64), "timestamp": np.arange(n, dtype=np.int64)}
    arrays.update({k: np.asarray(v) for k, v in extra.items()})
    return expr.Context(arrays)


def value(text, ctx):
    node = expr.parse(text)
    return expr.evaluate([node], ctx)[node]


def known(*values):
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


# --------------------------------------------------------------------------- crosses

@pytest.mark.parametrize("k", [1, 2, 7, 19])
def test_crosses_above_fires_exactly_at_bar_k(k):
    close = np.full(20, 100.0)
    close[k:] = 101.0
    out = value("crosses_above(close, 100.5)", ctx_of(close))
    assert np.isnan(out[0])
    assert list(np.flatnonzero(out == 1.0)) == [k]


def test_touching_the_level_is_not_crossing_it():
    # equal at bar 2 is not above (Pine's ta.crossover): the cross is at bar 3, from equal
    out = value("crosses_above(close, 100)", ctx_of([99, 99, 100, 101, 100, 100, 99]))
    np.testing.assert_array_equal(out, known(None, 0, 0, 1, 0, 0, 0))
    out = value("crosses_below(close, 100)", ctx_of([99, 99, 100, 101, 100, 100, 99]))
    np.testing.assert_array_equal(out, known(None, 0, 0, 0, 0, 0, 1))


# --------------------------------------------------------------------------- history functions

def test_bars_since_counts_from_the_last_true_bar():
    ctx = ctx_of([0, 1, 0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(value("bars_since(close == 1)", ctx),
                                  known(None, 0, 1, 2, 0, 0, 1, 2))
    np.testing.assert_array_equal(value("bars_since(close == 1, default=-1)", ctx),
                                  known(-1, 0, 1, 2, 0, 0, 1, 2))
    # max_bars=1: bars t-1 and t are searched; two bars back is "not seen"
    np.testing.assert_array_equal(value("bars_since(close == 1, max_bars=1)", ctx),
                                  known(None, 0, 1, None, 0, 0, 1, None))
    np.testing.assert_array_equal(value("bars_since(close == 1, default=99, max_bars=1)", ctx),
                                  known(99, 0, 1, 99, 0, 0, 1, 99))


def test_bars_since_treats_unknown_bars_as_not_true():
    # close > 1 is unknown at bar 1: it neither restarts nor stops the count
    out = value("bars_since(close > 1)", ctx_of([2, np.nan, 0, 2, np.nan]))
    np.testing.assert_array_equal(out, known(0, 1, 2, 0, 1))


def test_value_when_returns_x_at_the_kth_most_recent_true_bar():
    close = [5, 6, 7, 8, 9, 10, 11]
    signal = [1, 0, 1, 0, 0, 1, 0]
    ctx = ctx_of(close, high=np.asarray(close) + 100.0, open=signal)
    np.testing.assert_array_equal(value("value_when(open == 1, high)", ctx),
                                  known(105, 105, 107, 107, 107, 110, 110))
    np.testing.assert_array_equal(value("value_when(open == 1, high, 1)", ctx),
                                  known(None, None, 105, 105, 105, 107, 107))
    np.testing.assert_array_equal(value("value_when(open == 1, close, k=2)", ctx),
                                  known(None, None, None, None, None, 5, 5))
    # the latest true bar must lie within the last max_bars + 1 bars
    np.testing.assert_array_equal(value("value_when(open == 1, close, max_bars=1)", ctx),
                                  known(5, 5, 7, 7, None, 10, 10))
    # k = 1 within 3 bars: the older of the two true bars must be <= 3 bars back
    np.testing.assert_array_equal(value("value_when(open == 1, close, 1, max_bars=3)", ctx),
                                  known(None, None, 5, 5, None, 7, None))


def test_highest_and_lowest_since_include_the_anchor_bar():
    close = [3, 9, 4, 8, 2, 6, 1]
    anchor = [0, 1, 0, 0, 1, 0, 0]
    ctx = ctx_of(close, open=anchor)
    np.testing.assert_array_equal(value("highest_since(open == 1, close)", ctx),
                                  known(None, 9, 9, 9, 2, 6, 6))
    np.testing.assert_array_equal(value("lowest_since(open == 1, close)", ctx),
                                  known(None, 9, 4, 4, 2, 2, 1))
    np.testing.assert_array_equal(value("highest_since(open == 1, close, max_bars=2)", ctx),
                                  known(None, 9, 9, 9, 2, 6, 6))
    np.testing.assert_array_equal(value("highest_since(open == 1, close, max_bars=1)", ctx),
                                  known(None, 9, 9, None, 2, 6, None))


def test_highest_since_is_missing_after_a_missing_value_until_the_next_anchor():
    ctx = ctx_of([1, 5, np.nan, 7, 2, 3], open=[1, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(value("highest_since(open == 1, close)", ctx),
                                  known(1, 5, None, None, 2, 3))


finite_or_missing = st.one_of(st.integers(-3, 3).map(float), st.just(np.nan))


@settings(max_examples=300, deadline=None)
@given(cond=st.lists(st.sampled_from([0.0, 1.0, np.nan]), min_size=1, max_size=80),
       data=st.data())
def test_history_kernels_match_their_pandas_equivalents(cond, data):
    cond = np.array(cond)
    n = len(cond)
    x = np.array(data.draw(st.lists(finite_or_missing, min_size=n, max_size=n)))
    unbounded = n + 1
    last = pd.Series(np.where(cond == 1, np.arange(n), np.nan)).ffill().to_numpy()
    seen = ~np.isnan(last)
    since = np.where(seen, np.arange(n) - last, np.nan)
    np.testing.assert_array_equal(expr.bars_since_1d_nb(cond, unbounded), since)
    at_last = np.full(n, np.nan)
    at_last[seen] = x[last[seen].astype(np.int64)]
    np.testing.assert_array_equal(expr.value_when_1d_nb(cond, x, 0, unbounded), at_last)
    group = pd.Series((cond == 1).cumsum())
    finite = np.nan_to_num(x, nan=0.0)
    running = pd.Series(finite).groupby(group).cummax().to_numpy()
    poisoned = pd.Series(np.isnan(x)).groupby(group).cummax().to_numpy()
    expected = np.where(seen & ~poisoned, running, np.nan)
    np.testing.assert_array_equal(expr.extreme_since_1d_nb(cond, x, unbounded, True), expected)


@settings(max_examples=300, deadline=None)
@given(cond=st.lists(st.sampled_from([0.0, 1.0, np.nan]), max_size=60), n=st.integers(1, 8))
def test_window_kernel_matches_its_rolling_sum_equivalent(cond, n):
    cond = np.array(cond, dtype=np.float64)
    true = expr.rolling_sum((cond == 1).astype(float), n)
    false = expr.rolling_sum((cond == 0).astype(float), n)
    missing = expr.rolling_sum(np.isnan(cond).astype(float), n)
    held = np.where(false > 0, 0.0, np.where(missing > 0, np.nan, 1.0))
    within = np.where(true > 0, 1.0, np.where(missing > 0, np.nan, 0.0))
    held[np.isnan(true)] = within[np.isnan(true)] = np.nan
    np.testing.assert_array_equal(expr.window_truth_1d_nb(cond, n, expr.HELD), held)
    np.testing.assert_array_equal(expr.window_truth_1d_nb(cond, n, expr.WITHIN), within)
    np.testing.assert_array_equal(expr.window_truth_1d_nb(cond, n, expr.COUNT), true)


# --------------------------------------------------------------------------- session functions

def calendar_arrays(first="2024-07-02", last="2024-07-05", skip=(), seed=3):
    """Every 1-minute bar of the XNYS sessions from `first` to `last` (07-03 closes at 13:00),
    leaving out the session dates in `skip`, as context arrays."""
    table = sessions.from_calendar("XNYS", datetime.date.fromisoformat(first),
                                   datetime.date.fromisoformat(last), NY)
    keep = [i for i in range(len(table)) if str(table.dates[i]) not in skip]
    stamps = [np.arange(table.open_ns[i], table.close_ns[i], MINUTE_NS) for i in keep]
    session = np.concatenate([np.full(len(s), i, np.int64) for i, s in zip(keep, stamps)])
    timestamp = np.concatenate(stamps).astype(np.int64)
    rng = np.random.default_rng(seed)
    close = 100.0 + np.cumsum(rng.integers(-3, 4, len(timestamp))) / 100.0
    open_ = np.concatenate(([100.0], close[:-1]))
    return {"open": open_, "high": np.maximum(open_, close) + 0.01,
            "low": np.minimum(open_, close) - 0.01, "close": close,
            "volume": np.ones(len(close)), "session": session, "timestamp": timestamp,
            "minute_of_day": np.zeros(len(close), np.int64),
            "session_open": table.open_ns[session], "session_close": table.close_ns[session]}


def row(arrays, local_time):
    stamp = pd.Timestamp(local_time, tz=NY).value
    return int(np.flatnonzero(arrays["timestamp"] == stamp)[0])


def test_minutes_to_close_counts_to_the_calendars_early_close():
    arrays = calendar_arrays()
    out = value("minutes_to_close", expr.Context(arrays))
    assert out[row(arrays, "2024-07-03 12:59")] == 1.0   # half-day: closes at 13:00
    assert out[row(arrays, "2024-07-03 09:30")] == 210.0
    assert out[row(arrays, "2024-07-02 15:59")] == 1.0
    assert out[row(arrays, "2024-07-05 15:45")] == 15.0
    since = value("minutes_since_open", expr.Context(arrays))
    assert since[row(arrays, "2024-07-03 09:30")] == 0.0
    assert since[row(arrays, "2024-07-03 12:59")] == 209.0


def test_day_open_and_prev_day_close_across_the_half_day():
    arrays = calendar_arrays()
    ctx = expr.Context(arrays)
    day_open, prev_close = value("day_open", ctx), value("prev_day_close", ctx)
    open_0703 = arrays["open"][row(arrays, "2024-07-03 09:30")]
    assert day_open[row(arrays, "2024-07-03 09:30")] == open_0703
    assert day_open[row(arrays, "2024-07-03 12:59")] == open_0703
    last_0703 = arrays["close"][row(arrays, "2024-07-03 12:59")]
    assert prev_close[row(arrays, "2024-07-05 09:30")] == last_0703
    assert prev_close[row(arrays, "2024-07-05 15:59")] == last_0703
    assert np.isnan(prev_close[row(arrays, "2024-07-02 10:00")])  # no earlier session in data


def test_prev_day_close_is_missing_when_the_previous_session_has_no_bars():
    arrays = calendar_arrays(skip=("2024-07-03",))
    out = value("prev_day_close", expr.Context(arrays))
    assert np.isnan(out[row(arrays, "2024-07-05 09:30")])


def test_day_high_and_low_so_far_restart_each_session():
    arrays = calendar_arrays()
    ctx = expr.Context(arrays)
    high, low = value("day_high_so_far", ctx), value("day_low_so_far", ctx)
    for day in ("2024-07-02", "2024-07-03", "2024-07-05"):
        rows = arrays["session"] == arrays["session"][row(arrays, f"{day} 09:30")]
        np.testing.assert_array_equal(high[rows], np.maximum.accumulate(arrays["high"][rows]))
        np.testing.assert_array_equal(low[rows], np.minimum.accumulate(arrays["low"][rows]))


def test_argument_free_functions_read_like_fields():
    assert expr.parse("day_open") == expr.parse("day_open()")
    assert str(expr.parse("close > day_open")) == "close > day_open"
    assert str(expr.parse("bars_since(close > 1, max_bars=1000)")) == "bars_since(close > 1)"
    assert expr.parse("value_when(close > 1, high, k=0)") == \
        expr.parse("value_when(close > 1, high)")


def test_history_and_session_functions_declare_their_warmup():
    assert expr.warmup(expr.parse("bars_since(close > open)")) == (expr.DEFAULT_MAX_BARS, 0)
    assert expr.warmup(expr.parse("value_when(close > open, high, 2, max_bars=50)")) == (50, 0)
    assert expr.warmup(expr.parse("highest_since(crosses_above(close, 5), high, max_bars=9)")) \
        == (10, 0)
    assert expr.warmup(expr.parse("day_open")) == (0, 1)
    assert expr.warmup(expr.parse("prev_day_close")) == (0, 2)
    assert expr.warmup(expr.parse("minutes_to_close")) == (0, 0)
    assert expr.warmup(expr.parse("bars_since(close > day_open, max_bars=20)")) == (20, 1)


def test_pipeline_fires_at_the_last_bar_of_each_session_including_the_half_day():
    arrays = calendar_arrays()
    frame = pd.DataFrame({
        "timestamp": pd.DatetimeIndex(arrays["timestamp"].view("datetime64[ns]"))
        .tz_localize("UTC").tz_convert(NY),
        "symbol": "HAND", **{k: arrays[k] for k in ("open", "high", "low", "close", "volume")}})
    bars = from_frame(frame, timezone=NY)
    config = {"name": "half-day", "data": {"path": "<frame>", "timezone": NY},
              "alerts": [{"name": "last", "when": "minutes_to_close <= 1"},
                         {"name": "gap", "when": "minutes_to_close <= 10 and "
                                                 "day_open > prev_day_close - 100",
                          "skip_last": 5}],
              "schedule": {"cluster_by": "day"}, "execution": {"backend": "sequential"}}
    result = backtester.run(config, bars=bars, write=False)
    by_alert = {name: [t.strftime("%m-%d %H:%M") for t in group["timestamp"]]
                for name, group in result.alerts.groupby("alert", observed=True)}
    assert by_alert["last"] == ["07-02 15:59", "07-03 12:59", "07-05 15:59"]
    # prev_day_close needs the previous session: with day clusters its warm-up reads it.
    assert by_alert["gap"] == [f"07-{d} {h}:{m}" for d, h in (("03", 12), ("05", 15))
                               for m in range(50, 55)]


# --------------------------------------------------------------------------- split invariance

SPLIT_RULES = [
    "bars_since(close > open, max_bars=7)",
    "bars_since(close > open, default=-1, max_bars=7)",
    "bars_since(crosses_above(close, open))",
    "value_when(close > open, high, max_bars=9)",
    "value_when(close > open, low, 2, max_bars=9)",
    "highest_since(crosses_above(close, open), high, max_bars=6)",
    "lowest_since(close < open, close, max_bars=11)",
    "day_open", "prev_day_close", "day_high_so_far", "day_low_so_far",
    "minutes_since_open", "minutes_to_close",
    "bars_since(close > day_open, max_bars=5)",
    "prev(day_high_so_far, 3)",
    "value_when(crosses_below(close, prev_day_close), minutes_to_close, max_bars=40)",
]


def random_arrays(seed: int, n_sessions: int) -> dict[str, np.ndarray]:
    """Short sessions of random lengths (some session indices without bars), integer-ish prices
    so that ties and crosses happen often, and a few missing closes and highs."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 40, n_sessions)
    index = np.cumsum(rng.integers(1, 3, n_sessions))      # gaps: sessions without bars
    session = np.repeat(index, lengths).astype(np.int64)
    position = np.concatenate([np.arange(k) for k in lengths])
    session_open = session * 86_400 * 10**9 + 34_200 * 10**9
    timestamp = session_open + position * MINUTE_NS
    session_close = session_open + np.repeat(lengths + rng.integers(0, 3, n_sessions),
                                             lengths) * MINUTE_NS
    n = len(session)
    close = rng.integers(0, 6, n).astype(float)
    open_ = rng.integers(0, 6, n).astype(float)
    high = np.maximum(open_, close) + rng.integers(0, 2, n)
    low = np.minimum(open_, close) - rng.integers(0, 2, n)
    close[rng.random(n) < 0.02] = np.nan
    high[rng.random(n) < 0.02] = np.nan
    return {"open": open_, "high": high, "low": low, "close": close, "volume": np.ones(n),
            "session": session, "timestamp": timestamp.astype(np.int64),
            "minute_of_day": (570 + position).astype(np.int64),
            "session_open": session_open.astype(np.int64),
            "session_close": session_close.astype(np.int64)}


def read_starts(arrays, starts, node):
    """Where the scheduler starts reading a cluster that begins at each of `starts`."""
    bars, sessions_ = expr.warmup(node)
    plan = SimpleNamespace(warmup_bars=bars, warmup_sessions=sessions_)
    return schedule._warmup_starts(SimpleNamespace(session=arrays["session"]), starts, plan)


def split_values(arrays, node, cuts, starts_for=read_starts):
    """`node` evaluated cluster by cluster (cut at `cuts`), each read from its warm-up."""
    n = len(arrays["close"])
    bounds = [0, *sorted(cuts), n]
    starts = np.array(bounds[:-1], dtype=np.int64)
    parts = []
    for (start, end), first in zip(itertools.pairwise(bounds), starts_for(arrays, starts, node)):
        ctx = expr.Context({k: v[first:end] for k, v in arrays.items()})
        parts.append(expr.evaluate([node], ctx)[node][start - first:])
    return np.concatenate(parts)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_sessions=st.integers(2, 80), data=st.data())
def test_new_functions_match_one_pass_whatever_the_cluster_layout(seed, n_sessions, data):
    arrays = random_arrays(seed, n_sessions)
    n = len(arrays["close"])
    cuts = data.draw(st.lists(st.integers(1, n - 1), unique=True, max_size=8)) if n > 1 else []
    for text in SPLIT_RULES:
        node = expr.parse(text)
        whole = expr.evaluate([node], expr.Context(arrays))[node]
        np.testing.assert_array_equal(split_values(arrays, node, cuts), whole, err_msg=text)


def test_split_check_catches_a_warmup_one_bar_short():
    # cond true only at bar 0; with a cut at bar 7 and max_bars=7, bar 7 must still see bar 0
    arrays = random_arrays(0, 1)
    arrays = {k: v[:10] for k, v in arrays.items()}
    arrays["close"] = np.array([9.0] + [0.0] * 9)
    arrays["open"] = np.full(10, 5.0)
    node = expr.parse("bars_since(close > open, max_bars=7)")
    whole = expr.evaluate([node], expr.Context(arrays))[node]
    assert whole[7] == 7.0

    def one_short(arrays, starts, node):
        return np.maximum(starts - (expr.warmup(node)[0] - 1), 0)

    np.testing.assert_array_equal(split_values(arrays, node, [7]), whole)
    assert np.isnan(split_values(arrays, node, [7], starts_for=one_short)[7])


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("text, words, column", [
    ("bars_since(close > 1, defualt=3)", "bars_since() has no option 'defualt' at column 23 "
                                         "(did you mean 'default='?)", 22),
    ("bars_since(close > 1, 5)", "bars_since() takes 1 positional argument, got 2 at column 1 "
                                 "(call it like bars_since(cond, default=missing, "
                                 "max_bars=1000))", 0),
    ("bars_since(close)", "expected a condition, got the number 'close' at column 12", 11),
    ("bars_since(close > 1, max_bars=0)", "'max_bars' must be an integer between 1 and", 31),
    ("bars_since(close > 1, max_bars=2.5)", "'max_bars' must be an integer", 31),
    ("bars_since(close > 1, default=close)", "'default' must be a finite number written", 30),
    ("bars_since(close > 1, default=1, default=2)", "got 'default' twice at column 34", 33),
    ("bars_since(cond=close > 1)", "bars_since() takes 'cond' by position", 11),
    ("value_when(close > 1, high, 1, k=2)", "value_when() got 'k' twice at column 32", 31),
    ("value_when(close > 1, high, -1)", "'k' must be an integer between 0 and", 28),
    ("value_when(close > 1)", "value_when() takes 2 to 3 positional arguments, got 1", 0),
    ("highest_since(close > 1, high, 3)", "takes 2 positional arguments, got 3", 0),
    ("day_open(1)", "day_open takes no arguments at column 1 (write it like a field: day_open)",
     0),
    ("close > day_open.x", "'.x' is only allowed on an indicator call at column 18", 17),
    ("close > day_open().x", "'day_open' has no outputs at column 20", 19),
    ("macd(12, 26, 9).signl > 0", "macd() has no output 'signl' at column 17 "
                                  "(did you mean '.signal'?)", 16),
    ("close > 1 and (macd(12, 26, 9)\n  ).signl > 0", "has no output 'signl' at column 36", 35),
    ("close > day_opne", "unknown name 'day_opne' at column 9 (did you mean 'day_open'?)", 8),
    ("bars_snce(close > 1) < 3", "unknown function 'bars_snce' at column 1 "
                                 "(did you mean 'bars_since'?)", 0),
    ("prev(close, n=1, n=2)", "prev() got 'n' twice", 17),
    ("prev(close, **{})", "'**' arguments are not allowed", 12),
    ("sma(period=-None) > 1", "sma() parameter 'period' must be a finite number", 4),
    ("rsi(1e999) < 30", "rsi() parameters must be finite numbers", 4),
    ("prev(close, " + "9" * 400 + ") > 1", "must be an integer between 1 and 1,000,000,000, "
                                           "got a number out of range", 12),
    ("bars_since(close > 1) > 1 and\n  value_when(close > 1, hgh) > 2",
     "unknown name 'hgh' at column 55", 54),
    ("é + bars_since(close > 1) > 1", "unknown name 'é' at column 1", 0),
    ("close > 1 and  é < 3 and cl0se > 2", "unknown name 'é' at column 16", 15),
    ("minutes_to_close", "is a number, not a condition", 0),
    ("", "empty rule at column 1", 0),
    ("rsi(0) < 30", "rsi(0): period must be an integer >= 2, got 0 at column 1", 0),
    ("close > 1 and rsi(\n  0) < 30", "rsi(0): period must be an integer >= 2, got 0 at "
                                       "column 15", 14),
    ("close > 1 and bbands(20, nbdev=-1).lower > 1", "bbands(20, nbdev=-1): nbdev must be a "
                                                     "number >= 0, got -1 at column 15", 14),
    ("macd(12, 12, 9).macd > 0", "macd(12, 12, 9): fast and slow must differ, got 12 for both "
                                 "at column 1 (the usual pair is fast=12, slow=26)", 0),
    ("macd(slow=12).signal > 0", "macd(slow=12): fast and slow must differ", 0),
    ("sma(1.5%, 20) > 1", "sma(1.5%, 20): a source must be a series, not a number at column 5 "
                          "(write sma(close, ...), or only its parameters)", 4),
    ("close > ema(2 * 3, 5)", "ema(2 * 3, 5): a source must be a series, not a number", 12),
    ("atr(2%) > 1", "atr() parameters are plain numbers, not percentages at column 5", 4),
    ("close > 1.5%.signal", "'.signal' is only allowed on an indicator call at column 14", 13),
    ("close > 1e999%", "number out of range at column 9", 8),
    ("close > " + "9" * 400 + "%", "number out of range at column 9", 8),
    ("5 % 2 > 1", "'%' is not a remainder operator at column 3", 2),
    ("close > __pct__(1)", "unknown function '__pct__' at column 9", 8),
])
def test_rule_errors_name_the_field_and_point_a_caret_at_the_column(text, words, column):
    with pytest.raises(ConfigError) as err:
        expr.parse_condition(text, source="c.yaml", field="alerts[3].when")
    message = str(err.value)
    assert message.startswith("c.yaml: alerts[3].when: ")
    assert words in message
    assert "\n" not in message
    shown, caret = err.value.detail.split("\n")
    assert caret.index("^") - 4 == column
    if len(text) <= 100:  # longer rules are cut around the caret
        assert shown[4:] == text.replace("\n", " ")


def test_errors_inside_a_definition_point_into_the_definition():
    with pytest.raises(ConfigError) as err:
        expr.parse_condition("near and close > 1", source="c.yaml", field="alerts[0].when",
                             defines={"near": "bars_since(close > 1, max_bar=3) < 5"})
    assert str(err.value).startswith("c.yaml: define.near: bars_since() has no option "
                                     "'max_bar' at column 23 (did you mean 'max_bars='?)")


_CALL_NAMES = st.sampled_from(["bars_since", "value_when", "highest_since", "lowest_since",
                               "day_open", "prev_day_close", "minutes_to_close", "prev",
                               "crosses_above", "within", "sma", "macd", "nope", "__pct__",
                               "obv", "atr"])
_ARGS = st.sampled_from(["close > 1", "close", "high", "3", "-2", "0", "2.5", "1e999", "true",
                         "day_open", "'s'", "None", "x", "9" * 30, "1%", "-None", "...",
                         "__pct__(1)", "5 % 2", "2 * 3", "1e999%", "12"])
_KEYS = st.sampled_from(["default", "max_bars", "k", "n", "period", "cond", "x", "defualt",
                         "fast", "slow"])


@st.composite
def calls(draw):
    args = draw(st.lists(_ARGS, max_size=4))
    kwargs = draw(st.lists(st.tuples(_KEYS, _ARGS), max_size=3))
    parts = args + [f"{k}={v}" for k, v in kwargs]
    call = f"{draw(_CALL_NAMES)}({', '.join(parts)})"
    return draw(st.sampled_from([call, f"{call} > 1", f"close > 1 and {call}",
                                 f"{call}.signal > 0"]))


@settings(max_examples=2000, deadline=None)
@given(calls())
def test_fuzzed_calls_compile_or_fail_with_a_located_config_error(text):
    try:
        node = expr.parse(text, source="fuzz", field="when")
    except ConfigError as err:
        assert str(err).startswith("fuzz: when: ")
        assert "\n" not in str(err)
        assert " at column " in str(err)
        assert err.detail.count("^") == 1 or "^" in text
    else:
        expr.warmup(node)
        str(node)


# --------------------------------------------------------------------------- time filters and
# alert state, end to end: hand-made 1-minute bars, exact fire times

def hand_bars(days, closes):
    """Full XNYS sessions of 1-minute bars on `days` (ISO dates), close 100 except the closes
    given as {"YYYY-MM-DD HH:MM": close}; open = previous close."""
    stamps = pd.DatetimeIndex(np.concatenate([
        pd.date_range(f"{day} 09:30", periods=390, freq="1min", tz=NY) for day in days]))
    close = pd.Series(100.0, index=stamps)
    for when, value in closes.items():
        assert pd.Timestamp(when, tz=NY) in close.index, when
        close[pd.Timestamp(when, tz=NY)] = value
    close = close.to_numpy()
    open_ = np.concatenate(([close[0]], close[:-1]))
    frame = pd.DataFrame({"timestamp": stamps, "symbol": "HAND", "open": open_,
                          "high": np.maximum(open_, close) + 0.01,
                          "low": np.minimum(open_, close) - 0.01, "close": close,
                          "volume": 100.0})
    return from_frame(frame, timezone=NY)


def fires(bars, when, cluster_by="day", **alert):
    config = {"name": "hand", "data": {"path": "<frame>", "timezone": NY},
              "alerts": [{"name": "a", "when": when, **alert}],
              "schedule": {"cluster_by": cluster_by}, "execution": {"backend": "sequential"}}
    result = backtester.run(config, bars=bars, write=False)
    return [t.strftime("%m-%d %H:%M") for t in result.alerts.get("timestamp", [])]


MON_TO_WED = ("2024-03-04", "2024-03-05", "2024-03-06")
TEN_EACH_DAY = {f"{day} 10:00": 110.0 for day in MON_TO_WED}


def test_days_keeps_only_the_listed_weekdays():
    bars = hand_bars(MON_TO_WED, TEN_EACH_DAY)
    assert fires(bars, "close > 105") == ["03-04 10:00", "03-05 10:00", "03-06 10:00"]
    assert fires(bars, "close > 105", days=["mon", "wed"]) == ["03-04 10:00", "03-06 10:00"]
    assert fires(bars, "close > 105", days=["tue"]) == ["03-05 10:00"]


def test_exclude_dates_drops_whole_sessions():
    bars = hand_bars(MON_TO_WED, TEN_EACH_DAY)
    assert fires(bars, "close > 105", exclude_dates=["2024-03-05"]) == \
        ["03-04 10:00", "03-06 10:00"]
    assert fires(bars, "close > 105", exclude_dates=["2024-03-04", "2024-03-06"]) == \
        ["03-05 10:00"]


def test_skip_first_drops_bars_opening_within_n_minutes_of_the_open():
    spikes = {f"2024-03-04 {t}": 110.0 for t in ("09:30", "09:34", "09:35", "09:40")}
    bars = hand_bars(["2024-03-04"], spikes)
    assert fires(bars, "close > 105", skip_first=5) == ["03-04 09:35", "03-04 09:40"]
    assert fires(bars, "close > 105", skip_first="10min") == ["03-04 09:40"]


def test_cooldown_in_bars_counts_bars_across_the_session_boundary():
    # rows: 09:40 = 10, 09:45 = 15, 09:50 = 20, 09:51 = 21, 10:05 = 35; day two starts at 390
    spikes = {f"2024-03-04 {t}": 110.0 for t in ("09:40", "09:45", "09:50", "09:51", "10:05",
                                                 "15:55")}
    spikes.update({f"2024-03-05 {t}": 110.0 for t in ("09:31", "09:35")})
    bars = hand_bars(["2024-03-04", "2024-03-05"], spikes)
    # 15:55 is row 385: the next fire needs row >= 395, so 09:31 (391) is dropped, 09:35 fires
    assert fires(bars, "close > 105", cooldown=10) == \
        ["03-04 09:40", "03-04 09:50", "03-04 10:05", "03-04 15:55", "03-05 09:35"]
    assert fires(bars, "close > 105", cooldown="2 bars") == \
        ["03-04 09:40", "03-04 09:45", "03-04 09:50", "03-04 10:05", "03-04 15:55",
         "03-05 09:31", "03-05 09:35"]


def test_several_between_windows_each_include_start_and_exclude_end():
    spikes = {f"2024-03-04 {t}": 110.0 for t in ("09:45", "10:00", "12:00", "14:59", "15:00",
                                                 "15:59")}
    bars = hand_bars(["2024-03-04"], spikes)
    windows = [["15:00", "16:00"], ["09:30", "10:00"]]  # in any order
    assert fires(bars, "close > 105", between=windows) == \
        ["03-04 09:45", "03-04 15:00", "03-04 15:59"]
    assert fires(bars, "close > 105", between=[["09:30", "10:01"], ["11:00", "12:00"]]) == \
        ["03-04 09:45", "03-04 10:00"]


@pytest.mark.parametrize("cluster_by", ["day", {"count": 1}])
def test_rearm_when_holds_across_cluster_boundaries(cluster_by):
    closes = {"2024-03-04 15:50": 90.0, "2024-03-04 15:55": 110.0,   # fire; rearm the same day
              "2024-03-05 09:40": 90.0, "2024-03-05 10:00": 90.0,   # fire (rearmed); dropped
              "2024-03-05 15:59": 110.0,                             # rearm on the last bar
              "2024-03-06 09:30": 90.0, "2024-03-06 09:45": 90.0}   # fire; dropped
    bars = hand_bars(MON_TO_WED, closes)
    assert fires(bars, "close < 95", cluster_by, rearm_when="close > 105") == \
        ["03-04 15:50", "03-05 09:40", "03-06 09:30"]
    # without the rearm rule every candidate fires
    assert len(fires(bars, "close < 95", cluster_by)) == 5


def test_rearm_needs_a_bar_after_the_fire_not_the_fire_bar_itself():
    closes = {"2024-03-04 15:50": 90.0, "2024-03-05 09:40": 90.0, "2024-03-05 09:42": 90.0}
    bars = hand_bars(["2024-03-04", "2024-03-05"], closes)
    # true on the fire bar (15:50 is 10 minutes to the close) and at the next day's 15:50 only
    assert fires(bars, "close < 95", rearm_when="minutes_to_close == 10") == ["03-04 15:50"]
    # true at 15:51, one bar after the fire: the next day's first candidate fires
    assert fires(bars, "close < 95", rearm_when="minutes_to_close == 9") == \
        ["03-04 15:50", "03-05 09:40"]


# --------------------------------------------------------------------------- docs

DOCS = Path(__file__).resolve().parents[1] / "docs" / "rules.md"


def test_every_function_is_documented_with_its_signature():
    text = DOCS.read_text()
    for name, spec in expr.FUNCTIONS.items():
        assert f"| `{spec.signature()}` |" in text, f"docs/rules.md lacks a row for {name}"


def test_rebound_example_in_the_docs():
    # 1-minute bars from 10:00; "oversold" only at 10:02 and 10:03 (highs 99.8 and 99.6)
    close = np.full(12, 99.5)
    close[[5, 7]] = [99.7, 99.9]
    high = close + 0.05
    high[[2, 3]] = [99.8, 99.6]
    flag = np.ones(12)
    flag[[2, 3]] = 0.0
    ctx = ctx_of(close, high=high, volume=flag)
    node = expr.parse_condition("bars_since(oversold) <= 5 and close > value_when(oversold, high)",
                                defines={"oversold": "volume == 0"})
    values = expr.evaluate([node], ctx)
    since = values[expr.parse("bars_since(volume == 0)")]
    assert since[5] == 2 and since[9] == 6
    assert values[expr.parse("value_when(volume == 0, high)")][5] == 99.6
    assert list(np.flatnonzero(values[node] == 1.0)) == [5, 7]
