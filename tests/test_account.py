"""The account behind the trade statistics, on hand-made bars with figures computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import backtester
from backtester.bars import from_frame
from backtester.stats import OVERALL, build_account, compute_stats, data_period, periods_per_year

TZ = "America/New_York"
MINUTE = pd.Timedelta(minutes=1)


def flat_bars(symbols, sessions=("2024-01-02",), price=100.0, calendar="XNYS", closes=None):
    """1-minute XNYS bars 09:30-15:59 at a flat `price` (or `closes[symbol]`, per bar)."""
    frames = []
    for symbol in symbols:
        stamps = pd.DatetimeIndex(np.concatenate([
            pd.date_range(f"{day} 09:30", f"{day} 15:59", freq="min", tz=TZ).as_unit("ns").asi8
            for day in sessions]).view("datetime64[ns]"), tz="UTC").tz_convert(TZ)
        close = np.full(len(stamps), price) if closes is None else closes[symbol]
        frames.append(pd.DataFrame({"timestamp": stamps, "symbol": symbol, "open": close,
                                    "high": close, "low": close, "close": close,
                                    "volume": 1000}))
    return from_frame(pd.concat(frames, ignore_index=True), timezone=TZ, calendar=calendar)


def trade_rows(alert, symbol, entries, bars_held, returns, entry_price=100.0):
    entries = pd.DatetimeIndex(entries)
    exits = entries + (np.asarray(bars_held) - 1) * MINUTE
    returns = np.asarray(returns, dtype=np.float64)
    return pd.DataFrame({
        "alert": alert, "symbol": symbol, "signal_time": entries - MINUTE,
        "entry_time": entries, "entry_price": entry_price, "exit_time": exits,
        "exit_price": entry_price * (1 + returns), "reason": "time",
        "bars_held": np.asarray(bars_held), "return": returns, "gross_return": returns,
        "mfe": 0.0, "mae": 0.0, "both_touched": False})


def run_stats(trades, bars, **kwargs):
    return compute_stats(pd.DataFrame(), trades, pd.DataFrame(), (), timezone=TZ,
                         **data_period(bars), bars=bars, n_bars=bars.n_bars, **kwargs)


def test_twenty_symbols_of_losing_trades_lose_a_third_not_everything():
    # 20 symbols x 40 trades, each losing exactly 1%, all symbols trading at the same times.
    # Equal capital per symbol, trades compounding in their sleeve: 0.99 ** 40 - 1 = -33.1%
    # (compounding every trade on the whole account in exit order said -99.97%).
    symbols = [f"S{i:02d}" for i in range(20)]
    bars = flat_bars(symbols)
    entries = pd.date_range("2024-01-02 09:31", periods=40, freq="9min", tz=TZ)
    trades = pd.concat([trade_rows("dip", s, entries, [5] * 40, [-0.01] * 40)
                        for s in symbols], ignore_index=True)
    t = run_stats(trades, bars, sides={"dip": 1})["overall"]["trades"]
    assert t["count"] == 800
    assert t["total_return"] == pytest.approx(0.99 ** 40 - 1, rel=1e-12)   # -33.1%
    assert t["max_drawdown"] == pytest.approx(0.99 ** 40 - 1, rel=1e-12)
    # Each sleeve is fully invested 5 bars (entry to exit bar) of every 9, over 390 bars.
    assert t["exposure"] == pytest.approx(40 * 5 / 390)


def test_overlapping_trades_in_a_sleeve_share_it_and_never_exceed_it():
    # `overlap: allow`: three trades of one symbol open at once (bars 30-39, 31-40, 32-41):
    # the sleeve holds at most 3, so each invests a third of it.
    bars = flat_bars(["AAA"])
    entries = pd.DatetimeIndex(["2024-01-02 10:00", "2024-01-02 10:01", "2024-01-02 10:02"]
                               ).tz_localize(TZ)
    trades = trade_rows("all_in", "AAA", entries, [10, 10, 10], [0.03, 0.03, 0.03])
    t = run_stats(trades, bars, sides={"all_in": 1})["overall"]["trades"]
    assert t["total_return"] == pytest.approx(0.03)   # 3 x (1/3 x 3%)
    # Invested share per bar: 1/3 (bar 30), 2/3, then all of it (bars 32-38); at each exit bar
    # the exiting trade's proceeds count with the open ones: bar 39 (2/3 + 1.03/3) / 1.01,
    # bar 40 (1/3 + 1.03/3) / 1.02, bar 41 (1.03/3) / 1.03. Compounding each trade on the
    # whole account would have invested 300%.
    shares = [1 / 3, 2 / 3] + [1.0] * 7 + [(2 / 3 + 1.03 / 3) / 1.01, (1 / 3 + 1.03 / 3) / 1.02,
                                          (1.03 / 3) / 1.03]
    assert t["exposure"] == pytest.approx(sum(shares) / 390)


def test_drawdown_counts_an_open_trade_marked_at_the_closes():
    # Held 8 bars at -10% and closed flat: max drawdown -10% (trade-level compounding: 0%).
    stamps = pd.date_range("2024-01-02 09:30", "2024-01-02 15:59", freq="min", tz=TZ)
    close = np.full(len(stamps), 100.0)
    entry = 10
    close[entry:entry + 8] = 90.0      # the entry bar's close and 7 more
    close[entry + 8] = 100.0            # the exit bar, at the entry price
    bars = flat_bars(["AAA"], closes={"AAA": close})
    trades = trade_rows("hold", "AAA", stamps[[entry]], [9], [0.0])
    t = run_stats(trades, bars, sides={"hold": 1})["overall"]["trades"]
    assert t["total_return"] == 0.0
    assert t["max_drawdown"] == pytest.approx(-0.10)
    assert t["exposure"] == pytest.approx(9 / 390)   # fully invested from entry to exit bar


def hourly_bars_247(days=60):
    stamps = pd.date_range("2024-01-01 00:00", periods=24 * days, freq="h", tz="UTC")
    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(stamps))))
    frame = pd.DataFrame({"timestamp": stamps, "symbol": "BTC", "open": close,
                          "high": close * 1.001, "low": close * 0.999, "close": close,
                          "volume": 1.0})
    return from_frame(frame, timezone="UTC", calendar="24/7")


def test_24_7_bars_annualise_with_365_days_and_one_clock():
    bars = hourly_bars_247()
    assert periods_per_year(bars.sessions) == (365.0, "calendar 24/7")
    stamps = pd.DatetimeIndex(bars.bars["BTC"].timestamp.view("datetime64[ns]"), tz="UTC")
    closes = bars.bars["BTC"].close
    entries = stamps[5:1400:48]
    trades = trade_rows("hourly", "BTC", entries, [12] * len(entries), 0.0)
    rows = np.searchsorted(stamps, entries)
    trades["entry_price"] = closes[rows]
    trades["exit_price"] = closes[rows + 11]
    trades["return"] = trades["gross_return"] = closes[rows + 11] / closes[rows] - 1
    s = run_stats(trades.assign(exit_time=stamps[rows + 11]), bars, sides={"hourly": 1})
    t = s["overall"]["trades"]
    # By hand: equity marked at every close, compounding trade after trade (one at a time).
    equity = np.ones(len(stamps))
    level = 1.0
    for row in rows:
        equity[row:row + 12] = level * closes[row:row + 12] / closes[row]
        level = equity[row + 11]
        equity[row + 12:] = level
    day_end = equity[23::24]
    daily = day_end / np.r_[1.0, day_end[:-1]] - 1
    assert t["total_return"] == pytest.approx(equity[-1] - 1, rel=1e-12)
    assert t["sharpe"] == pytest.approx(daily.mean() / daily.std(ddof=1) * math.sqrt(365),
                                        rel=1e-9)
    days = len(daily)
    assert t["annualized_return"] == pytest.approx(equity[-1] ** (365 / days) - 1, rel=1e-9)
    assert s["definitions"]["periods_per_year"] == 365
    override = run_stats(trades.assign(exit_time=stamps[rows + 11]), bars, sides={"hourly": 1},
                         periods=periods_per_year(bars.sessions, 252))
    assert override["overall"]["trades"]["sharpe"] == pytest.approx(
        t["sharpe"] * math.sqrt(252 / 365))


def test_periods_per_year_follow_the_calendar():
    assert periods_per_year(flat_bars(["A"]).sessions)[0] == 252
    assert periods_per_year(None)[0] == 252
    assert periods_per_year(flat_bars(["A"]).sessions, 260.0) == (260.0, "stats.periods_per_year")


def test_summary_records_the_clock_the_account_and_the_new_blocks(tmp_path):
    bars = flat_bars(["AAA", "BBB"], sessions=("2024-01-02", "2024-01-03"))
    config = {"name": "acct", "data": {"path": "<frame>"},
              "alerts": [{"name": "a", "when": "close > 0", "between": ["10:00", "10:01"],
                          "trade": {"max_bars": 5}}],
              "schedule": {"cluster_by": "day"}, "execution": {"backend": "sequential"},
              "stats": {"periods_per_year": 250}, "output": {"dir": str(tmp_path / "out")}}
    result = backtester.run(config, bars=bars)
    s = result.summary["stats"]
    assert s["definitions"]["periods_per_year"] == 250
    assert s["definitions"]["periods_per_year_source"] == "stats.periods_per_year"
    assert set(s["by_symbol"]) == {"AAA", "BBB"} and s["by_symbol"]["AAA"]["trades"] == 2
    assert s["benchmark"]["total_return"] == pytest.approx(0.0)
    equity = pd.read_parquet(result.output_dir / "equity.parquet")
    assert set(equity["alert"]) == {OVERALL, "a"}
    assert list(equity.columns) == ["timestamp", "alert", "equity", "drawdown", "exposure"]
    assert (equity["exposure"].between(0, 1)).all() and (equity["drawdown"] <= 0).all()
    text = (result.output_dir / "summary.md").read_text()
    assert "## By symbol" in text and "## Benchmark" in text


@st.composite
def trade_sets(draw):
    n_symbols = draw(st.integers(1, 4))
    n_bars = 390
    rows = []
    for s in range(n_symbols):
        for _ in range(draw(st.integers(0, 12))):
            entry = draw(st.integers(0, n_bars - 1))
            held = draw(st.integers(1, min(40, n_bars - entry)))
            ret = draw(st.floats(-0.5, 0.5))
            rows.append((f"S{s}", entry, held, ret))
    overlap = draw(st.booleans())
    return n_symbols, rows, overlap


@settings(max_examples=40, deadline=None)
@given(trade_sets(), st.integers(0, 2**32 - 1))
def test_exposure_stays_within_the_account_and_equity_follows_the_trades(case, seed):
    n_symbols, rows, overlap = case
    symbols = [f"S{s}" for s in range(n_symbols)]
    rng = np.random.default_rng(seed)
    closes = {s: 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 390))) for s in symbols}
    bars = flat_bars(symbols, closes=closes)
    stamps = pd.DatetimeIndex(bars.bars[symbols[0]].timestamp.view("datetime64[ns]"),
                              tz="UTC").tz_convert(TZ)
    if not overlap:   # one trade at a time per symbol, as `overlap: skip` gives
        kept, busy_until = [], {}
        for row in sorted(rows, key=lambda r: r[1]):
            if row[1] > busy_until.get(row[0], -1):
                kept.append(row)
                busy_until[row[0]] = row[1] + row[2] - 1
        rows = kept
    frames = []
    for symbol, entry, held, ret in rows:
        frame = trade_rows("x", symbol, stamps[[entry]], [held], [ret],
                           entry_price=closes[symbol][entry])
        frames.append(frame.assign(exit_time=stamps[[entry + held - 1]]))
    trades = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    sides = {"x": 1}
    account = build_account(trades, bars, sides)
    equity, invested = account.equity[OVERALL], account.invested[OVERALL]
    # cash never < 0 (to rounding, relative to the equity, which compounding can make large)
    assert (invested <= equity * (1 + 1e-12) + 1e-12).all() and (invested >= 0).all()
    s = run_stats(trades, bars, sides=sides, account=account)
    exposure = s["overall"]["trades"]["exposure"]
    assert 0.0 <= exposure <= 1.0
    # Final equity: one trade at a time per sleeve compounds its net returns; the account is
    # the mean of the sleeves (idle symbols keep their capital).
    if not overlap:
        sleeves = [np.prod([1 + r for sym, _, _, r in rows if sym == s]) for s in symbols]
        assert equity[-1] == pytest.approx(np.mean(sleeves), rel=1e-12, abs=1e-12)
    # Where nothing is open (nor exits) the equity does not move.
    steps = np.diff(np.r_[1.0, equity])
    assert np.allclose(steps[invested == 0], 0.0, atol=1e-12)
