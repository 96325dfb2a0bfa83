"""Daily statistics on the trading day and the calendar's clock: FX bars around the 17:00 roll,
24/5 and exchange-calendar annualisation, each figure computed by hand in the test from
wall-clock arithmetic (never from the session table under test)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtester.bars import from_frame
from backtester.stats import build_account, compute_stats, data_period, periods_per_year

sys.path.insert(0, str(Path(__file__).parent))
from test_calendar import fx_stamps  # noqa: E402  (FX-week stamps, weekend left out)

NEW_YORK = "America/New_York"


def fx_trading_day(stamps: pd.DatetimeIndex) -> np.ndarray:
    """The FX value date by wall-clock arithmetic: from 17:00 New York on, the next date."""
    return (stamps.tz_convert(NEW_YORK).tz_localize(None) + pd.Timedelta(hours=7)
            ).normalize().to_numpy()


def bars_of(stamps, closes, calendar, timezone=NEW_YORK, symbol="EURUSD"):
    closes = np.asarray(closes, dtype=float)
    frame = pd.DataFrame({"timestamp": stamps, "symbol": symbol, "open": closes,
                          "high": closes + 0.001, "low": closes - 0.001, "close": closes,
                          "volume": 100.0})
    return from_frame(frame, timezone=timezone, calendar=calendar)


def trades_at(stamps, entry_rows, exit_rows, closes, alert="fx"):
    """Long trades filled at the entry bar's close and exited at the exit bar's close."""
    entry_rows, exit_rows = np.asarray(entry_rows), np.asarray(exit_rows)
    entry_price, exit_price = closes[entry_rows], closes[exit_rows]
    returns = exit_price / entry_price - 1
    return pd.DataFrame({
        "alert": alert, "symbol": "EURUSD", "signal_time": stamps[entry_rows],
        "entry_time": stamps[entry_rows], "entry_price": entry_price,
        "exit_time": stamps[exit_rows], "exit_price": exit_price, "reason": "time",
        "bars_held": exit_rows - entry_rows + 1, "return": returns, "gross_return": returns,
        "mfe": 0.0, "mae": 0.0, "both_touched": False})


def run_stats(trades, bars, alerts=None, **kwargs):
    return compute_stats(pd.DataFrame() if alerts is None else alerts, trades, pd.DataFrame(),
                         (), timezone=bars.timezone, **data_period(bars), bars=bars,
                         n_bars=bars.n_bars, sides={"fx": 1}, **kwargs)


def sharpe_sortino(daily, periods):
    daily = np.asarray(daily, dtype=float)
    downside = math.sqrt(np.mean(np.minimum(daily, 0) ** 2))
    return (daily.mean() / daily.std(ddof=1) * math.sqrt(periods),
            daily.mean() / downside * math.sqrt(periods) if downside else None)


# --------------------------------------------------------------------------------------------
# The FX day rolls at 17:00 New York

def roll_case():
    """Hourly FX bars Sunday 2024-03-03 17:00 to Wednesday 16:00: three trading days (Mon, Tue,
    Wed). Two long trades on Monday's calendar date: 10:00 -> 15:00 (+2%) in Monday's trading
    day, 18:00 -> 20:00 (-1%) in Tuesday's, the day having rolled at 17:00."""
    stamps = fx_stamps("2024-03-03 17:00", "2024-03-06 16:00", "h")
    closes = np.ones(len(stamps))
    row = {text: stamps.get_loc(pd.Timestamp(f"2024-03-04 {text}", tz=NEW_YORK))
           for text in ("10:00", "15:00", "18:00", "20:00")}
    closes[row["15:00"]:row["18:00"]] = 1.02       # 15:00 and 16:00 closes, 17:00 too
    closes[row["20:00"]] = 0.99
    bars = bars_of(stamps, closes, "24/5")
    trades = trades_at(stamps, [row["10:00"], row["18:00"]], [row["15:00"], row["20:00"]],
                       closes)
    return stamps, bars, trades


