"""Exchange sessions: one row per trading day, with its open and close in UTC nanoseconds.

A `SessionTable` is built either from a real exchange calendar (`from_calendar`, backed by
`exchange_calendars`, so holidays, half-days and early closes are the exchange's own; never a
hand-written holiday list) or, for markets without a calendar (FX, crypto, daily data), inferred
from the bars themselves (`infer`, calendar ``"none"``).

Everything session-aware (time-of-day windows, session-close exits, vwap resets, the synthetic
sample data) reads the same table. Its arrays are read-only so that one table can be shared by
threads and cached without copies.

For example::

    >>> import datetime
    >>> table = from_calendar("XNYS", datetime.date(2024, 7, 1), datetime.date(2024, 7, 8),
    ...                       "America/New_York")
    >>> [str(d) for d in table.dates]
    ['2024-07-01', '2024-07-02', '2024-07-03', '2024-07-05', '2024-07-08']
"""

from __future__ import annotations

import datetime
import difflib
import functools
import warnings
import zoneinfo
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit

NO_CALENDAR = "none"
"""The calendar name that means: infer one session per local date from the bars."""

FX_WEEK = "24/5"
"""Sunday 17:00 to Friday 17:00 America/New_York, the trading day rolling at 17:00."""

_NEW_YORK = "America/New_York"
_EVENING_ROLL = datetime.time(17, 0)   # FX value-date roll and CME Globex's daily halt

_DAY_NS = 86_400_000_000_000
_HOUR_NS = 3_600_000_000_000
_NAT = np.iinfo(np.int64).min


@dataclass(frozen=True)
class SessionTable:
    """Trading sessions in chronological order.

    `dates` are the trading days (``datetime64[D]``, strictly increasing): the session's date in
    its calendar, which for a session opening the evening before (``24/5``, ``us_futures``) is
    the day it closes on. `open_ns` and `close_ns` are the UTC epoch nanoseconds of each
    session's open and close (a half-day's close is its early close). A bar stamped at its open
    `t` belongs to session `i` when ``open_ns[i] <= t < close_ns[i]``, unless it lies in that
    session's break ``break_start_ns[i] <= t < break_end_ns[i]`` (XHKG's lunch; both equal to
    the close where there is none). Sessions never overlap.
    """

    timezone: str
    calendar: str
    dates: np.ndarray
    open_ns: np.ndarray
    close_ns: np.ndarray
    break_start_ns: np.ndarray | None = None   # None: no session has a break
    break_end_ns: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.dates)

    def locate(self, timestamp_ns: np.ndarray) -> np.ndarray:
        """Session index (int32) of each UTC-ns timestamp, or -1 where it lies in no session.

        The open is inclusive and the close exclusive: a bar stamped exactly at a session's close
        is outside it. Vectorised (one `searchsorted`); `timestamp_ns` need not be sorted.

        For example, with one session from 100 to 200: ``locate([99, 100, 199, 200])`` is
        ``[-1, 0, 0, -1]``.
        """
        timestamp_ns = np.ascontiguousarray(timestamp_ns, dtype=np.int64)
        index = _locate_nb(np.ascontiguousarray(self.open_ns, dtype=np.int64),
                           np.ascontiguousarray(self.close_ns, dtype=np.int64), timestamp_ns)
        if self.break_start_ns is not None:
            inside = index >= 0
            at, where = timestamp_ns[inside], index[inside]
            inside[inside] = (at < self.break_start_ns[where]) | (at >= self.break_end_ns[where])
            index[~inside] = -1
        return index

    @functools.cached_property
    def utc_offsets_ns(self) -> tuple[np.ndarray, np.ndarray]:
        """Local-minus-UTC offset (ns) of each session at its open and just before its close.

        Computed once per table (one time-zone conversion per session, not per bar); the two
        differ only for a session that spans a DST change.
        """
        return (local_wall_ns(self.open_ns, self.timezone) - self.open_ns,
                local_wall_ns(self.close_ns - 1, self.timezone) - (self.close_ns - 1))

    def slice(self, start: int, stop: int) -> SessionTable:
        """Sessions ``[start, stop)`` as a new table (views, no copies)."""
        breaks = (None, None) if self.break_start_ns is None else (
            self.break_start_ns[start:stop], self.break_end_ns[start:stop])
        return SessionTable(
            self.timezone,
            self.calendar,
            self.dates[start:stop],
            self.open_ns[start:stop],
            self.close_ns[start:stop],
            *breaks,
        )


