"""Data quality: gaps, flat stretches, outliers and holiday bars counted on hand-made bars, and
the `data.on_gaps` / `data.on_holiday_bars` policies."""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import backtester
from backtester import quality
from backtester.bars import from_frame
from backtester.cli import main
from backtester.config import load_config
from backtester.errors import ConfigError, DataError

TZ = "America/New_York"


def frame(symbol: str, stamps: list[str], close=None, volume=None, flat=()) -> pd.DataFrame:
    """Bars at local `stamps`; open = close, high/low 0.5 around it unless the bar's index is
    in `flat` (open = high = low = close)."""
    n = len(stamps)
    close = np.full(n, 100.0) if close is None else np.asarray(close, dtype=float)
    volume = np.full(n, 10.0) if volume is None else np.asarray(volume, dtype=float)
    spread = np.array([0.0 if i in flat else 0.5 for i in range(n)])
    return pd.DataFrame({
        "timestamp": pd.DatetimeIndex(stamps).tz_localize(TZ), "symbol": symbol,
        "open": close, "high": close + spread, "low": close - spread, "close": close,
        "volume": volume,
    })


def minutes(day: str, start: str, count: int) -> list[str]:
    return [str(t) for t in pd.date_range(f"{day} {start}", periods=count, freq="1min")]


def gappy_bars():
    """SYNA: 10:00 10:01 | 10:04 10:05 | 10:08 on one day (2 gaps, 4 missing bars), then
    10:00 10:01 the next day (the night between is no gap). SYNB: no gaps."""
    syna = ["2024-03-04 10:00", "2024-03-04 10:01", "2024-03-04 10:04", "2024-03-04 10:05",
            "2024-03-04 10:08", "2024-03-05 10:00", "2024-03-05 10:01"]
    closes = [100, 101, 102, 103, 104, 105, 106]
    syna_frame = frame("SYNA", syna, close=closes)
    synb_frame = frame("SYNB", minutes("2024-03-04", "10:00", 9))
    return from_frame(pd.concat([syna_frame, synb_frame], ignore_index=True), timezone=TZ,
                      calendar="none")


def test_gaps_count_missing_bars_inside_sessions_only():
    q = quality.assess(gappy_bars()).symbols
    assert (q["SYNA"].gaps, q["SYNA"].missing_bars, q["SYNA"].bars) == (2, 4, 7)
    assert q["SYNA"].first_gap == "2024-03-04T10:02:00-05:00"
    assert (q["SYNB"].gaps, q["SYNB"].missing_bars, q["SYNB"].first_gap) == (0, 0, None)


def test_fill_adds_flat_zero_volume_bars_at_the_previous_close_for_missing_minutes():
    bars = gappy_bars()
    filled = quality.fill_gaps(bars)
    syna = filled.bars["SYNA"]
    local = pd.DatetimeIndex(syna.timestamp, tz="UTC").tz_convert(TZ).strftime("%d %H:%M")
    assert list(local) == ["04 10:00", "04 10:01", "04 10:02", "04 10:03", "04 10:04",
                           "04 10:05", "04 10:06", "04 10:07", "04 10:08", "05 10:00",
                           "05 10:01"]
    assert syna.close.tolist() == [100, 101, 101, 101, 102, 103, 103, 103, 104, 105, 106]
    added = [2, 3, 6, 7]
    assert syna.volume[added].tolist() == [0, 0, 0, 0]
    assert (syna.open[added] == syna.close[added]).all()
    assert (syna.high[added] == syna.close[added]).all()
    assert (syna.low[added] == syna.close[added]).all()
    assert syna.session.tolist() == [0] * 9 + [1] * 2
    assert filled.bars["SYNB"] is bars.bars["SYNB"]   # untouched symbols keep their arrays
    after = quality.assess(filled).symbols["SYNA"]
    assert (after.gaps, after.missing_bars) == (0, 0)