def test_fx_daily_returns_roll_at_17_00_not_at_midnight():
    stamps, bars, trades = roll_case()
    assert trades["return"].tolist() == pytest.approx([0.02, -0.01])
    s = run_stats(trades, bars)
    t = s["overall"]["trades"]
    assert s["definitions"]["trading_days"] == 3 and s["definitions"]["periods_per_year"] == 260
    # By hand: equity at each trading day's last bar (16:00): Monday 1.02 (first trade closed),
    # Tuesday 1.02 x 0.99 (second closed Monday 20:00, inside Tuesday's day), Wednesday flat.
    daily = [0.02, -0.01, 0.0]
    sharpe, sortino = sharpe_sortino(daily, 260)
    assert t["total_return"] == pytest.approx(1.02 * 0.99 - 1, rel=1e-12)
    assert t["sharpe"] == pytest.approx(sharpe, rel=1e-9)
    assert t["sortino"] == pytest.approx(sortino, rel=1e-9)
    # Calendar days would have been Sunday 0, Monday 1.02 x 0.99 - 1, Tuesday 0, Wednesday 0:
    # another set of returns, another Sharpe.
    midnight = [0.0, 1.02 * 0.99 - 1, 0.0, 0.0]
    assert t["sharpe"] != pytest.approx(sharpe_sortino(midnight, 260)[0], rel=1e-3)
    # The account's days are the bars' sessions: the oracle's FX value dates, one per bar.
    account = build_account(trades, bars, {"fx": 1})
    session_dates = bars.sessions.dates[account.day].astype("datetime64[ns]")
    assert (session_dates == fx_trading_day(stamps)).all()


def test_without_bars_the_session_table_names_the_trading_day():
    # Valued at entries and exits only, the trades still fall into Monday's and Tuesday's days
    # when the session table is given; without one the local date (both Monday) is all there is.
    _, bars, trades = roll_case()
    period = data_period(bars)
    by_session = compute_stats(pd.DataFrame(), trades, pd.DataFrame(), (), timezone=NEW_YORK,
                               **period, sessions=bars.sessions, sides={"fx": 1})
    t = by_session["overall"]["trades"]
    sharpe, sortino = sharpe_sortino([0.02, -0.01, 0.0], 260)
    assert t["exposure"] is None and by_session["definitions"]["periods_per_year"] == 260
    assert t["sharpe"] == pytest.approx(sharpe, rel=1e-9)
    assert t["sortino"] == pytest.approx(sortino, rel=1e-9)
    by_date = compute_stats(pd.DataFrame(), trades, pd.DataFrame(), (), timezone=NEW_YORK,
                            **period, periods=(260.0, "test"), sides={"fx": 1})
    one_day = [1.02 * 0.99 - 1, 0.0, 0.0]
    assert by_date["overall"]["trades"]["sharpe"] == pytest.approx(
        sharpe_sortino(one_day, 260)[0], rel=1e-9)


def test_fires_by_weekday_count_the_trading_day():
    # Sunday 18:00 and Monday 18:00 New York are Monday's and Tuesday's FX days.
    _, bars, trades = roll_case()
    times = pd.DatetimeIndex(["2024-03-03 18:00", "2024-03-04 18:00", "2024-03-05 09:00"]
                             ).tz_localize(NEW_YORK)
    alerts = pd.DataFrame({"timestamp": times, "symbol": "EURUSD", "alert": "fx"})
    block = run_stats(trades, bars, alerts=alerts)["alerts"]["fx"]
    assert block["fires_by_weekday"] == {"Mon": 1, "Tue": 2, "Wed": 0, "Thu": 0, "Fri": 0}
    assert block["fires_by_hour"] == {"09": 1, "18": 2}   # hours stay wall-clock


# --------------------------------------------------------------------------------------------
# Annualisation on the calendar's clock

def equity_one_trade_at_a_time(closes, entry_rows, exit_rows):
    """The account by hand: one symbol, each trade takes the whole equity, marked at closes."""
    equity = np.ones(len(closes))
    level = 1.0
    for entry, exit_ in zip(entry_rows, exit_rows):
        equity[entry:exit_ + 1] = level * closes[entry:exit_ + 1] / closes[entry]
        level = equity[exit_]
        equity[exit_ + 1:] = level
    return equity