def check_timezone(timezone: str) -> str:
    """Return `timezone` if it is an IANA time-zone name; ValueError with the fix otherwise."""
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(
            f"unknown timezone {timezone!r} (use an IANA name such as America/New_York, "
            "Europe/London or UTC)"
        ) from None
    return timezone


def from_calendar(
    calendar: str, start: datetime.date, end: datetime.date, timezone: str
) -> SessionTable:
    """The sessions of exchange `calendar` whose dates lie in ``[start, end]`` (inclusive).

    `calendar` is an `exchange_calendars` name or alias (``XNYS``, ``XLON``, ``NYSE``...). Opens
    and closes, including half-days, holidays and breaks, come from that library, except for two
    calendars whose trading day rolls in the evening, where the library's hours are not the
    market's: ``24/5`` is the FX week, each weekday's session running from 17:00 New York the
    evening before to 17:00 (Monday's opens Sunday 17:00, Friday's closes the week); and
    ``us_futures`` keeps the library's days and Sunday-evening opens (18:00 New York) but closes
    at 17:00, CME Globex's daily halt, instead of 18:00. `timezone` is recorded
    on the table (it is the zone the caller reads naive timestamps in; usually the exchange's).
    An unknown calendar or a date range the calendar cannot cover raises ValueError saying how
    to fix it. Results are cached: repeated calls with the same arguments are cheap.
    """
    check_timezone(timezone)
    start, end = _as_date(start), _as_date(end)
    if end < start:
        raise ValueError(f"calendar range ends ({end}) before it starts ({start})")
    if calendar == FX_WEEK:
        dates, open_ns, close_ns = _fx_week_arrays(start, end)
        return SessionTable(timezone, calendar, dates, open_ns, close_ns)
    dates, open_ns, close_ns, break_start, break_end = _calendar_sessions(calendar, start, end)
    return SessionTable(timezone, calendar, dates, open_ns, close_ns, break_start, break_end)


def _calendar_sessions(
    calendar: str, start: datetime.date, end: datetime.date
) -> tuple:
    """The sessions of ``[start, end]`` (dates, opens, closes, and break starts and ends or
    None), sliced from a calendar built for whole years: building one costs ~1-2 s (exchange_calendars evaluates every holiday rule over its range), and bars
    of the same years with other first or last days (a symbol selection, a slice, the next
    chunk of a sweep) would otherwise each build their own. The cached calendar grows to the
    whole years of every range asked for; a calendar that cannot cover those (its first or
    last supported day falls inside them) is built for the exact range instead."""
    cached = _WHOLE_YEARS.get(calendar)
    if cached is None or not (cached[0] <= start and end <= cached[1]):
        first = datetime.date(start.year, 1, 1)
        last = datetime.date(end.year, 12, 31)
        if cached is not None:
            first, last = min(first, cached[0]), max(last, cached[1])
        try:
            cached = (first, last, _calendar_arrays(calendar, first, last))
        except ValueError:
            return _calendar_arrays(calendar, start, end)
        _WHOLE_YEARS[calendar] = cached
    dates = cached[2][0]
    rows = slice(int(np.searchsorted(dates, np.datetime64(start, "D"), side="left")),
                 int(np.searchsorted(dates, np.datetime64(end, "D"), side="right")))
    return tuple(None if column is None else column[rows] for column in cached[2])


# calendar name -> (first day, last day, its sessions): the widest calendar built so far
_WHOLE_YEARS: dict[str, tuple[datetime.date, datetime.date, tuple]] = {}


