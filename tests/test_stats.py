"""Alert and trade statistics on small hand-made inputs, and their Markdown rendering."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from backtester.stats import compute_stats, render_markdown
from backtester.trades import Horizon

TZ = "America/New_York"
HORIZONS = (Horizon("5", bars=5), Horizon("eod", eod=True))


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
            "horizons": HORIZONS, "timezone": TZ, "n_bars": 1000}
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
                             seed=seed)["alerts"]["x"]["forward"]["5"]["mean_ci95"]

    assert interval(0) == interval(0)
    assert interval(1) != interval(0)


def test_bootstrap_interval_covers_a_known_mean():
    rng = np.random.default_rng(3)
    values = rng.normal(0.001, 0.01, 4000)
    forward = pd.DataFrame({"alert": "x", "ret_5": values, "mfe_5": 0.0, "mae_5": 0.0,
                            "complete_5": True})
    f = compute_stats(pd.DataFrame(), pd.DataFrame(), forward, HORIZONS[:1],
                      timezone=TZ)["overall"]["forward"]["5"]
    half_width = 1.96 * values.std() / math.sqrt(len(values))
    assert f["mean_ci95"][0] == pytest.approx(values.mean() - half_width, abs=2e-4)
    assert f["mean_ci95"][1] == pytest.approx(values.mean() + half_width, abs=2e-4)
    median_half_width = 1.2533 * half_width  # asymptotic s.e. of the median of a normal sample
    assert f["median_ci95"][0] == pytest.approx(np.median(values) - median_half_width, abs=4e-4)
    assert f["median_ci95"][1] == pytest.approx(np.median(values) + median_half_width, abs=4e-4)
    assert f["resamples"] == 2000


def test_trade_statistics_on_known_returns():
    t = stats()["alerts"]["dip"]["trades"]
    assert (t["count"], t["wins"], t["losses"]) == (3, 2, 1)
    assert t["win_rate"] == pytest.approx(2 / 3)
    assert t["avg_win"] == pytest.approx(0.025) and t["avg_loss"] == pytest.approx(-0.01)
    assert t["profit_factor"] == pytest.approx(5.0)
    assert t["expectancy"] == pytest.approx(0.04 / 3)
    assert t["total_return"] == pytest.approx(1.02 * 0.99 * 1.03 - 1)
    assert t["max_drawdown"] == pytest.approx(-0.01)
    assert t["exposure"] == pytest.approx(35 / 1000)
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


def test_annualised_return_over_the_run_span():
    t = stats(start=pd.Timestamp("2024-01-01"), end=pd.Timestamp("2025-01-01"))
    total = t["alerts"]["dip"]["trades"]["total_return"]
    years = 366 / 365.25
    assert t["alerts"]["dip"]["trades"]["annualized_return"] == pytest.approx(
        (1 + total) ** (1 / years) - 1)


def test_annualised_return_is_none_for_a_short_span():
    assert stats()["alerts"]["dip"]["trades"]["annualized_return"] is None


def test_profit_factor_without_losses_is_none_not_inf():
    t = stats(trades=trades_frame((0.01, 0.02)))["overall"]["trades"]
    assert t["profit_factor"] is None and t["avg_loss"] is None


def test_empty_inputs_give_zeros_and_nones_never_a_crash():
    empty = compute_stats(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), HORIZONS, timezone=TZ)
    assert empty["overall"]["fires"] == 0 and empty["alerts"] == {}
    t = empty["overall"]["trades"]
    assert t["count"] == 0 and t["total_return"] == 0.0 and t["sharpe"] is None
    assert empty["overall"]["forward"]["5"]["mean"] is None
    json.dumps(empty, allow_nan=False)
    render_markdown(empty, title="empty")


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
