"""Forward returns per horizon, horizon parsing and the look-ahead halo they need."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import backtester
from backtester.bars import from_frame
from backtester.errors import ConfigError
from backtester.trades import (
    Horizon,
    TradeSpec,
    forward_returns,
    lookahead,
    lookahead_ns,
    parse_forward,
)

MINUTE = 60_000_000_000


def sample():
    # two sessions of 4 one-minute bars, the second starting 1000 minutes later
    timestamp = np.r_[np.arange(4), 1000 + np.arange(4)].astype(np.int64) * MINUTE
    close = np.array([100, 101, 99, 102, 103, 104, 98, 100], dtype=float)
    high = close + 0.5
    low = close - 0.5
    session = np.array([0, 0, 0, 0, 1, 1, 1, 1], np.int32)
    return {"timestamp": timestamp, "close": close, "high": high, "low": low, "session": session}


def test_bar_horizon_return_and_excursions_from_the_signal_close():
    out = forward_returns((Horizon("2", bars=2),), np.array([0]), **sample(), data_end=True)
    assert out["ret_2"][0] == pytest.approx(99 / 100 - 1)
    assert out["mfe_2"][0] == pytest.approx(101.5 / 100 - 1)
    assert out["mae_2"][0] == pytest.approx(98.5 / 100 - 1)
    assert out["complete_2"].tolist() == [True]


def test_bar_horizon_crosses_sessions():
    out = forward_returns((Horizon("2", bars=2),), np.array([3]), **sample(), data_end=True)
    assert out["ret_2"][0] == pytest.approx(104 / 102 - 1)


def test_horizon_past_the_data_is_marked_incomplete_not_shortened():
    out = forward_returns((Horizon("3", bars=3),), np.array([4, 6]), **sample(), data_end=True)
    assert out["complete_3"].tolist() == [True, False]
    assert np.isnan(out["ret_3"][1]) and np.isnan(out["mfe_3"][1])


def test_duration_horizon_takes_the_last_bar_opening_by_then_and_stops_at_the_overnight_gap():
    horizons = parse_forward(["2min", "30min"], "f", "forward")
    out = forward_returns(horizons, np.array([1]), **sample(), data_end=True)
    assert out["ret_2min"][0] == pytest.approx(102 / 101 - 1)
    # 30 minutes after bar 1 the market is closed: the value is the session's last close
    assert out["ret_30min"][0] == pytest.approx(102 / 101 - 1)
    assert out["complete_30min"].tolist() == [True]


def test_duration_horizon_past_the_data_is_incomplete():
    out = forward_returns(parse_forward(["30min"], "f", "forward"), np.array([6]), **sample(),
                          data_end=True)
    assert out["complete_30min"].tolist() == [False]


def test_eod_horizon_uses_the_signals_session_last_close():
    out = forward_returns((Horizon("eod", eod=True),), np.array([0, 3, 5]), **sample(),
                          data_end=True)
    np.testing.assert_allclose(out["ret_eod"], [102 / 100 - 1, 0.0, 100 / 104 - 1])
    assert out["mfe_eod"][1] == 0.0 and out["mae_eod"][1] == 0.0


def test_eod_in_a_session_cut_by_the_data_end_can_be_marked_incomplete():
    out = forward_returns((Horizon("eod", eod=True),), np.array([0, 5]), **sample(),
                          data_end=True, last_session_complete=False)
    assert out["complete_eod"].tolist() == [True, False]


def test_short_slice_without_data_end_is_an_error():
    with pytest.raises(ValueError, match="data_end"):
        forward_returns((Horizon("5", bars=5),), np.array([5]), **sample(), data_end=False)


def test_no_signals_give_empty_columns():
    out = forward_returns((Horizon("5", bars=5),), np.array([], np.int64), **sample(),
                          data_end=True)
    assert all(len(v) == 0 for v in out.values()) and set(out) == {
        "ret_5", "mfe_5", "mae_5", "complete_5"}


def test_parse_forward_reads_bars_durations_and_eod():
    assert parse_forward([5, "15", "30min", "2h", "eod"], "f", "forward") == (
        Horizon("5", bars=5), Horizon("15", bars=15),
        Horizon("30min", duration_ns=30 * MINUTE), Horizon("2h", duration_ns=120 * MINUTE),
        Horizon("eod", eod=True))
    assert parse_forward(60, "f", "forward") == (Horizon("60", bars=60),)


@pytest.mark.parametrize(("raw", "field", "text"), [
    ([0], "forward[0]", "bars >= 1"),
    (["5 fortnights"], "forward[0]", "cannot read"),
    ([True], "forward[0]", "expected a horizon"),
    ([5, "5"], "forward[1]", "appears twice"),
    ([1.5], "forward[0]", "expected a horizon"),
])
def test_parse_forward_rejects_bad_horizons(raw, field, text):
    with pytest.raises(ConfigError, match=text) as info:
        parse_forward(raw, "cfg.yaml", "forward")
    assert info.value.field == field


def test_lookahead_takes_the_longest_horizon():
    horizons = parse_forward([5, "30min", "eod"], "f", "forward")
    # a 30min horizon ends 30 bars later and is known complete at the 31st
    assert lookahead(None, horizons, MINUTE) == (31, True)
    assert lookahead(TradeSpec(max_bars=60), horizons[:2], MINUTE) == (61, False)
    assert lookahead(None, (), MINUTE) == (0, False)
    assert lookahead_ns(horizons) == 30 * MINUTE and lookahead_ns(horizons[:1]) == 0


# ---- the halo in a real run: clusters ending mid-session, irregular bars ---------------------

def session_frame(stamps, seed=1):
    """Bars of one symbol at the given exchange-local times, a random walk."""
    rng = np.random.default_rng(seed)
    close = 100 + np.cumsum(rng.normal(0, 0.1, len(stamps)))
    open_ = np.r_[close[0], close[:-1]]
    return pd.DataFrame({
        "timestamp": pd.DatetimeIndex(stamps).tz_convert("UTC"), "symbol": "AAA",
        "open": open_, "high": np.maximum(open_, close) + 0.05,
        "low": np.minimum(open_, close) - 0.05, "close": close, "volume": 1000.0})


def run_forward(bars, horizons, layout):
    config = {"name": "fwd", "data": {"path": "<frame>"},
              "alerts": [{"name": "a", "when": "close > 0", "forward": horizons}],
              "schedule": {"cluster_by": layout}, "execution": {"backend": "sequential"}}
    return backtester.run(config, bars=bars, write=False).forward


@pytest.mark.parametrize("horizons", [["30min"], ["5min", 3], ["1min"], ["90s", "eod"]])
def test_duration_horizons_in_clusters_ending_mid_session_match_one_cluster(horizons):
    open_ = pd.Timestamp("2024-07-08 09:30", tz="America/New_York")
    stamps = [open_ + pd.Timedelta(minutes=i) for i in range(390)]
    bars = from_frame(session_frame(stamps), timezone="America/New_York")
    whole = run_forward(bars, horizons, {"count": 1})
    for layout in ({"bars": 50}, {"bars": 7}, "auto"):
        pd.testing.assert_frame_equal(run_forward(bars, horizons, layout), whole)


def test_duration_halo_is_exact_when_bars_are_closer_than_the_bar_interval():
    # One-minute bars (the bar interval), with extra bars at half minutes from 10:00 to 10:20:
    # 30 minutes there span ~50 bars, more than 30min // 1min + 1.
    open_ = pd.Timestamp("2024-07-08 09:30", tz="America/New_York")
    stamps = [open_ + pd.Timedelta(minutes=i) for i in range(390)]
    stamps += [open_ + pd.Timedelta(minutes=30 + i, seconds=30) for i in range(20)]
    bars = from_frame(session_frame(sorted(stamps)), timezone="America/New_York")
    assert bars.bar_ns == MINUTE
    whole = run_forward(bars, ["30min"], {"count": 1})
    assert whole["complete_30min"].sum() > 300
    for size in (5, 13, 40):
        pd.testing.assert_frame_equal(run_forward(bars, ["30min"], {"bars": size}), whole)