def infer(timestamp_ns: np.ndarray, timezone: str, bar_ns: int,
          day_starts: datetime.time | None = None) -> SessionTable:
    """Sessions inferred from bars (calendar ``"none"``): one per trading day present.

    The trading day rolls at local midnight, or at `day_starts`: with ``17:00`` a bar from
    17:00 on belongs to the next date's session (a roll from noon on names the trading day by the
    date it ends on, as FX does; one before noon by the date it starts on). Each session opens
    at its day's first bar and closes at its last bar plus `bar_ns` (or at the next session's
    open, if sooner), so every given bar (stamped at its open) locates to its own day's session.
    `timestamp_ns` are UTC epoch ns in any order; wall-clock times are taken in `timezone`.
    """
    check_timezone(timezone)
    timestamp_ns = np.asarray(timestamp_ns, dtype=np.int64)
    if len(timestamp_ns) == 0:
        empty = np.empty(0, dtype=np.int64)
        return SessionTable(timezone, NO_CALENDAR, np.empty(0, "datetime64[D]"), empty, empty)
    days = trading_days(timestamp_ns, timezone, day_starts)
    unique_days, inverse = np.unique(days, return_inverse=True)
    open_ns = np.full(len(unique_days), np.iinfo(np.int64).max, dtype=np.int64)
    close_ns = np.full(len(unique_days), np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(open_ns, inverse, timestamp_ns)
    np.maximum.at(close_ns, inverse, timestamp_ns)
    close_ns += np.int64(bar_ns)
    close_ns[:-1] = np.minimum(close_ns[:-1], open_ns[1:])
    return SessionTable(
        timezone, NO_CALENDAR, _readonly(unique_days.astype("datetime64[D]")),
        _readonly(open_ns), _readonly(close_ns),
    )


def trading_days(timestamp_ns: np.ndarray, timezone: str,
                 day_starts: datetime.time | None = None) -> np.ndarray:
    """Trading day of each UTC-ns timestamp when the day rolls at local `day_starts` (None:
    midnight), as int64 days since 1970-01-01: the date the day ends on for a roll from noon on
    (FX: Sunday 17:00 starts Monday), the date it starts on otherwise. For example, with
    ``datetime.time(17)`` in New York, Friday 16:59 is Friday and Sunday 17:00 is Monday."""
    if day_starts is None:
        return local_days(timestamp_ns, timezone)
    roll = (day_starts.hour * 60 + day_starts.minute) * 60_000_000_000
    if roll >= _DAY_NS // 2:
        roll -= _DAY_NS
    return (local_wall_ns(timestamp_ns, timezone) - roll) // _DAY_NS


def local_days(timestamp_ns: np.ndarray, timezone: str) -> np.ndarray:
    """Local calendar day of each UTC-ns timestamp in `timezone`, as int64 days since 1970-01-01."""
    return local_wall_ns(timestamp_ns, timezone) // _DAY_NS


def local_wall_ns(timestamp_ns: np.ndarray, timezone: str) -> np.ndarray:
    """Local wall-clock time of each UTC-ns timestamp in `timezone`, as naive epoch ns (int64).

    Equal to pandas' ``tz_localize("UTC").tz_convert(timezone)``; see `_offsets_by_hour` for
    how it avoids converting every timestamp.
    """
    timestamp_ns = np.asarray(timestamp_ns, dtype=np.int64)
    table = _offsets_by_hour(timestamp_ns, functools.partial(_utc_offsets, timezone=timezone))
    if table is None:
        return _pandas_wall_ns(timestamp_ns, timezone)
    offsets, changing = table
    wall = timestamp_ns + offsets
    if changing.any():
        wall[changing] = _pandas_wall_ns(timestamp_ns[changing], timezone)
    return wall


def utc_from_wall_ns(wall_ns: np.ndarray, timezone: str) -> np.ndarray | None:
    """UTC epoch ns of naive wall-clock ns in `timezone`, or None when one of them does not
    exist or is ambiguous (the clocks skip or repeat it at a DST change): the caller then says
    which. Equal to pandas' ``tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")``."""
    wall_ns = np.asarray(wall_ns, dtype=np.int64)
    table = _offsets_by_hour(wall_ns, functools.partial(_wall_offsets, timezone=timezone))
    if table is None:
        utc = _pandas_utc_ns(wall_ns, timezone)
        return None if (utc == _NAT).any() else utc
    offsets, changing = table
    utc = wall_ns - offsets
    if changing.any():
        exact = _pandas_utc_ns(wall_ns[changing], timezone)
        if (exact == _NAT).any():
            return None
        utc[changing] = exact
    return utc


def _as_date(value: datetime.date | str) -> datetime.date:
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    return datetime.date.fromisoformat(str(value))


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@functools.lru_cache(maxsize=64)
def _calendar_arrays(
    calendar: str, start: datetime.date, end: datetime.date
) -> tuple:
    import exchange_calendars as xcals  # slow import; only paid when a calendar is used

    names = xcals.get_calendar_names(include_aliases=True)
    if calendar not in names:
        close = difflib.get_close_matches(str(calendar), names, n=3)
        suggestion = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(
            f"unknown calendar {calendar!r} ({suggestion}use an exchange_calendars name such as "
            "XNYS, XNAS, XLON, XTKS, or 'none' to infer sessions from the bars)"
        )
    try:
        with warnings.catch_warnings():
            # exchange_calendars 4.x uses pandas APIs that pandas 3 deprecates; not ours to fix.
            warnings.simplefilter("ignore", DeprecationWarning)
            exchange = xcals.get_calendar(
                calendar, start=pd.Timestamp(start), end=pd.Timestamp(end)
            )
    except Exception as exc:  # the library raises several types for out-of-bounds dates
        raise ValueError(
            f"calendar {calendar!r} cannot cover {start}..{end}: {exc} (narrow the date range, "
            "or use calendar 'none' to infer sessions from the bars)"
        ) from None
    schedule = exchange.schedule
    dates = schedule.index.to_numpy().astype("datetime64[D]")
    open_ns = pd.DatetimeIndex(schedule["open"]).as_unit("ns").asi8.copy()
    close_ns = pd.DatetimeIndex(schedule["close"]).as_unit("ns").asi8.copy()
    if calendar == "us_futures":
        close_ns = np.minimum(close_ns, _wall_clock_ns(dates, _EVENING_ROLL, _NEW_YORK))
    break_start = break_end = None
    if "break_start" in schedule and schedule["break_start"].notna().any():
        no_break = schedule["break_start"].isna().to_numpy()
        break_start = pd.DatetimeIndex(schedule["break_start"]).as_unit("ns").asi8.copy()
        break_end = pd.DatetimeIndex(schedule["break_end"]).as_unit("ns").asi8.copy()
        break_start[no_break] = close_ns[no_break]
        break_end[no_break] = close_ns[no_break]
        break_start, break_end = _readonly(break_start), _readonly(break_end)
    return _readonly(dates), _readonly(open_ns), _readonly(close_ns), break_start, break_end


@functools.lru_cache(maxsize=64)
def _fx_week_arrays(start: datetime.date, end: datetime.date):
    """Every weekday in ``[start, end]``, opening 17:00 New York the day before, closing 17:00."""
    days = np.arange(np.datetime64(start, "D"), np.datetime64(end, "D") + 1)
    dates = days[np.is_busday(days)]
    close_ns = _wall_clock_ns(dates, _EVENING_ROLL, _NEW_YORK)
    open_ns = _wall_clock_ns(dates - 1, _EVENING_ROLL, _NEW_YORK)
    return _readonly(dates.astype("datetime64[D]")), _readonly(open_ns), _readonly(close_ns)


def _wall_clock_ns(dates: np.ndarray, time: datetime.time, timezone: str) -> np.ndarray:
    """UTC ns of wall-clock `time` in `timezone` on each of `dates` (``datetime64[D]``)."""
    offset = np.timedelta64(time.hour * 60 + time.minute, "m")
    local = pd.DatetimeIndex(dates.astype("datetime64[D]") + offset)
    return local.tz_localize(timezone).tz_convert("UTC").as_unit("ns").asi8.copy()


@njit(cache=True, nogil=True)
def _locate_nb(open_ns: np.ndarray, close_ns: np.ndarray, timestamp_ns: np.ndarray) -> np.ndarray:
    """`SessionTable.locate` in one pass: ``searchsorted(open_ns, t, "right") - 1``, then -1
    where ``t >= close_ns`` of that session. Bars come in time order, so each search first
    tries the previous bar's session and the one after it."""
    n = len(open_ns)
    out = np.empty(len(timestamp_ns), dtype=np.int32)
    index = -1
    for i in range(len(timestamp_ns)):
        t = timestamp_ns[i]
        if not (index >= 0 and open_ns[index] <= t and (index + 1 == n or t < open_ns[index + 1])):
            if index + 1 < n and open_ns[index + 1] <= t and (
                    index + 2 == n or t < open_ns[index + 2]):
                index += 1
            else:
                low, high = 0, n          # first open > t, by bisection
                while low < high:
                    middle = (low + high) // 2
                    if open_ns[middle] <= t:
                        low = middle + 1
                    else:
                        high = middle
                index = low - 1
        out[i] = index if index >= 0 and t < close_ns[index] else -1
    return out


def _offsets_by_hour(stamps: np.ndarray, offset_of) -> tuple[np.ndarray, np.ndarray] | None:
    """Each stamp's time-zone offset, read from a table of one offset per hour instead of
    converting every stamp (pandas converts ~5-10M stamps/s; bars come 60 or more per hour).

    `offset_of(starts)` gives the offset at each of the given instants, `_NAT` where there is
    none. An hour whose first and last nanosecond have the same valid offset has it throughout
    (a time-zone transition changes the offset, and no zone has two within one hour); stamps in
    any other hour are flagged in the returned mask for the caller to convert one by one.
    Returns None when a table would not pay: no stamps, or more hours spanned than stamps.
    """
    if len(stamps) == 0:
        return None
    stamps = np.ascontiguousarray(stamps, dtype=np.int64)
    first, last = _hour_span_nb(stamps)
    if last - first + 1 > len(stamps):
        return None
    edges = np.arange(first, last + 2, dtype=np.int64) * _HOUR_NS
    at_start, at_end = offset_of(edges[:-1]), offset_of(edges[1:] - 1)
    steady = (at_start == at_end) & (at_start != _NAT)
    return _read_hour_table_nb(stamps, first, at_start, steady)


@njit(cache=True, nogil=True)
def _hour_span_nb(stamps: np.ndarray) -> tuple[int, int]:
    """First and last hour (floor of stamp / 1 h) of non-empty `stamps`."""
    first = last = stamps[0] // _HOUR_NS
    for i in range(1, len(stamps)):
        hour = stamps[i] // _HOUR_NS
        first, last = min(first, hour), max(last, hour)
    return first, last


@njit(cache=True, nogil=True)
def _read_hour_table_nb(stamps: np.ndarray, first: int, offsets: np.ndarray,
                        steady: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each stamp's hour's offset, and whether that hour is not steady."""
    out = np.empty(len(stamps), dtype=np.int64)
    changing = np.empty(len(stamps), dtype=np.bool_)
    for i in range(len(stamps)):
        hour = stamps[i] // _HOUR_NS - first
        out[i] = offsets[hour]
        changing[i] = not steady[hour]
    return out, changing


def _pandas_wall_ns(timestamp_ns: np.ndarray, timezone: str) -> np.ndarray:
    index = pd.DatetimeIndex(np.asarray(timestamp_ns, dtype=np.int64).view("datetime64[ns]"))
    return index.tz_localize("UTC").tz_convert(timezone).tz_localize(None).asi8


def _pandas_utc_ns(wall_ns: np.ndarray, timezone: str) -> np.ndarray:
    """`_NAT` where the wall time does not exist or is ambiguous."""
    wall = pd.DatetimeIndex(np.asarray(wall_ns, dtype=np.int64).view("datetime64[ns]"))
    return wall.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT").as_unit("ns").asi8


def _utc_offsets(utc_ns: np.ndarray, timezone: str) -> np.ndarray:
    return _pandas_wall_ns(utc_ns, timezone) - utc_ns


def _wall_offsets(wall_ns: np.ndarray, timezone: str) -> np.ndarray:
    utc = _pandas_utc_ns(wall_ns, timezone)
    return np.where(utc == _NAT, _NAT, wall_ns - utc)
