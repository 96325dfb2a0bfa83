"""Time from the calendar: trading days that roll at 17:00, breaks, and daily bars, on hand-made
bars whose expected sessions, fires and exits are worked out in each test."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import backtester
from backtester import sessions
from backtester.bars import from_frame, load_bars
from backtester.cli import main
from backtester.config import load_config
from backtester.errors import ConfigError, DataError

NEW_YORK = "America/New_York"


def ny(text: str) -> int:
    return pd.Timestamp(text, tz=NEW_YORK).as_unit("ns").value


def frame(stamps, closes, symbol="EURUSD", opens=None) -> pd.DataFrame:
    closes = np.asarray(closes, dtype=float)
    opens = np.concatenate(([closes[0]], closes[:-1])) if opens is None else np.asarray(opens)
    return pd.DataFrame({"timestamp": stamps, "symbol": symbol, "open": opens,
                         "high": np.maximum(opens, closes) + 0.01,
                         "low": np.minimum(opens, closes) - 0.01, "close": closes,
                         "volume": 100.0})


def fx_stamps(first: str, last: str, freq: str = "5min") -> pd.DatetimeIndex:
    """FX-week bars from `first` to `last` (New York), weekends (Fri 17:00 - Sun 17:00) left out."""
    stamps = pd.date_range(first, last, freq=freq, tz=NEW_YORK)
    local = stamps.tz_localize(None)
    weekend = ((local.day_of_week == 4) & (local.hour >= 17)) | (local.day_of_week == 5) | (
        (local.day_of_week == 6) & (local.hour < 17))
    return stamps[~weekend]


def local(ns) -> list[str]:
    return [str(t) for t in pd.to_datetime(np.asarray(ns), utc=True).tz_convert(NEW_YORK)
            .tz_localize(None)]


# --------------------------------------------------------------------------------------------
# 24/5: the FX week


def test_fx_week_sessions_run_from_17_00_to_17_00_new_york():
    table = sessions.from_calendar("24/5", dt.date(2024, 3, 8), dt.date(2024, 3, 12), NEW_YORK)
    assert [str(d) for d in table.dates] == ["2024-03-08", "2024-03-11", "2024-03-12"]
    # Monday's session opens Sunday 17:00 (EDT from that Sunday's 02:00), Friday's closes 17:00.
    assert local(table.open_ns) == ["2024-03-07 17:00:00", "2024-03-10 17:00:00",
                                    "2024-03-11 17:00:00"]
    assert local(table.close_ns) == ["2024-03-08 17:00:00", "2024-03-11 17:00:00",
                                     "2024-03-12 17:00:00"]
    at = [ny("2024-03-08 16:59"), ny("2024-03-08 17:00"), ny("2024-03-09 12:00"),
          ny("2024-03-10 16:59"), ny("2024-03-10 17:00"), ny("2024-03-11 00:05")]
    assert table.locate(np.array(at)).tolist() == [0, -1, -1, -1, 1, 1]


def fx_config(when: str, calendar="24/5", **alert) -> dict:
    return {"name": "fx", "data": {"path": "<frame>", "calendar": calendar},
            "alerts": [{"name": "a", "when": when, **alert}],
            "schedule": {"cluster_by": "day"}, "execution": {"backend": "sequential"}}


def run_frame(config: dict, data: pd.DataFrame, **load):
    cal = config["data"]["calendar"]
    bars = from_frame(data, timezone=NEW_YORK, calendar=cal, **load)
    return backtester.run(config, bars=bars, write=False)


def test_once_per_day_fires_once_per_fx_trading_day_at_its_17_00_open():
    stamps = fx_stamps("2024-03-03 17:00", "2024-03-05 16:55")   # Monday's and Tuesday's days
    result = run_frame(fx_config("close > 0", once_per_day=True),
                       frame(stamps, np.full(len(stamps), 1.1)))
    # A day rolling at midnight would fire at 17:00 Sunday, 00:00 Monday, 00:00 Tuesday...
    assert [str(t.tz_localize(None)) for t in result.alerts["timestamp"]] == [
        "2024-03-03 17:00:00", "2024-03-04 17:00:00"]


def test_session_close_trade_entered_at_17_10_exits_at_the_next_days_16_55_bar():
    stamps = fx_stamps("2024-03-03 17:00", "2024-03-05 16:55")
    closes = np.full(len(stamps), 1.10)
    signal = stamps.get_loc(pd.Timestamp("2024-03-04 17:05", tz=NEW_YORK))
    last = stamps.get_loc(pd.Timestamp("2024-03-05 16:55", tz=NEW_YORK))
    closes[signal] = 1.12
    closes[last] = 1.105   # below the rule's 1.11: one signal only
    trade = {"entry": "next_open", "session_close": True}
    result = run_frame(fx_config("close > 1.11", trade=trade, forward=["eod"]),
                       frame(stamps, closes, opens=np.full(len(stamps), 1.10)))
    (row,) = result.trades.itertuples()
    assert str(row.entry_time.tz_localize(None)) == "2024-03-04 17:10:00"
    assert str(row.exit_time.tz_localize(None)) == "2024-03-05 16:55:00"   # not 23:55
    assert row.reason == "session_close" and row.exit_price == pytest.approx(1.105)
    assert row.entry_price == pytest.approx(1.10)
    # eod: the close of the trading day's last bar over the signal close, 1.105 / 1.12 - 1
    assert result.forward["ret_eod"].tolist() == pytest.approx([1.105 / 1.12 - 1])


def test_day_open_is_the_open_of_the_fx_day_begun_at_17_00():
    stamps = fx_stamps("2024-03-03 17:00", "2024-03-04 16:55")
    closes = np.full(len(stamps), 1.10)
    midnight = stamps.get_loc(pd.Timestamp("2024-03-04 00:00", tz=NEW_YORK))
    closes[midnight - 1:midnight + 2] = 1.20     # 23:55, 00:00, 00:05; each opens at the last close
    # day_open is Sunday 17:00's open, 1.10, all night: 1.20 > 1.10 * 1.05 at all three bars.
    # Rolled at midnight, 00:00 would open a day at 1.20 and only 23:55 would fire.
    result = run_frame(fx_config("close > day_open * 1.05"), frame(stamps, closes))
    fired = [str(t.tz_localize(None)) for t in result.alerts["timestamp"]]
    assert fired == ["2024-03-03 23:55:00", "2024-03-04 00:00:00", "2024-03-04 00:05:00"]


def test_us_futures_open_sunday_18_00_and_halt_17_00_to_18_00():
    table = sessions.from_calendar("us_futures", dt.date(2024, 3, 8), dt.date(2024, 3, 11),
                                   NEW_YORK)
    at = [ny("2024-03-10 17:30"), ny("2024-03-10 18:00"), ny("2024-03-11 16:59"),
          ny("2024-03-11 17:30")]
    index = table.locate(np.array(at))
    assert index[0] == -1 and index[3] == -1          # Sunday before the open; the daily halt
    assert index[1] == index[2] and str(table.dates[index[1]]) == "2024-03-11"


def test_fx_bars_on_us_futures_name_the_halt_in_one_line():
    # Sunday 18:00 onwards every 5 minutes: row 277 is 23 hours later, Monday 17:00, the halt.
    stamps = pd.date_range("2024-03-10 18:00", periods=24 * 12, freq="5min", tz=NEW_YORK)
    with pytest.raises(DataError, match=r"row 277, column 'timestamp': bar at 2024-03-11 17:00:00 "
                                        r"\(EURUSD\) is outside every us_futures session"):
        from_frame(frame(stamps, np.full(len(stamps), 1.1)), timezone=NEW_YORK,
                   calendar="us_futures")


# --------------------------------------------------------------------------------------------
# calendar: none with day_starts


def test_day_starts_rolls_inferred_sessions_at_17_00():
    stamps = fx_stamps("2024-03-03 17:00", "2024-03-05 16:55")
    bars = from_frame(frame(stamps, np.full(len(stamps), 1.1)), timezone=NEW_YORK,
                      calendar="none", day_starts=dt.time(17))
    assert [str(d) for d in bars.sessions.dates] == ["2024-03-04", "2024-03-05"]
    assert local(bars.sessions.open_ns) == ["2024-03-03 17:00:00", "2024-03-04 17:00:00"]
    cfg = fx_config("close > 0", calendar="none", once_per_day=True)
    cfg["data"]["day_starts"] = "17:00"
    result = backtester.run(cfg, bars=bars, write=False)
    assert len(result.alerts) == 2


def test_an_early_day_start_names_the_day_it_starts_on():
    # Rolling at 06:00: Tuesday 05:00 still belongs to Monday's day.
    days = sessions.trading_days(np.array([ny("2024-03-04 06:00"), ny("2024-03-05 05:00"),
                                           ny("2024-03-05 06:00")]), NEW_YORK, dt.time(6))
    assert [str(np.datetime64(int(d), "D")) for d in days] == ["2024-03-04", "2024-03-04",
                                                                "2024-03-05"]


def test_day_starts_is_read_from_the_config_and_refused_with_an_exchange_calendar():
    base = {"name": "x", "alerts": [{"name": "a", "when": "close > 1"}]}
    cfg = load_config({**base, "data": {"path": "b.csv", "calendar": "none",
                                        "day_starts": "17:00"}})
    assert cfg.data.day_starts == dt.time(17, 0)
    with pytest.raises(ConfigError, match=r"data\.day_starts: calendar XNYS sets its own trading "
                                          r"day \(day_starts is for calendar: none\)"):
        load_config({**base, "data": {"path": "b.csv", "day_starts": "17:00"}})


# --------------------------------------------------------------------------------------------
# Breaks


def hong_kong(times: list[str]) -> pd.DataFrame:
    stamps = pd.DatetimeIndex([f"2024-03-04 {t}" for t in times]).tz_localize("Asia/Hong_Kong")
    return frame(stamps, np.full(len(stamps), 50.0), symbol="0700")


def test_bars_around_the_xhkg_lunch_break_are_in_session():
    bars = from_frame(hong_kong(["09:30", "11:59", "13:00", "15:59"]), timezone="Asia/Hong_Kong",
                      calendar="XHKG")
    assert bars.bars["0700"].session.tolist() == [0, 0, 0, 0]


def test_a_bar_in_the_xhkg_lunch_break_is_one_line_error():
    with pytest.raises(DataError) as info:
        from_frame(hong_kong(["11:58", "11:59", "12:30"]), timezone="Asia/Hong_Kong",
                   calendar="XHKG")
    assert str(info.value) == ("<frame>: row 3, column 'timestamp': bar at 2024-03-04 12:30:00 "
                               "(0700) is in a XHKG session's break (use calendar: none for data "
                               "outside exchange hours)")


# --------------------------------------------------------------------------------------------
# Daily bars


def daily_csv(tmp_path, dates, closes=None, name="daily.csv"):
    closes = np.arange(100.0, 100.0 + len(dates)) if closes is None else np.asarray(closes)
    data = frame(pd.Index(dates), closes, symbol="SPY")
    data.to_csv(tmp_path / name, index=False)
    return tmp_path / name


WEEK = ["2024-03-04", "2024-03-05", "2024-03-06", "2024-03-07", "2024-03-08"]


def test_midnight_daily_bars_are_each_their_xnys_sessions_bar(tmp_path):
    bars = load_bars(daily_csv(tmp_path, WEEK), timezone=NEW_YORK, calendar="XNYS")
    assert [str(d) for d in bars.sessions.dates] == WEEK
    assert bars.bars["SPY"].session.tolist() == [0, 1, 2, 3, 4]
    # each bar opens with its session, 09:30 New York
    assert local(bars.bars["SPY"].timestamp) == [f"{d} 09:30:00" for d in WEEK]


@pytest.mark.parametrize("calendar", ["XNYS", "none"])
@pytest.mark.parametrize("bar_stamp", ["open", "close"])
def test_daily_bars_keep_their_dates_whatever_bar_stamp_says(tmp_path, calendar, bar_stamp):
    bars = load_bars(daily_csv(tmp_path, WEEK), timezone=NEW_YORK, calendar=calendar,
                     bar_stamp=bar_stamp)
    assert [str(d) for d in bars.sessions.dates] == WEEK   # Monday stays Monday


def test_daily_bar_on_a_holiday_quotes_the_date_as_written(tmp_path):
    dates = ["2024-03-27", "2024-03-28", "2024-03-29", "2024-04-01"]   # 29th: Good Friday
    with pytest.raises(DataError) as info:
        load_bars(daily_csv(tmp_path, dates), timezone=NEW_YORK, calendar="XNYS")
    assert str(info.value).endswith("row 3, column 'timestamp': daily bar 2024-03-29 (SPY) falls "
                                    "on no XNYS session (a holiday or weekend: drop the row, or "
                                    "use calendar: none)")


def test_weekly_bars_belong_to_the_first_session_of_their_week(tmp_path):
    # Stamped on Mondays; 2024-02-19 is Presidents' Day, so that week's bar is Tuesday's session.
    path = daily_csv(tmp_path, ["2024-02-12", "2024-02-19", "2024-02-26"])
    bars = load_bars(path, timezone=NEW_YORK, calendar="XNYS")
    dates = [str(bars.sessions.dates[i]) for i in bars.bars["SPY"].session]
    assert dates == ["2024-02-12", "2024-02-20", "2024-02-26"]


def test_close_stamped_intraday_bar_outside_hours_is_quoted_as_stamped(tmp_path):
    stamps = pd.date_range("2024-03-04 09:31", periods=391, freq="1min", tz=NEW_YORK)
    data = frame(stamps, np.full(391, 10.0), symbol="SPY")   # the last closes at 16:01
    with pytest.raises(DataError) as info:
        from_frame(data, timezone=NEW_YORK, bar_stamp="close")
    assert "bar at 2024-03-04 16:01:00 stamped at its close (SPY) is outside every XNYS " \
        "session" in str(info.value)


def test_daily_bars_run_end_to_end_under_xnys(tmp_path, monkeypatch):
    # closes 100..104; "close > 102.5" fires on Thursday and Friday.
    daily_csv(tmp_path, WEEK)
    monkeypatch.chdir(tmp_path)
    result = backtester.run({"name": "d", "data": {"path": "daily.csv"},
                             "alerts": [{"name": "a", "when": "close > 102.5",
                                         "forward": [1]}]}, write=False)
    assert [str(t.date()) for t in result.alerts["timestamp"]] == ["2024-03-07", "2024-03-08"]
    # Thursday's 1-bar forward return: Friday's close over Thursday's, 104 / 103 - 1
    assert result.forward["ret_1"].iloc[0] == pytest.approx(104 / 103 - 1)


def test_session_close_at_the_entry_close_on_daily_bars_is_refused(tmp_path, monkeypatch,
                                                                      capsys):
    daily_csv(tmp_path, WEEK)
    (tmp_path / "c.yaml").write_text(
        "name: d\ndata: {path: daily.csv}\nalerts:\n  - name: a\n    when: close > 102.5\n"
        "    trade: {entry: close, session_close: true}\noutput: {dir: out}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "c.yaml"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["c.yaml: alerts[0].trade.session_close: with entry: close on bars of a session "
                   "or longer every trade would leave at its own entry close (zero length) (use "
                   "entry: next_open, or max_bars: N instead of session_close)"]
    assert not (tmp_path / "out").exists()


def test_next_open_session_close_on_daily_bars_holds_one_bar(tmp_path, monkeypatch):
    daily_csv(tmp_path, WEEK)
    monkeypatch.chdir(tmp_path)
    result = backtester.run({"name": "d", "data": {"path": "daily.csv"},
                             "alerts": [{"name": "a", "when": "close > 102.5",
                                         "trade": {"entry": "next_open", "session_close": True}}]},
                            write=False)
    # Thursday's signal enters Friday at its open (103, the previous close) and leaves at
    # Friday's close 104; Friday's own signal has no next bar.
    (row,) = result.trades.itertuples()
    assert (row.entry_price, row.exit_price, row.reason) == (103.0, 104.0, "session_close")


# --------------------------------------------------------------------------------------------
# Properties


WEEK_START = pd.Timestamp("2024-03-01", tz=NEW_YORK)   # spans the 2024-03-10 DST change


@settings(deadline=None, max_examples=200)
@given(minutes=st.lists(st.integers(0, 21 * 24 * 60 - 1), min_size=1, max_size=50))
def test_fx_week_session_is_the_date_of_the_next_17_00_on_weekdays(minutes):
    table = sessions.from_calendar("24/5", dt.date(2024, 2, 28), dt.date(2024, 3, 25), NEW_YORK)
    instants = [WEEK_START + pd.Timedelta(minutes=m) for m in minutes]
    index = table.locate(np.array([t.as_unit("ns").value for t in instants]))
    for t, i in zip(instants, index):
        wall = t.tz_localize(None)
        trading_date = (wall + pd.Timedelta(hours=7)).date()   # 17:00 rolls to the next date
        if trading_date.weekday() >= 5:
            assert i == -1, wall                               # Friday 17:00 to Sunday 17:00
        else:
            assert str(table.dates[i]) == str(trading_date), wall


@settings(deadline=None, max_examples=200)
@given(minutes=st.lists(st.integers(0, 21 * 24 * 60 - 1), min_size=1, max_size=50),
       roll=st.integers(1, 23 * 60 + 59))
def test_trading_day_matches_wall_clock_arithmetic(minutes, roll):
    day_starts = dt.time(roll // 60, roll % 60)
    instants = [WEEK_START + pd.Timedelta(minutes=m) for m in minutes]
    days = sessions.trading_days(np.array([t.as_unit("ns").value for t in instants]), NEW_YORK,
                                 day_starts)
    for t, day in zip(instants, days):
        wall = t.tz_localize(None)
        since_roll = wall - pd.Timedelta(minutes=roll)          # the day it started on
        expected = since_roll.date() + dt.timedelta(days=1 if roll >= 12 * 60 else 0)
        assert str(np.datetime64(int(day), "D")) == str(expected), (wall, day_starts)


def test_synthetic_fx_week_starts_sunday_17_00():
    from backtester import synth

    data = synth.generate(["EURUSD"], dt.date(2024, 3, 4), dt.date(2024, 3, 5), seed=1,
                          calendar="24/5", timezone=NEW_YORK)
    stamps = pd.DatetimeIndex(data["timestamp"]).tz_convert(NEW_YORK).tz_localize(None)
    assert str(stamps[0]) == "2024-03-03 17:00:00" and str(stamps[-1]) == "2024-03-05 16:59:00"
    assert len(stamps) == 2 * 24 * 60
