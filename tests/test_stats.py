"""Alert and trade statistics on small hand-made inputs, and their Markdown rendering."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import backtester
from backtester.bars import from_frame
from backtester.stats import OVERALL, compute_stats, data_period, render_markdown, stats_frame
from backtester.trades import Horizon

TZ = "America/New_York"
HORIZONS = (Horizon("5", bars=5), Horizon("eod", eod=True))
NO_PERIOD = {"start": None, "end": None, "trading_days": None}


def alerts_frame():
    times = pd.to_datetime(["2024-01-02 09:31", "2024-01-02 10:15", "2024-01-03 09:45",
                            "2024-01-05 15:10"]).tz_localize(TZ)
    return pd.DataFrame({"timestamp": times, "symbol": ["A", "A", "B", "A"],
                         "alert": ["dip", "dip", "dip", "pop"], "close": [100.0] * 4})


def trades_frame(returns=(0.02, -0.01, 0.03), alert="dip"):
    n = len(returns)
    exits = pd.to_datetime(["2024-01-02 10:00", "2024-01-02 11:00", "2024-01-04 10:00",
                            "2024-01-05 10:00"][:n]).tz_localize(TZ)
    return pd.DataFrame({
        "alert": [alert] * n, "symbol": ["A"] * n, "signal_time": exits, "entry_time": exits,
        "entry_price": 100.0, "exit_time": exits, "exit_price": 100.0,
        "reason": ["tp", "sl", "time", "sl"][:n], "bars_held": [10, 5, 20, 3][:n],
        "return": list(returns), "gross_return": list(returns), "mfe": 0.0, "mae": 0.0,
        "both_touched": [False, True, False, False][:n],
    })


def forward_frame():
    return pd.DataFrame({
        "timestamp": alerts_frame()["timestamp"], "symbol": ["A", "A", "B", "A"],
        "alert": ["dip", "dip", "dip", "pop"],
        "ret_5": [0.01, -0.02, 0.03, np.nan], "mfe_5": [0.02, 0.0, 0.04, np.nan],
        "mae_5": [-0.01, -0.03, 0.0, np.nan], "complete_5": [True, True, True, False],
        "ret_eod": [0.0, 0.01, 0.02, 0.05], "mfe_eod": 0.0, "mae_eod": 0.0,
        "complete_eod": True,
    })


def stats(**kwargs):
    args = {"alerts": alerts_frame(), "trades": trades_frame(), "forward": forward_frame(),
            "horizons": HORIZONS, "timezone": TZ, "n_bars": 1000,
            "start": pd.Timestamp("2024-01-02 09:30", tz=TZ),
            "end": pd.Timestamp("2024-01-05 15:59", tz=TZ), "trading_days": 4,
            "n_resamples": 2000}
    args.update(kwargs)
    return compute_stats(**args)


def test_fires_are_counted_by_exchange_hour_and_weekday():
    s = stats()
    assert s["overall"]["fires"] == 4 and s["alerts"]["dip"]["fires"] == 3
    assert s["alerts"]["dip"]["fires_by_hour"] == {"09": 2, "10": 1}
    assert s["alerts"]["dip"]["fires_by_weekday"] == {"Mon": 0, "Tue": 2, "Wed": 1, "Thu": 0,
                                                     "Fri": 0}


def test_fires_by_hour_converts_utc_times_to_the_exchange_zone():
    alerts = alerts_frame()
    alerts["timestamp"] = alerts["timestamp"].dt.tz_convert("UTC")
    assert stats(alerts=alerts)["alerts"]["dip"]["fires_by_hour"] == {"09": 2, "10": 1}


def test_forward_stats_use_complete_rows_only_and_count_the_rest():
    f = stats()["overall"]["forward"]["5"]
    assert f["n"] == 3 and f["incomplete"] == 1
    assert f["hit_rate"] == pytest.approx(2 / 3)
    assert f["mean"] == pytest.approx(0.02 / 3)
    assert f["median"] == pytest.approx(0.01)
    assert f["mean_mfe"] == pytest.approx(0.02)
    low, high = f["mean_ci95"]
    assert -0.02 <= low <= f["mean"] <= high <= 0.03


def test_bootstrap_intervals_are_deterministic_per_seed():
    forward = pd.DataFrame({"alert": "x", "ret_5": np.random.default_rng(0).normal(0, 1, 50),
                            "complete_5": True})

    def interval(seed):
        return compute_stats(pd.DataFrame(), pd.DataFrame(), forward, HORIZONS[:1], timezone=TZ,
                             seed=seed, n_resamples=2000,
                             **NO_PERIOD)["alerts"]["x"]["forward"]["5"]["mean_ci95"]

    assert interval(0) == interval(0)
    assert interval(1) != interval(0)


def test_bootstrap_interval_covers_a_known_mean():
    rng = np.random.default_rng(3)
    values = rng.normal(0.001, 0.01, 4000)
    forward = pd.DataFrame({"alert": "x", "ret_5": values, "mfe_5": 0.0, "mae_5": 0.0,
                            "complete_5": True})
    f = compute_stats(pd.DataFrame(), pd.DataFrame(), forward, HORIZONS[:1],
                      timezone=TZ, n_resamples=2000, **NO_PERIOD)["overall"]["forward"]["5"]
    half_width = 1.96 * values.std() / math.sqrt(len(values))
    assert f["mean_ci95"][0] == pytest.approx(values.mean() - half_width, abs=2e-4)
    assert f["mean_ci95"][1] == pytest.approx(values.mean() + half_width, abs=2e-4)
    median_half_width = 1.2533 * half_width  # asymptotic s.e. of the median of a normal sample
    assert f["median_ci95"][0] == pytest.approx(np.median(values) - median_half_width, abs=4e-4)
    assert f["median_ci95"][1] == pytest.approx(np.median(values) + median_half_width, abs=4e-4)
    assert f["resamples"] == 1000  # 4,000 values: the draw budget (4M) allows 1,000 resamples


def test_trade_statistics_on_known_returns():
    t = stats()["alerts"]["dip"]["trades"]
    assert (t["count"], t["wins"], t["losses"]) == (3, 2, 1)
    assert t["win_rate"] == pytest.approx(2 / 3)
    assert t["avg_win"] == pytest.approx(0.025) and t["avg_loss"] == pytest.approx(-0.01)
    assert t["profit_factor"] == pytest.approx(5.0)
    assert t["expectancy"] == pytest.approx(0.04 / 3)
    assert t["total_return"] == pytest.approx(1.02 * 0.99 * 1.03 - 1)
    assert t["max_drawdown"] == pytest.approx(-0.01)
    assert t["exposure"] is None   # no bars to weigh time by (see tests/test_account.py)
    assert t["longest_losing_streak"] == 1
    assert t["both_touched"] == 1
    assert t["reasons"] == {"tp": 1, "sl": 1, "time": 1}


def test_drawdown_and_losing_streak_follow_exit_order():
    trades = trades_frame((0.1, -0.05, -0.05, 0.02))
    trades = trades.iloc[::-1]  # input order must not matter
    t = stats(trades=trades)["alerts"]["dip"]["trades"]
    assert t["max_drawdown"] == pytest.approx(0.95 * 0.95 - 1)
    assert t["longest_losing_streak"] == 2


def test_sharpe_and_sortino_use_daily_returns_padded_with_flat_days():
    t = stats(trading_days=4)["alerts"]["dip"]["trades"]
    daily = np.array([1.02 * 0.99 - 1, 0.03, 0.0, 0.0])  # Jan 2, Jan 4, two flat days
    expected_sharpe = daily.mean() / daily.std(ddof=1) * math.sqrt(252)
    expected_sortino = daily.mean() / math.sqrt(np.mean(np.minimum(daily, 0) ** 2)) \
        * math.sqrt(252) if (daily < 0).any() else None
    assert t["sharpe"] == pytest.approx(expected_sharpe)
    assert t["sortino"] == expected_sortino  # no losing day: undefined, None


def test_annualised_return_runs_on_the_trading_day_clock():
    # A year of 252 sessions on an exchange calendar is one year: annualised = total.
    t = stats(start=pd.Timestamp("2024-01-01"), end=pd.Timestamp("2025-01-01"),
              trading_days=252)["alerts"]["dip"]["trades"]
    assert t["annualized_return"] == pytest.approx(t["total_return"])
    half = stats(trading_days=126)["alerts"]["dip"]["trades"]
    assert half["annualized_return"] == pytest.approx((1 + half["total_return"]) ** 2 - 1)


def test_annualised_return_is_none_for_a_short_span():
    assert stats()["alerts"]["dip"]["trades"]["annualized_return"] is None


def test_profit_factor_without_losses_is_none_not_inf():
    t = stats(trades=trades_frame((0.01, 0.02)))["overall"]["trades"]
    assert t["profit_factor"] is None and t["avg_loss"] is None


def test_empty_inputs_give_zeros_and_nones_never_a_crash():
    empty = compute_stats(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), HORIZONS, timezone=TZ,
                          **NO_PERIOD)
    assert empty["overall"]["fires"] == 0 and empty["alerts"] == {}
    t = empty["overall"]["trades"]
    assert t["count"] == 0 and t["total_return"] == 0.0 and t["sharpe"] is None
    assert empty["overall"]["forward"]["5"]["mean"] is None
    json.dumps(empty, allow_nan=False)
    render_markdown(empty, title="empty")
    assert stats_frame(empty).index.tolist() == [OVERALL]


def test_alert_without_trades_still_has_a_block():
    s = stats()
    assert s["alerts"]["pop"]["trades"]["count"] == 0
    assert s["alerts"]["pop"]["forward"]["5"]["n"] == 0


def test_stats_are_plain_json_without_nan():
    s = stats()
    text = json.dumps(s, allow_nan=False)
    assert json.loads(text) == s


def test_markdown_summary_is_readable():
    text = render_markdown(stats(), title="rsi-oversold")
    assert text.startswith("# rsi-oversold")
    assert "| dip | 3 | 3 |" in text
    assert "## dip" in text and "### Forward returns" in text and "### Trades" in text
    assert "profit factor | 5.00" in text
    assert "both stop and target touched (stop taken) | 1" in text
    assert "No trades." in text  # pop


# ---- the period is the data's, not the alerts' ------------------------------------------------

def year_of_bars(calendar="XNYS"):
    """XNYS 1-minute bars, 2024-01-02 to 2024-12-31, one bar an hour (7 a session)."""
    from backtester.sessions import from_calendar

    sessions = from_calendar("XNYS", pd.Timestamp("2024-01-02").date(),
                             pd.Timestamp("2024-12-31").date(), TZ)
    stamps = np.concatenate([np.arange(o, c, 3600 * 10**9)
                             for o, c in zip(sessions.open_ns, sessions.close_ns)])
    close = 100 + np.sin(np.arange(len(stamps)) / 7.0)
    frame = pd.DataFrame({"timestamp": pd.DatetimeIndex(stamps.astype("datetime64[ns]"),
                                                        tz="UTC"),
                          "symbol": "AAA", "open": close, "high": close + 0.5,
                          "low": close - 0.5, "close": close, "volume": 1000.0})
    return from_frame(frame, timezone=TZ, calendar=calendar)


def test_data_period_counts_sessions_not_weekdays():
    period = data_period(year_of_bars())
    assert period["start"] == pd.Timestamp("2024-01-02 09:30", tz=TZ)
    assert period["end"].date() == pd.Timestamp("2024-12-31").date()
    assert period["trading_days"] == 252   # 262 weekdays, 10 of them NYSE holidays
    assert data_period(year_of_bars(calendar="none"))["trading_days"] == 252


def test_statistics_span_the_data_even_when_alerts_fire_only_in_two_months():
    bars = year_of_bars()
    config = {"name": "span", "data": {"path": "<frame>"},
              "alerts": [{"name": "a", "when": "close > 100.9", "between": ["10:00", "11:00"],
                          "trade": {"max_bars": 2}}],
              "schedule": {"cluster_by": "month"}, "execution": {"backend": "sequential"}}
    result = backtester.run(config, bars=bars, write=False)
    trades = result.trades
    inside = trades[(trades["signal_time"].dt.month >= 2) & (trades["signal_time"].dt.month <= 3)]
    assert len(inside) >= 5
    definitions = result.summary["stats"]["definitions"]
    assert definitions["trading_days"] == 252
    assert definitions["period_start"].startswith("2024-01-02T09:30")
    assert definitions["period_end"].startswith("2024-12-31")
    # the same trades alone, over Feb-Mar only: the statistics still span the year
    only = compute_stats(result.alerts.iloc[:0], inside, result.forward.iloc[:0], (),
                         timezone=TZ, **data_period(bars), n_bars=bars.n_bars)
    total = only["overall"]["trades"]["total_return"]
    years = definitions["trading_days"] / definitions["periods_per_year"]   # 252 / 252
    assert only["overall"]["trades"]["annualized_return"] == pytest.approx(
        (1 + total) ** (1 / years) - 1)
    assert only["definitions"]["trading_days"] == 252


def test_stats_frame_has_one_row_per_alert_and_an_overall_row():
    s = stats()
    frame = stats_frame(s)
    assert frame.index.tolist() == [OVERALL, "dip", "pop"] and frame.index.name == "alert"
    assert frame.loc["dip", "fires"] == 3 and frame.loc["dip", "trades"] == 3
    assert frame.loc["dip", "win_rate"] == pytest.approx(2 / 3)
    assert frame.loc[OVERALL, "exits_sl"] == 1 and frame.loc["pop", "exits_sl"] == 0
    assert frame.loc["dip", "fwd_5_mean"] == pytest.approx(0.02 / 3)
    low, high = s["alerts"]["dip"]["forward"]["5"]["mean_ci95"]
    assert (frame.loc["dip", "fwd_5_mean_ci_low"], frame.loc["dip", "fwd_5_mean_ci_high"]) == (
        low, high)
    assert np.isnan(frame.loc["pop", "profit_factor"])   # None in the dict
    assert all(dtype.kind in "fi" for dtype in frame.dtypes)


def test_run_result_stats_is_a_frame_and_the_dict_stays_in_the_summary():
    bars = year_of_bars()
    config = {"name": "frame", "data": {"path": "<frame>"},
              "alerts": [{"name": "a", "when": "close > 100.9", "forward": [3],
                          "trade": {"max_bars": 2}}],
              "schedule": {"cluster_by": "month"}, "execution": {"backend": "sequential"}}
    result = backtester.run(config, bars=bars, write=False)
    assert isinstance(result.stats, pd.DataFrame)
    assert result.stats.index.tolist() == [OVERALL, "a"]
    assert result.stats.loc["a", "trades"] == len(result.trades)
    assert result.summary["stats"]["alerts"]["a"]["trades"]["count"] == len(result.trades)


def test_intervals_do_not_depend_on_the_other_alerts_or_the_thread_that_drew_them():
    # Blocks are computed on a thread pool; each interval must come from its own seeded stream.
    rng = np.random.default_rng(11)
    frames = [pd.DataFrame({"alert": f"a{i}", "ret_5": rng.normal(0, 0.01, 3000),
                            "mfe_5": 0.0, "mae_5": 0.0, "complete_5": True}) for i in range(6)]
    together = compute_stats(pd.DataFrame(), pd.DataFrame(), pd.concat(frames, ignore_index=True),
                             HORIZONS[:1], timezone=TZ, n_resamples=2000, **NO_PERIOD)
    for frame in frames:
        name = frame["alert"].iloc[0]
        alone = compute_stats(pd.DataFrame(), pd.DataFrame(), frame, HORIZONS[:1], timezone=TZ,
                              n_resamples=2000, **NO_PERIOD)
        assert together["alerts"][name] == alone["alerts"][name]
    again = compute_stats(pd.DataFrame(), pd.DataFrame(), pd.concat(frames, ignore_index=True),
                          HORIZONS[:1], timezone=TZ, n_resamples=2000, **NO_PERIOD)
    assert again == together


def test_bootstrap_intervals_are_off_unless_the_config_asks_for_them():
    bars = year_of_bars()
    config = {"name": "ci", "data": {"path": "<frame>"},
              "alerts": [{"name": "a", "when": "close > 100.9", "forward": [3]}],
              "schedule": {"cluster_by": "month"}, "execution": {"backend": "sequential"}}
    plain = backtester.run(config, bars=bars, write=False).summary["stats"]
    assert plain["overall"]["forward"]["3"]["mean"] is not None
    assert plain["overall"]["forward"]["3"]["mean_ci95"] is None
    assert plain["definitions"]["bootstrap_resamples"] == 0
    config["stats"] = {"bootstrap": 500}
    asked = backtester.run(config, bars=bars, write=False).summary["stats"]
    low, high = asked["overall"]["forward"]["3"]["mean_ci95"]
    assert low <= asked["overall"]["forward"]["3"]["mean"] <= high
    assert asked["definitions"]["bootstrap_resamples"] == 500


@pytest.mark.parametrize("stats_section, field", [
    ({"bootstrap": -1}, "stats.bootstrap"), ({"bootstrap": "lots"}, "stats.bootstrap"),
    ({"periods_per_year": 0}, "stats.periods_per_year"), ({"resample": 10}, "stats.resample"),
])
def test_a_bad_stats_section_is_one_line_naming_the_field(stats_section, field):
    config = {"name": "x", "data": {"path": "x.parquet"}, "alerts": [{"name": "a", "when": "close > 1"}],
              "stats": stats_section}
    with pytest.raises(backtester.errors.ConfigError) as caught:
        backtester.config.load_config(config)
    assert f": {field}: " in str(caught.value) and "\n" not in str(caught.value)


def test_longest_losing_streak_counts_consecutive_losses():
    from backtester.stats import _longest_run

    assert _longest_run(np.array([], bool)) == 0
    assert _longest_run(np.array([False, False])) == 0
    assert _longest_run(np.array([True, False, True, True, True, False, True, True])) == 3


# ---- by symbol and the benchmark, by hand -----------------------------------------------------

def two_symbol_day():
    """XNYS 30-minute bars of one session (09:30 to 15:30, 13 bars) for AAA and BBB."""
    stamps = pd.date_range("2024-01-02 09:30", "2024-01-02 15:30", freq="30min", tz=TZ)
    aaa = np.array([100, 96, 90, 99, 110, 110, 105, 110, 110, 110, 110, 110, 120.0])
    bbb = np.array([50, 50, 51, 52, 50, 45, 50, 55, 55, 55, 55, 55, 55.0])
    frames = []
    for symbol, close in (("AAA", aaa), ("BBB", bbb)):
        opens = np.r_[close[0], close[:-1]]
        frames.append(pd.DataFrame({"timestamp": stamps, "symbol": symbol, "open": opens,
                                    "high": np.maximum(opens, close) + 1,
                                    "low": np.minimum(opens, close) - 1, "close": close,
                                    "volume": 10.0}))
    return stamps, aaa, bbb, from_frame(pd.concat(frames, ignore_index=True), timezone=TZ)


def test_benchmark_and_by_symbol_blocks_match_a_hand_computed_account():
    stamps, aaa, bbb, bars = two_symbol_day()
    # One long trade in AAA: filled at 99 (bar 3's close), out at 110 (bar 4's close).
    trades = pd.DataFrame({
        "alert": "x", "symbol": "AAA", "signal_time": stamps[[2]], "entry_time": stamps[[3]],
        "entry_price": 99.0, "exit_time": stamps[[4]], "exit_price": 110.0, "reason": "time",
        "bars_held": 2, "return": 110 / 99 - 1, "gross_return": 110 / 99 - 1, "mfe": 0.0,
        "mae": 0.0, "both_touched": False})
    s = compute_stats(pd.DataFrame(), trades, pd.DataFrame(), (), timezone=TZ,
                      **data_period(bars), bars=bars, n_bars=bars.n_bars, sides={"x": 1})
    # The AAA sleeve gains 110/99 - 1 = 11.1%; the account, half in the idle BBB sleeve, half
    # of that. The AAA sleeve alone holds 2 of the 13 bars (entry and exit bar).
    assert s["by_symbol"]["AAA"]["total_return"] == pytest.approx(110 / 99 - 1, rel=1e-12)
    assert s["by_symbol"]["AAA"]["exposure"] == pytest.approx(2 / 13)
    assert s["by_symbol"]["AAA"]["max_drawdown"] == 0.0
    assert s["overall"]["trades"]["total_return"] == pytest.approx((110 / 99 - 1) / 2)
    # Buy and hold, equal capital, each bought at its first open (100 and 50), marked at closes.
    hold = (aaa / 100 + bbb / 50) / 2
    b = s["benchmark"]
    assert b["total_return"] == pytest.approx(hold[-1] - 1, rel=1e-12)   # (1.2 + 1.1) / 2 - 1
    worst = min(0.0, (hold / np.maximum.accumulate(np.maximum(hold, 1.0)) - 1).min())
    assert b["max_drawdown"] == pytest.approx(worst, rel=1e-12)
    # Bar 2 falls to (0.90 + 1.02) / 2 = 0.96, but the worst is bar 4's peak (1.10 + 1.00) / 2
    # = 1.05 to bar 5's (1.10 + 0.90) / 2 = 1.00: -4.76%.
    assert b["max_drawdown"] == pytest.approx(1.00 / 1.05 - 1)
    assert b["sharpe"] is None   # one trading day: no daily dispersion