def test_gap_slots_in_a_session_break_are_not_missing():
    # XHKG lunch break 12:00-13:00: 11:59 then 13:00 is no gap; 13:00 then 13:03 misses two.
    stamps = ["2024-03-04 11:58", "2024-03-04 11:59", "2024-03-04 13:00", "2024-03-04 13:03"]
    df = frame("HK", stamps)
    df["timestamp"] = pd.DatetimeIndex(stamps).tz_localize("Asia/Hong_Kong")
    bars = from_frame(df, timezone="Asia/Hong_Kong", calendar="XHKG")
    q = quality.assess(bars).symbols["HK"]
    assert (q.gaps, q.missing_bars) == (1, 2)
    filled = quality.fill_gaps(bars).bars["HK"]
    assert len(filled) == 6


def test_flat_stretches_need_five_zero_volume_bars_at_one_price_in_one_session():
    n = 30
    close = np.full(n, 100.0)
    volume = np.full(n, 10.0)
    flat = set()
    # 0-5: six flat bars at 100 (one stretch of 6)
    flat |= set(range(6))
    volume[0:6] = 0
    # 10-13: four flat bars (too short)
    flat |= set(range(10, 14))
    volume[10:14] = 0
    # 16-23: eight flat zero-volume bars, the price moving after five: 100 x5, then 101 x3
    flat |= set(range(16, 24))
    volume[16:24] = 0
    close[21:24] = 101.0
    close[24:] = 101.0
    # 25-29: five flat bars with volume on one of them (no stretch)
    flat |= set(range(25, 30))
    volume[25:30] = 0
    volume[27] = 1
    bars = from_frame(frame("SYNA", minutes("2024-03-04", "10:00", n), close, volume, flat),
                      timezone=TZ, calendar="none")
    q = quality.assess(bars).symbols["SYNA"]
    assert (q.flat_stretches, q.flat_bars) == (2, 11)


def test_a_flat_stretch_does_not_run_across_sessions():
    stamps = minutes("2024-03-04", "15:57", 3) + minutes("2024-03-05", "09:30", 3)
    bars = from_frame(frame("SYNA", stamps, volume=np.zeros(6), flat=set(range(6))),
                      timezone=TZ, calendar="none")
    assert quality.assess(bars).symbols["SYNA"].flat_stretches == 0
    one_day = from_frame(frame("SYNA", minutes("2024-03-04", "10:00", 6), volume=np.zeros(6),
                               flat=set(range(6))), timezone=TZ, calendar="none")
    assert quality.assess(one_day).symbols["SYNA"].flat_stretches == 1


def test_outlier_is_a_return_beyond_ten_rolling_mads():
    # 40 returns alternating +-1% (median |r| = 0.01, threshold 10 * 1.4826 * 0.01 = 0.148),
    # then a 20% jump (an outlier), then a 10% drop (not: below the threshold).
    steps = [0.01 if i % 2 == 0 else -0.01 for i in range(40)] + [0.2, -0.1]
    close = 100 * np.exp(np.concatenate([[0.0], np.cumsum(steps)]))
    bars = from_frame(frame("SYNA", minutes("2024-03-04", "10:00", len(close)), close),
                      timezone=TZ, calendar="none")
    assert quality.assess(bars).symbols["SYNA"].outliers == 1


def test_no_outlier_before_twenty_returns_or_across_the_night():
    # A 20% move as the 10th return: too few returns to judge.
    steps = [0.01, -0.01] * 4 + [0.01, 0.2] + [0.01, -0.01] * 5
    close = 100 * np.exp(np.concatenate([[0.0], np.cumsum(steps)]))
    bars = from_frame(frame("SYNA", minutes("2024-03-04", "10:00", len(close)), close),
                      timezone=TZ, calendar="none")
    assert quality.assess(bars).symbols["SYNA"].outliers == 0
    # 30 quiet returns, then a 50% overnight gap: the first bar of a session has no return.
    close = np.concatenate([100 * np.exp(np.cumsum([0.0] + [0.01, -0.01] * 15)), [150.0]])
    stamps = minutes("2024-03-04", "10:00", 31) + ["2024-03-05 10:00"]
    bars = from_frame(frame("SYNA", stamps, close), timezone=TZ, calendar="none")
    assert quality.assess(bars).symbols["SYNA"].outliers == 0


