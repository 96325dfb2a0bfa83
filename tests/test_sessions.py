"""Session tables: real exchange calendars, inferred sessions, and `locate` edges."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtester import sessions

NEW_YORK = "America/New_York"
MINUTE_NS = 60_000_000_000


def _ns(text: str) -> int:
    return pd.Timestamp(text, tz=NEW_YORK).as_unit("ns").value


@pytest.fixture(scope="module")
def xnys_2024() -> sessions.SessionTable:
    return sessions.from_calendar(
        "XNYS", datetime.date(2024, 1, 1), datetime.date(2024, 12, 31), NEW_YORK
    )


def test_xnys_2024_has_no_session_on_independence_day(xnys_2024):
    dates = xnys_2024.dates.astype(str).tolist()
    assert "2024-07-04" not in dates
    assert "2024-07-03" in dates and "2024-07-05" in dates
    assert "2024-12-25" not in dates
    assert len(xnys_2024) == 252


def test_xnys_half_day_closes_at_13_00(xnys_2024):
    index = xnys_2024.dates.astype(str).tolist().index("2024-07-03")
    assert xnys_2024.open_ns[index] == _ns("2024-07-03 09:30")
    assert xnys_2024.close_ns[index] == _ns("2024-07-03 13:00")
    regular = xnys_2024.dates.astype(str).tolist().index("2024-07-02")
    assert xnys_2024.close_ns[regular] == _ns("2024-07-02 16:00")


def test_table_arrays_have_the_promised_types(xnys_2024):
    assert xnys_2024.dates.dtype == np.dtype("datetime64[D]")
    assert xnys_2024.open_ns.dtype == np.int64 and xnys_2024.close_ns.dtype == np.int64
    assert (np.diff(xnys_2024.dates.astype(np.int64)) > 0).all()
    assert (xnys_2024.close_ns > xnys_2024.open_ns).all()
    assert xnys_2024.calendar == "XNYS" and xnys_2024.timezone == NEW_YORK


def test_locate_open_is_inclusive_and_close_exclusive(xnys_2024):
    day = xnys_2024.dates.astype(str).tolist().index("2024-07-03")
    open_ns, close_ns = xnys_2024.open_ns[day], xnys_2024.close_ns[day]
    stamps = np.array([open_ns - 1, open_ns, close_ns - 1, close_ns, _ns("2024-07-04 10:00")])
    located = xnys_2024.locate(stamps)
    assert located.dtype == np.int32
    assert located.tolist() == [-1, day, day, -1, -1]


def test_locate_before_first_and_after_last_session(xnys_2024):
    stamps = np.array([_ns("2023-12-29 10:00"), _ns("2025-01-02 10:00"), _ns("2024-01-02 09:30")])
    assert xnys_2024.locate(stamps).tolist() == [-1, -1, 0]


def test_unknown_calendar_says_how_to_fix_it():
    with pytest.raises(ValueError, match=r"unknown calendar 'XNSY'.*XNYS.*'none'"):
        sessions.from_calendar("XNSY", datetime.date(2024, 1, 2), datetime.date(2024, 1, 5),
                               NEW_YORK)


def test_unknown_timezone_is_a_value_error():
    with pytest.raises(ValueError, match="unknown timezone"):
        sessions.from_calendar("XNYS", datetime.date(2024, 1, 2), datetime.date(2024, 1, 5),
                               "Mars/Olympus")


def test_infer_makes_one_session_per_local_date():
    stamps = np.array([
        _ns("2024-03-11 23:00"),  # late evening local time, still 2024-03-11
        _ns("2024-03-11 09:00"),
        _ns("2024-03-12 00:00"),
        _ns("2024-03-12 00:01"),
    ])
    table = sessions.infer(stamps, NEW_YORK, MINUTE_NS)
    assert table.calendar == "none"
    assert table.dates.astype(str).tolist() == ["2024-03-11", "2024-03-12"]
    assert table.open_ns.tolist() == [_ns("2024-03-11 09:00"), _ns("2024-03-12 00:00")]
    assert table.close_ns.tolist() == [_ns("2024-03-11 23:01"), _ns("2024-03-12 00:02")]
    assert table.locate(stamps).tolist() == [0, 0, 1, 1]


# The fast paths (an offset table per hour, a one-pass locate) against pandas and numpy.

ZONES = ["America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata", "UTC",
         "Pacific/Chatham", "America/Sao_Paulo"]
_1990, _2030 = pd.Timestamp("1990-01-01").value, pd.Timestamp("2030-01-01").value


def _pandas_wall(stamps: np.ndarray, zone: str) -> np.ndarray:
    index = pd.DatetimeIndex(stamps.view("datetime64[ns]")).tz_localize("UTC")
    return index.tz_convert(zone).tz_localize(None).asi8


def _pandas_utc(wall: np.ndarray, zone: str) -> np.ndarray:
    index = pd.DatetimeIndex(wall.view("datetime64[ns]"))
    return index.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").as_unit("ns").asi8


@st.composite
def dense_stamps(draw):
    """Minute-ish stamps packed densely around a random instant (often a DST change), in
    time order or shuffled, so that the per-hour table is used."""
    centre = draw(st.integers(_1990, _2030))
    span = draw(st.sampled_from([3_600, 86_400, 10 * 86_400])) * 10**9
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, 3000))
    stamps = centre + rng.integers(-span, span, n) // draw(st.sampled_from([1, 60 * 10**9]))
    if draw(st.booleans()):
        stamps = np.sort(stamps)
    return stamps.astype(np.int64)


@settings(deadline=None, max_examples=60)
@given(stamps=dense_stamps(), zone=st.sampled_from(ZONES))
def test_local_wall_time_equals_pandas_tz_convert(stamps, zone):
    np.testing.assert_array_equal(sessions.local_wall_ns(stamps, zone),
                                  _pandas_wall(stamps, zone))


@settings(deadline=None, max_examples=60)
@given(wall=dense_stamps(), zone=st.sampled_from(ZONES))
def test_utc_from_wall_time_equals_pandas_tz_localize_or_is_none(wall, zone):
    expected = _pandas_utc(wall, zone)
    got = sessions.utc_from_wall_ns(wall, zone)
    missing = expected == np.iinfo(np.int64).min
    if missing.any():
        assert got is None
    else:
        np.testing.assert_array_equal(got, expected)
    valid = wall[~missing]
    np.testing.assert_array_equal(sessions.utc_from_wall_ns(valid, zone),
                                  _pandas_utc(valid, zone))


def test_utc_from_wall_time_is_none_for_the_skipped_and_repeated_hours():
    skipped = pd.date_range("2024-03-10 01:00", "2024-03-10 04:00", freq="min").as_unit("ns").asi8
    repeated = pd.date_range("2024-11-03 00:00", "2024-11-03 03:00", freq="min").as_unit("ns").asi8
    assert sessions.utc_from_wall_ns(skipped, NEW_YORK) is None
    assert sessions.utc_from_wall_ns(repeated, NEW_YORK) is None
    fine = pd.date_range("2024-03-10 03:00", "2024-03-11 03:00", freq="min").as_unit("ns").asi8
    np.testing.assert_array_equal(sessions.utc_from_wall_ns(fine, NEW_YORK),
                                  _pandas_utc(fine, NEW_YORK))


@settings(deadline=None, max_examples=60)
@given(stamps=dense_stamps(), n_sessions=st.integers(0, 40), seed=st.integers(0, 2**32 - 1))
def test_locate_equals_searchsorted_whatever_the_order(stamps, n_sessions, seed):
    rng = np.random.default_rng(seed)
    low, high = int(stamps.min()) - 10**12, int(stamps.max()) + 10**12
    edges = np.unique(rng.integers(low, high, 2 * n_sessions))
    edges = edges[: len(edges) // 2 * 2]
    open_ns, close_ns = edges[0::2], edges[1::2]
    table = sessions.SessionTable(NEW_YORK, "none", np.arange(len(open_ns)).astype(
        "datetime64[D]"), open_ns, close_ns)
    index = np.searchsorted(open_ns, stamps, side="right") - 1
    inside = (index >= 0) & (stamps < close_ns[np.maximum(index, 0)] if len(close_ns) else False)
    expected = np.where(inside, index, -1).astype(np.int32)
    np.testing.assert_array_equal(table.locate(stamps), expected)


@pytest.mark.parametrize("start, end", [("2024-03-01", "2024-03-20"), ("2023-12-29", "2025-01-02"),
                                        ("2024-07-03", "2024-07-05")])
def test_calendar_sliced_from_whole_years_equals_the_exact_range(start, end):
    start, end = datetime.date.fromisoformat(start), datetime.date.fromisoformat(end)
    table = sessions.from_calendar("XNYS", start, end, NEW_YORK)
    exact = sessions._calendar_arrays("XNYS", start, end)
    for got, expected in zip((table.dates, table.open_ns, table.close_ns), exact):
        np.testing.assert_array_equal(got, expected)
        assert not got.flags.writeable


def test_calendar_that_cannot_cover_whole_years_is_built_for_the_exact_range(monkeypatch):
    built = []
    real = sessions._calendar_arrays

    def bounded(calendar, start, end):
        built.append((start, end))
        if start.month == 1 and start.day == 1:
            raise ValueError("before the calendar's first session")
        return real(calendar, start, end)

    monkeypatch.setattr(sessions, "_calendar_arrays", bounded)
    monkeypatch.setattr(sessions, "_WHOLE_YEARS", {})
    start, end = datetime.date(2024, 3, 1), datetime.date(2024, 3, 8)
    table = sessions.from_calendar("XNYS", start, end, NEW_YORK)
    assert built[-1] == (start, end) and len(table) == 6
