"""Session tables: real exchange calendars, inferred sessions, and `locate` edges."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest

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