def xnys_with_holiday_bars() -> pd.DataFrame:
    # 2024-07-04 is an XNYS holiday: three bars on it between two sessions' bars.
    return frame("SYNA", minutes("2024-07-03", "10:00", 2) + minutes("2024-07-04", "10:00", 3)
                 + minutes("2024-07-05", "10:00", 2))


def test_holiday_bars_are_an_error_by_default():
    with pytest.raises(DataError, match=r"row 3, column 'timestamp': bar at 2024-07-04 10:00:00 "
                                        r"\(SYNA\) is outside every XNYS session"):
        from_frame(xnys_with_holiday_bars(), timezone=TZ, calendar="XNYS")


def test_holiday_bars_dropped_and_counted_with_drop():
    bars = from_frame(xnys_with_holiday_bars(), timezone=TZ, calendar="XNYS",
                      on_holiday_bars="drop")
    assert len(bars.bars["SYNA"]) == 4
    assert bars.holiday_bars_dropped == {"SYNA": 3}
    assert [str(d) for d in bars.sessions.dates] == ["2024-07-03", "2024-07-05"]
    assert quality.assess(bars).symbols["SYNA"].holiday_bars_dropped == 3


def test_drop_still_refuses_bars_outside_the_hours_of_a_session_date():
    df = pd.concat([xnys_with_holiday_bars(), frame("SYNA", ["2024-07-05 08:00"])])
    with pytest.raises(DataError, match="2024-07-05 08:00:00 .* outside every XNYS session"):
        from_frame(df.sort_values("timestamp"), timezone=TZ, calendar="XNYS",
                   on_holiday_bars="drop")


def test_calendar_none_has_no_holiday_bars():
    bars = from_frame(xnys_with_holiday_bars(), timezone=TZ, calendar="none",
                      on_holiday_bars="drop")
    assert bars.holiday_bars_dropped == {}
    assert len(bars.bars["SYNA"]) == 7


@pytest.mark.parametrize("key, value, message", [
    ("on_gaps", "skip", "data.on_gaps: 'skip' is not one of keep, fill, error"),
    ("on_holiday_bars", "dorp", "data.on_holiday_bars: 'dorp' is not one of error, drop "
                                "(did you mean 'drop'?)"),
])
def test_data_policies_refuse_unknown_values(key, value, message):
    with pytest.raises(ConfigError) as caught:
        load_config({"name": "q", "data": {"path": "x.csv", key: value},
                                "alerts": [{"name": "a", "when": "close > 0"}]})
    assert str(caught.value).endswith(message)


def write_case(tmp_path, on_gaps: str) -> None:
    gappy = frame("SYNA", minutes("2024-03-04", "10:00", 30)[:12] + minutes(
        "2024-03-04", "10:15", 40), close=100 + np.arange(52) % 3)
    gappy["timestamp"] = gappy["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")
    gappy.to_csv(tmp_path / "bars.csv", index=False)
    (tmp_path / "c.yaml").write_text(
        f"name: q\ndata: {{path: bars.csv, calendar: none, on_gaps: {on_gaps}}}\n"
        "alerts:\n  - {name: up, when: 'close > prev(close, 1)'}\n"
        "execution: {backend: sequential}\noutput: {dir: out}\n", encoding="utf-8")


def test_on_gaps_error_is_one_line_naming_the_symbol_and_first_gap(tmp_path, monkeypatch,
                                                                   capsys):
    write_case(tmp_path, "error")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "c.yaml"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "bars.csv: SYNA misses 3 bar(s) in 1 gap(s) inside sessions, the first at "
        "2024-03-04T10:12:00-05:00 (fill them with data.on_gaps: fill, or keep them with "
        "on_gaps: keep)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.csv", "c.yaml"]