def daily_from(equity, day):
    """Each day's last equity over the previous day's (the first over 1.0)."""
    last = np.flatnonzero(np.r_[day[1:] != day[:-1], True])
    closes = equity[last]
    return closes / np.r_[1.0, closes[:-1]] - 1


def test_24_5_bars_annualise_with_260_days_and_one_clock():
    # Six FX weeks of hourly bars, trades of 12 hours that straddle the 17:00 roll.
    stamps = fx_stamps("2024-03-03 17:00", "2024-04-12 16:00", "h")
    rng = np.random.default_rng(11)
    closes = 1.1 * np.exp(np.cumsum(rng.normal(0, 0.002, len(stamps))))
    bars = bars_of(stamps, closes, "24/5")
    assert periods_per_year(bars.sessions) == (260.0, "calendar 24/5")
    entry_rows = np.arange(3, len(stamps) - 12, 30)
    exit_rows = entry_rows + 11
    s = run_stats(trades_at(stamps, entry_rows, exit_rows, closes), bars)
    t = s["overall"]["trades"]
    equity = equity_one_trade_at_a_time(closes, entry_rows, exit_rows)
    day = fx_trading_day(stamps)
    daily = daily_from(equity, day)
    days = len(np.unique(day))
    assert days == 30 == s["definitions"]["trading_days"]   # six weeks of five FX days
    sharpe, sortino = sharpe_sortino(daily, 260)
    assert t["total_return"] == pytest.approx(equity[-1] - 1, rel=1e-12)
    assert t["sharpe"] == pytest.approx(sharpe, rel=1e-9)
    assert t["sortino"] == pytest.approx(sortino, rel=1e-9)
    # Same clock: 30 trading days are 30/260 of a year.
    assert t["annualized_return"] == pytest.approx(equity[-1] ** (260 / 30) - 1, rel=1e-9)
    assert s["definitions"]["periods_per_year"] == 260
    assert s["definitions"]["periods_per_year_source"] == "calendar 24/5"


def test_exchange_calendar_bars_annualise_with_252_sessions_and_count_empty_ones_flat():
    # XNYS 30-minute bars, January and February 2024: 22 + 21 weekdays less MLK day and
    # Presidents' Day are 41 sessions; no bars at all on 2024-01-10: that one counts as flat.
    holidays = pd.to_datetime(["2024-01-15", "2024-02-19"])
    dates = pd.bdate_range("2024-01-02", "2024-02-29").difference(holidays)
    with_bars = dates.difference(pd.to_datetime(["2024-01-10"]))
    stamps = pd.DatetimeIndex(np.concatenate([
        pd.date_range(f"{d.date()} 09:30", f"{d.date()} 15:30", freq="30min", tz=NEW_YORK)
        .as_unit("ns").asi8 for d in with_bars]).view("datetime64[ns]"),
        tz="UTC").tz_convert(NEW_YORK)
    rng = np.random.default_rng(5)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, len(stamps))))
    bars = bars_of(stamps, closes, "XNYS", symbol="EURUSD")
    assert periods_per_year(bars.sessions) == (252.0, "calendar XNYS: exchange trading days")
    entry_rows = np.arange(2, len(stamps) - 20, 17)
    exit_rows = entry_rows + 15                       # held over the night
    s = run_stats(trades_at(stamps, entry_rows, exit_rows, closes), bars)
    t = s["overall"]["trades"]
    equity = equity_one_trade_at_a_time(closes, entry_rows, exit_rows)
    daily = np.r_[daily_from(equity, stamps.tz_localize(None).normalize().to_numpy()), 0.0]
    assert len(dates) == len(daily) == s["definitions"]["trading_days"] == 41
    sharpe, sortino = sharpe_sortino(daily, 252)
    assert t["sharpe"] == pytest.approx(sharpe, rel=1e-9)
    assert t["sortino"] == pytest.approx(sortino, rel=1e-9)
    assert t["annualized_return"] == pytest.approx(equity[-1] ** (252 / 41) - 1, rel=1e-9)