@pytest.mark.parametrize("on_gaps, n_bars, filled", [("keep", 52, 0), ("fill", 55, 3)])
def test_run_writes_quality_json_and_a_summary_section(tmp_path, monkeypatch, on_gaps, n_bars,
                                                       filled):
    write_case(tmp_path, on_gaps)
    monkeypatch.chdir(tmp_path)
    result = backtester.run("c.yaml")
    written = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert written == result.quality.to_dict()
    assert written["symbols"]["SYNA"] == {
        "bars": 52, "gaps": 1, "missing_bars": 3, "filled_bars": filled, "flat_stretches": 0,
        "flat_bars": 0, "outliers": 0, "holiday_bars_dropped": 0,
        "first_gap": "2024-03-04T10:12:00-05:00"}
    assert written["rules"]["on_gaps"] == on_gaps
    assert result.summary["bars"] == n_bars
    assert "| SYNA | 52 | 1 | 3 |" in (tmp_path / "out" / "summary.md").read_text()


def test_a_gap_of_a_million_slots_is_counted_without_visiting_them():
    # Most spacings are 1 ns (a broken export): a 10-minute gap is 6e11 slots.
    start = pd.Timestamp("2024-03-04 10:00", tz=TZ).value
    stamps = np.array([start, start + 1, start + 2, start + 600_000_000_000, start + 600_000_000_001])
    df = frame("SYNA", ["2024-03-04 10:00"] * 5)
    df["timestamp"] = pd.to_datetime(stamps, utc=True)
    bars = from_frame(df, timezone=TZ, calendar="none")
    assert bars.bar_ns == 1
    q = quality.assess(bars).symbols["SYNA"]
    assert (q.gaps, q.missing_bars) == (1, 600_000_000_000 - 3)
    with pytest.raises(DataError, match=r"<bars>: filling the gaps would add 599,999,999,997 "
                                        r"bars to 5 at a bar interval of 1e-09 s"):
        quality.fill_gaps(bars)


@settings(deadline=None, max_examples=40)
@given(steps=st.lists(st.sampled_from([0.0, 0.001, -0.001, 0.002, -0.003, 0.05, -0.08]),
                      min_size=1, max_size=300),
       window=st.integers(1, 40), min_returns=st.integers(1, 40))
def test_outliers_match_a_plain_rolling_median(steps, window, min_returns):
    assume(min_returns <= window)
    close = 100 * np.exp(np.concatenate([[0.0], np.cumsum(steps)]))
    session = np.zeros(len(close), np.int32)
    returns = np.abs(np.log(close[1:] / close[:-1]))
    expected = 0
    for i, r in enumerate(returns):
        past = returns[max(0, i - window):i]
        if len(past) >= min_returns:
            median = np.median(past)
            expected += bool(median > 0 and r > 3.0 * 1.4826 * median)
    assert quality._outliers_nb(close, session, False, 3.0, window, min_returns) == expected


def test_a_run_with_on_holiday_bars_drop_reports_what_it_dropped(tmp_path, monkeypatch):
    bars = frame("SYNA", minutes("2024-07-03", "10:00", 30) + minutes("2024-07-04", "10:00", 3)
                 + minutes("2024-07-05", "10:00", 30), close=100 + np.arange(63) % 3)
    bars["timestamp"] = bars["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")
    bars.to_csv(tmp_path / "bars.csv", index=False)
    (tmp_path / "c.yaml").write_text(
        "name: q\ndata: {path: bars.csv, calendar: XNYS, on_holiday_bars: drop}\n"
        "alerts:\n  - {name: up, when: 'close > prev(close, 1)'}\n"
        "execution: {backend: sequential}\noutput: {dir: out}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = backtester.run("c.yaml")
    assert result.summary["bars"] == 60
    written = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert written["totals"]["holiday_bars_dropped"] == 3
    assert written["symbols"]["SYNA"]["holiday_bars_dropped"] == 3
