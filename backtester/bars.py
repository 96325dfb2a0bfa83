"""Bar sources: read CSV/Parquet bars, validate them, and hand back NumPy arrays per symbol.

This is the only module that reads bar files. `load_bars` opens a file or a folder of files;
`from_frame` takes a pandas DataFrame. Both apply the same rules and return a `BarSet`: one
`SymbolBars` per symbol (UTC-ns open stamps, float64 OHLCV, session index) plus the
`SessionTable` the bars were checked against.

Accepted layouts:

* long format: columns ``timestamp, symbol, open, high, low, close, volume`` (any case;
  ``datetime``, ``date`` or ``time`` also name the timestamp column);
* one file per symbol: the same columns without ``symbol``; the symbol is the file stem
  (``SYNA.parquet`` holds SYNA).

A folder may hold several files (read in name order, e.g. one per month or per symbol); rows of
one symbol must be in time order across them.

Timestamps with a UTC offset (or a time-zone-aware Parquet type) are exact instants; naive ones
are wall-clock times in the `timezone` argument. With ``bar_stamp="close"`` the file stamps each
bar at its close and the bars are shifted back by one bar interval, so `SymbolBars.timestamp` is
always the bar's open.

Every rule broken raises `DataError` naming the file, the 1-based data row in that file (header
excluded), the column and the rule, and is detected before anything is returned. The checks are
vectorised; only the first offending row (in file order) is looked up for the message.
"""

from __future__ import annotations

import csv
import ctypes
import datetime
import functools
import hashlib
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from numba import njit

from backtester import sessions as sessions_module
from backtester.errors import DataError
from backtester.sessions import SessionTable

__all__ = ["BarSet", "DataFile", "SymbolBars", "check_source", "from_frame", "load_bars"]

TIMESTAMP_ALIASES = ("timestamp", "datetime", "date", "time")
PRICE_COLUMNS = ("open", "high", "low", "close")
VALUE_COLUMNS = (*PRICE_COLUMNS, "volume")
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst")
PARQUET_SUFFIXES = (".parquet", ".pq")
BAR_STAMPS = ("open", "close")
HOLIDAY_BAR_POLICIES = ("error", "drop")
DEFAULT_BAR_NS = 60_000_000_000
_DAY_NS = 86_400_000_000_000
_SESSION_BAR_NS = 20 * 3_600_000_000_000
"""Bars spaced at least this far apart (daily, weekly; a DST night is 23 hours) are each one
session's bar (`plan.SESSION_BAR_NS` is the same bound)."""
"""Bar interval assumed when a source has too few bars to measure one (a single bar)."""

_OUTSIDE_HINT = "use calendar: none for data outside exchange hours"
_OFFSET_PATTERN = r"[T ]\d.*(Z|[+-]\d\d(:?\d\d)?)$"


@dataclass(frozen=True)
class SymbolBars:
    """One symbol's bars in time order.

    `timestamp` is the UTC epoch ns of each bar's open (strictly increasing); `open`, `high`,
    `low`, `close`, `volume` are contiguous float64 arrays; `session` is the int32 index of each
    bar's session in the owning `BarSet.sessions`.
    """

    symbol: str
    timestamp: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    session: np.ndarray

    def __len__(self) -> int:
        return len(self.timestamp)

    def slice(self, start: int, stop: int) -> SymbolBars:
        """Rows ``[start, stop)`` as zero-copy views (same rules as Python slicing)."""
        rows = slice(start, stop)
        return SymbolBars(
            self.symbol,
            self.timestamp[rows],
            self.open[rows],
            self.high[rows],
            self.low[rows],
            self.close[rows],
            self.volume[rows],
            self.session[rows],
        )


@dataclass(frozen=True)
class DataFile:
    """Provenance of one source file: its path, number of data rows and SHA-256 of its bytes."""

    path: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class BarSet:
    """Validated bars of every selected symbol, with the sessions they were checked against.

    `bars` is ordered by symbol name; `bar_ns` is the bar interval (the most common spacing of
    consecutive bars within a session); `files` lists the sources read.
    """

    bars: dict[str, SymbolBars]
    sessions: SessionTable
    timezone: str
    bar_ns: int
    files: tuple[DataFile, ...]
    holiday_bars_dropped: dict[str, int] = field(default_factory=dict)
    """Bars on dates that are no session of the calendar, dropped per symbol
    (``on_holiday_bars="drop"``)."""

    @property
    def symbols(self) -> tuple[str, ...]:
        """Symbol names, sorted."""
        return tuple(self.bars)

    @property
    def n_bars(self) -> int:
        """Total number of bars over all symbols."""
        return sum(len(bars) for bars in self.bars.values())


def load_bars(
    path: str | os.PathLike,
    *,
    timezone: str,
    calendar: str = "XNYS",
    symbols: Sequence[str] | None = None,
    start: datetime.date | None = None,
    end: datetime.date | None = None,
    bar_stamp: str = "open",
    day_starts: datetime.time | None = None,
    on_holiday_bars: str = "error",
) -> BarSet:
    """Read and validate the bars in `path` (a CSV/Parquet file or a folder of them).

    `timezone` is the exchange's IANA zone: naive timestamps are read in it and session dates
    are local to it. `calendar` is an `exchange_calendars` name (``XNYS``) or ``"none"`` to infer
    one session per local date from the bars. `symbols` selects symbols (default: all; each must
    exist). `start` and `end` are inclusive session dates. `bar_stamp` says whether the file
    stamps bars at their ``"open"`` or their ``"close"``. With calendar ``"none"``, `day_starts`
    (a local time, default midnight) is when the trading day rolls: bars from 17:00 on belong to
    the next date's session with ``datetime.time(17)``; a roll from noon on names the trading day
    by the date it ends on, one before noon by the date it starts on.

    Bars of a day or longer (daily, weekly: the most common spacing is a day or more) are each
    one session's bar, whatever time of day they are stamped at (vendors stamp daily bars at
    midnight): a daily bar belongs to the session of the date it is stamped with (under an
    exchange calendar that date must be a session), a longer bar to the first session on or
    after its date (``bar_stamp="open"``) or the last on or before it (``"close"``). Such a
    bar's timestamp becomes its session's open; it is never moved to another date.

    Returns a `BarSet` whose sessions span the first to the last selected bar's session; a
    symbol with no bars between `start` and `end` is left out of `BarSet.bars`. Raises
    `DataError` for a bad file (naming file, row and column) and ValueError for bad arguments.
    Parquet reads only the needed columns and pushes the symbol and date selection down to the
    reader. For example::

        bars = load_bars("data/sample/bars_1min.parquet", timezone="America/New_York",
                         symbols=["SYNA"], start=datetime.date(2024, 3, 1))
        bars.bars["SYNA"].close  # float64 array
    """
    selection = _Selection.make(timezone, calendar, symbols, start, end, bar_stamp, day_starts,
                                on_holiday_bars)
    source = os.fspath(path)
    files = _list_files(source)
    parts = [part for file in files if (part := _read_file(file, selection)) is not None]
    provenance = tuple(_describe_file(file) for file in files)
    barset = _assemble(parts, selection, source, provenance, lambda: _available_symbols(files))
    release_freed_memory()
    return barset


def release_freed_memory() -> None:
    """Hand memory that reading freed back to the operating system.

    Reading goes through Arrow buffers and per-file copies that are freed once the bars are
    assembled, but pyarrow's allocator and glibc's malloc keep freed pages for reuse: without
    this, a process holding 240 MB of bars kept about 630 MB after loading them (the scaling
    benchmark's memory table), which counts against the memory of every run that follows.
    A no-op where glibc is not the C library.
    """
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def check_source(path: str | os.PathLike) -> list[str]:
    """The bar files `path` names (itself, or a folder's), after checking what can be checked
    without reading the bars: it exists, the files are CSV or Parquet, and each has the required
    columns. Raises `DataError` like `load_bars`. For example::

        check_source("data/sample/bars_1min.parquet")   # ['data/sample/bars_1min.parquet']
    """
    return [file.path for file in _list_files(os.fspath(path))]


def from_frame(
    frame: pd.DataFrame,
    *,
    timezone: str,
    calendar: str = "XNYS",
    source: str = "<frame>",
    symbols: Sequence[str] | None = None,
    start: datetime.date | None = None,
    end: datetime.date | None = None,
    bar_stamp: str = "open",
    day_starts: datetime.time | None = None,
    on_holiday_bars: str = "error",
) -> BarSet:
    """Validate a long-format DataFrame of bars exactly as `load_bars` validates a file.

    `frame` needs the columns ``timestamp`` (or a DatetimeIndex), ``symbol``, ``open``,
    ``high``, ``low``, ``close``, ``volume``; `source` names it in error messages, whose row
    numbers are 1-based positions in `frame`. The other arguments are those of `load_bars`.
    """
    selection = _Selection.make(timezone, calendar, symbols, start, end, bar_stamp, day_starts,
                                on_holiday_bars)
    columns = {str(name).lower(): name for name in frame.columns}
    if not any(alias in columns for alias in TIMESTAMP_ALIASES) and isinstance(
        frame.index, pd.DatetimeIndex
    ):
        frame = frame.reset_index(names="timestamp")
    mapping = _resolve_columns([str(name) for name in frame.columns], source, need_symbol=True)
    fast = _part_from_frame(frame, source, mapping, selection)
    if fast is not None:
        part, available_symbols = fast
        return _assemble([part], selection, source,
                         (DataFile(source, len(frame), _frame_digest(part)),), available_symbols)
    table = _frame_to_table(frame)
    available = table[mapping["symbol"]]
    if selection.symbols is not None:
        keep = pc.is_in(pc.cast(available, pa.string()), pa.array(selection.symbols, pa.string()))
        positions = np.flatnonzero(keep.to_numpy(zero_copy_only=False))
        table = table.take(positions)
    else:
        positions = None
    part = _part_from_table(table, source, mapping, None, selection, _row_mapper(positions))
    digest = _frame_digest(part)
    provenance = (DataFile(source, len(frame), digest),)
    return _assemble(
        [part], selection, source, provenance,
        lambda: sorted(set(pc.unique(pc.cast(available, pa.string())).to_pylist()) - {None}),
    )


# --------------------------------------------------------------------------------------------
# Internals: arguments, files, reading, validation, assembly.


@dataclass(frozen=True)
class _Selection:
    timezone: str
    calendar: str
    symbols: tuple[str, ...] | None
    start: datetime.date | None
    end: datetime.date | None
    bar_stamp: str
    day_starts: datetime.time | None = None
    on_holiday_bars: str = "error"

    @staticmethod
    def make(timezone, calendar, symbols, start, end, bar_stamp,
             day_starts: datetime.time | None = None,
             on_holiday_bars: str = "error") -> _Selection:
        sessions_module.check_timezone(timezone)
        if on_holiday_bars not in HOLIDAY_BAR_POLICIES:
            raise ValueError(f"on_holiday_bars must be 'error' or 'drop', got {on_holiday_bars!r}")
        if bar_stamp not in BAR_STAMPS:
            raise ValueError(f"bar_stamp must be 'open' or 'close', got {bar_stamp!r}")
        calendar = sessions_module.NO_CALENDAR if calendar is None else str(calendar)
        if calendar.lower() == sessions_module.NO_CALENDAR:
            calendar = sessions_module.NO_CALENDAR
        elif day_starts is not None:
            raise ValueError(f"day_starts applies to calendar 'none' only ({calendar} sets "
                             "its own trading day)")
        if isinstance(symbols, str):
            symbols = [symbols]
        if symbols is not None:
            symbols = tuple(dict.fromkeys(str(symbol) for symbol in symbols))
            if not symbols:
                raise ValueError("symbols is empty (leave it out to read every symbol)")
        start = _as_date(start, "start")
        end = _as_date(end, "end")
        if start is not None and end is not None and end < start:
            raise ValueError(f"end ({end}) is before start ({start})")
        return _Selection(timezone, calendar, symbols, start, end, bar_stamp, day_starts,
                          on_holiday_bars)


def _as_date(value, name: str) -> datetime.date | None:
    if value is None or (isinstance(value, datetime.date) and not isinstance(
            value, datetime.datetime)):
        return value
    try:
        return pd.Timestamp(value).date()
    except (ValueError, TypeError):
        raise ValueError(f"{name} must be a date like 2024-01-02, got {value!r}") from None


@dataclass(frozen=True)
class _File:
    path: str
    kind: str  # "csv" | "parquet"
    columns: dict[str, str]  # canonical name -> name in the file
    stem_symbol: str | None  # the symbol when the file has no symbol column


@dataclass
class _Part:
    """Rows read from one file, converted but not yet validated across files."""

    source: str
    columns: dict[str, str]
    names: list[str]  # symbol names; `codes` index them
    codes: np.ndarray
    timestamp: np.ndarray  # int64 UTC ns, as stamped in the file
    values: dict[str, np.ndarray]  # VALUE_COLUMNS -> float64
    file_row: Callable[[int], int]  # position in this part -> 1-based row in the file

    def __post_init__(self) -> None:
        self.rows = len(self.codes)

    def __len__(self) -> int:
        return self.rows


def _file_kind(path: str) -> str | None:
    lower = path.lower()
    if lower.endswith(CSV_SUFFIXES):
        return "csv"
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def _stem(path: str) -> str:
    name = os.path.basename(path)
    for suffix in (*CSV_SUFFIXES, *PARQUET_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _list_files(source: str) -> list[_File]:
    if os.path.isdir(source):
        names = sorted(
            name for name in os.listdir(source)
            if not name.startswith((".", "_")) and _file_kind(name) is not None
        )
        if not names:
            raise DataError(
                source, "no CSV or Parquet files in this folder (expected *.csv or *.parquet)"
            )
        paths = [os.path.join(source, name) for name in names]
    elif os.path.exists(source):
        if _file_kind(source) is None and os.path.isfile(source):
            raise DataError(
                source, f"unknown file type '{Path(source).suffix}' (use .csv or .parquet, or "
                "a folder of them)"
            )
        paths = [source]
    else:
        raise DataError(source, "no such file or folder")
    files = []
    for path in paths:
        if not os.path.isfile(path):   # a FIFO or device would block or never end
            raise DataError(path, "not a regular file (a FIFO, device or socket cannot be "
                            "read as bars; copy the data into a file)")
        kind = _file_kind(path)
        names = _csv_header(path) if kind == "csv" else _parquet_columns(path)
        columns = _resolve_columns(names, path, need_symbol=False)
        stem = None if "symbol" in columns else _stem(path)
        files.append(_File(path, kind, columns, stem))
    return files


def _csv_header(path: str) -> list[str]:
    try:
        with pa.input_stream(path, compression="detect") as stream:
            head = stream.read(1 << 16)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(path, f"cannot read file: {exc}") from None
    if head.startswith(b"\x1f\x8b"):
        raise DataError(path, "is gzip-compressed but not named .gz (rename it to "
                        f"{os.path.basename(path)}.gz, or decompress it)")
    if b"\x00" in head:
        raise DataError(path, "is binary, not CSV text (expected a header row and bars)")
    first_line = head.decode("utf-8-sig", errors="replace").splitlines()[:1]
    if not first_line:
        raise DataError(path, "file is empty (expected a header row and bars)")
    return next(csv.reader(io.StringIO(first_line[0])))


def _excerpt(names: Sequence[str], width: int = 120) -> str:
    """Column names as an error quotes them: escaped, each and all of them cut short."""
    shown = []
    for name in names:
        text = ascii(str(name))[1:-1]
        shown.append(text if len(text) <= 30 else text[:27] + "...")
    text = ", ".join(shown) or "none"
    return text if len(text) <= width else text[:width - 3] + "..."


def _parquet_columns(path: str) -> list[str]:
    try:
        return list(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(path, f"cannot read Parquet file: {exc}") from None


def _resolve_columns(names: Sequence[str], source: str, need_symbol: bool) -> dict[str, str]:
    """Map canonical column names to the source's spelling; DataError if any is missing."""
    by_lower: dict[str, str] = {}
    for name in names:
        key = str(name).strip().lower()
        if key in by_lower and key in (*TIMESTAMP_ALIASES, "symbol", *VALUE_COLUMNS):
            raise DataError(source, f"a second {key} column (found: {_excerpt(names)}; "
                            "keep one, as either could be read)", column=name)
        by_lower.setdefault(key, name)
    columns: dict[str, str] = {}
    timestamp = next((alias for alias in TIMESTAMP_ALIASES if alias in by_lower), None)
    if timestamp is not None:
        columns["timestamp"] = by_lower[timestamp]
    for name in ("symbol", *VALUE_COLUMNS):
        if name in by_lower:
            columns[name] = by_lower[name]
    required = ("timestamp", "symbol", *VALUE_COLUMNS) if need_symbol else (
        "timestamp", *VALUE_COLUMNS)
    missing = [name for name in required if name not in columns]
    if missing:
        found = _excerpt(names)
        raise DataError(
            source,
            f"missing required column(s) {', '.join(missing)} (found: {found}; expected "
            "timestamp, symbol, open, high, low, close, volume, with symbol optional in a "
            "one-file-per-symbol layout)",
            column=missing[0],
        )
    return columns


def _read_file(file: _File, selection: _Selection) -> _Part | None:
    """Read one file's selected rows; None when the file holds no selected symbol."""
    if file.stem_symbol is not None and selection.symbols is not None:
        if file.stem_symbol not in selection.symbols:
            return None
    if file.kind == "csv":
        table = _read_csv(file)
        positions = None
        if selection.symbols is not None and "symbol" in file.columns:
            keep = pc.is_in(
                pc.cast(table[file.columns["symbol"]], pa.string()),
                pa.array(selection.symbols, pa.string()),
            )
            positions = np.flatnonzero(keep.to_numpy(zero_copy_only=False))
            table = table.take(positions)
        file_row = _row_mapper(positions)
    else:
        table, row_filter = _read_parquet(file, selection)
        file_row = _row_mapper(None) if row_filter is None else _lazy_row_mapper(
            file, row_filter)
    if table.num_rows == 0:
        return None
    return _part_from_table(table, file.path, file.columns, file.stem_symbol, selection,
                            file_row)


def _read_csv(file: _File) -> pa.Table:
    wanted = list(file.columns.values())
    types = {file.columns["symbol"]: pa.string()} if "symbol" in file.columns else {}
    attempts = [types, dict.fromkeys(wanted, pa.string())]
    for column_types in attempts:
        options = pa_csv.ConvertOptions(
            include_columns=wanted, column_types=column_types, strings_can_be_null=True
        )
        try:
            return pa_csv.read_csv(file.path, convert_options=options)
        except pa.ArrowInvalid as exc:
            if str(exc).startswith("CSV parse error"):
                raise _csv_parse_error(file.path, exc) from None
            error = exc  # a value a later block cannot convert: retry as text, checked below
        except (OSError, pa.ArrowException) as exc:
            raise DataError(file.path, f"cannot read CSV file: {exc}") from None
    raise DataError(file.path, f"cannot read CSV file: {error}")


def _csv_parse_error(path: str, exc: Exception) -> DataError:
    """Arrow's parse errors quote the row but not its place: find the first row whose field
    count differs from the header's and name it (data row and file line)."""
    try:
        with pa.input_stream(path, compression="detect") as stream:
            text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
            reader = csv.reader(text)
            header = next(reader, [])
            row = 0
            line = reader.line_num + 1
            for fields in reader:
                if fields:   # Arrow skips empty lines; they are not rows
                    row += 1
                    if len(fields) != len(header):
                        return DataError(path, f"{len(fields)} fields where the header has "
                                         f"{len(header)} (line {line} of the file)", row=row)
                line = reader.line_num + 1
    except (OSError, csv.Error, pa.ArrowException):
        pass
    return DataError(path, f"cannot read CSV file: {str(exc).splitlines()[0]}")


def _read_parquet(file: _File, selection: _Selection) -> tuple[pa.Table, pc.Expression | None]:
    try:
        schema = pq.read_schema(file.path)
        row_filter = None
        if selection.symbols is not None and "symbol" in file.columns:
            symbol_field = pc.field(file.columns["symbol"])
            row_filter = symbol_field.isin(list(selection.symbols))
        time_filter = _time_window(schema.field(file.columns["timestamp"]).type, selection,
                                   file.columns["timestamp"])
        if time_filter is not None:
            row_filter = time_filter if row_filter is None else row_filter & time_filter
        table = pq.read_table(file.path, columns=list(file.columns.values()), filters=row_filter)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(file.path, f"cannot read Parquet file: {exc}") from None
    return table, row_filter


def _time_window(kind: pa.DataType, selection: _Selection, name: str) -> pc.Expression | None:
    """A conservative pushdown filter for start/end; the exact cut is made on session dates."""
    if not pa.types.is_timestamp(kind) or (selection.start is None and selection.end is None):
        return None
    field = pc.field(name)
    window = None
    # Two days either side covers any UTC offset, a close-stamp shift and overnight sessions.
    if selection.start is not None:
        low = datetime.datetime.combine(selection.start, datetime.time()) - datetime.timedelta(2)
        window = field >= pa.scalar(low, type=kind)
    if selection.end is not None:
        high = datetime.datetime.combine(selection.end, datetime.time()) + datetime.timedelta(3)
        upper = field < pa.scalar(high, type=kind)
        window = upper if window is None else window & upper
    return window


def _row_mapper(positions: np.ndarray | None) -> Callable[[int], int]:
    if positions is None:
        return lambda position: int(position) + 1
    return lambda position: int(positions[position]) + 1


def _lazy_row_mapper(file: _File, row_filter: pc.Expression) -> Callable[[int], int]:
    """Row numbers of a filtered Parquet read, recomputed only when an error needs one."""

    def file_row(position: int) -> int:
        names = sorted({ref for ref in (file.columns.get("symbol"), file.columns["timestamp"])
                        if ref is not None})
        table = pq.read_table(file.path, columns=names)
        table = table.append_column("__row", pa.array(np.arange(table.num_rows)))
        return int(table.filter(row_filter)["__row"][position].as_py()) + 1

    return file_row


def _part_from_frame(
    frame: pd.DataFrame, source: str, columns: dict[str, str], selection: _Selection
) -> tuple[_Part, Callable[[], list[str]]] | None:
    """What `_part_from_table(_frame_to_table(frame), ...)` returns, without the round trip
    through Arrow, for the dtypes bars usually come in: categorical or string symbols,
    datetime64 timestamps (naive or tz-aware), integer or float values. Returns None for
    anything else, or for a missing symbol or timestamp: the Arrow path then converts it, or
    says what is wrong with it. Also returns the `available` callable `_assemble` wants."""
    if not frame.columns.is_unique or len({str(c) for c in frame.columns}) != frame.shape[1]:
        return None
    by_name = {str(name): name for name in frame.columns}

    def column(key: str) -> pd.Series:
        return frame[by_name[columns[key]]]

    symbols = _symbol_labels(column("symbol"))
    stamps = column("timestamp")
    if symbols is None or stamps.dtype.kind != "M":
        return None
    labels, raw_codes = symbols
    values = {}
    for name in VALUE_COLUMNS:
        series = column(name)
        if not isinstance(series.dtype, np.dtype) or series.dtype.kind not in "fiu":
            return None
        array = series.to_numpy()
        if array.dtype.kind in "iu" and len(array) and (
                array.max() > _EXACT_INTEGER or array.min() < -_EXACT_INTEGER):
            return None   # Arrow's checked cast decides what happens to those
        values[name] = np.ascontiguousarray(array, dtype=np.float64)
    index = pd.DatetimeIndex(stamps)
    if index.hasnans:
        return None
    try:
        timestamp = index.as_unit("ns").asi8
    except (OverflowError, ValueError):
        return None

    def available() -> list[str]:
        return sorted({labels[code] for code in pd.unique(raw_codes)})

    positions = None
    if selection.symbols is not None:
        wanted = np.isin(np.asarray(labels, dtype=object), np.asarray(selection.symbols,
                                                                       dtype=object))
        positions = np.flatnonzero(wanted[raw_codes])
        raw_codes, timestamp = raw_codes[positions], timestamp[positions]
        values = {name: array[positions] for name, array in values.items()}
    # Symbols numbered in order of first appearance, as Arrow's dictionary_encode does.
    seen = pd.unique(raw_codes)
    renumber = np.zeros(len(labels), dtype=np.int32)
    renumber[seen] = np.arange(len(seen), dtype=np.int32)
    codes = renumber[raw_codes]
    file_row = _row_mapper(positions)
    if index.tz is None:
        timestamp = _localize(timestamp, selection.timezone, source, columns["timestamp"],
                              file_row)
    names = [labels[code] for code in seen]
    return _Part(source, columns, names, codes, timestamp, values, file_row), available


_EXACT_INTEGER = 2**53   # every integer up to here is exact in float64


def _symbol_labels(series: pd.Series) -> tuple[list[str], np.ndarray] | None:
    """(label of each code, code of each row) for a categorical or text column of strings;
    None when a value is missing or not a string."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        labels = list(series.cat.categories)
        codes = series.cat.codes.to_numpy()
    elif series.dtype == object or isinstance(series.dtype, pd.StringDtype):
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        labels = list(uniques)
    else:
        return None
    if (len(codes) and codes.min() < 0) or not all(isinstance(x, str) for x in labels):
        return None
    return [str(label) for label in labels], codes


def _frame_to_table(frame: pd.DataFrame) -> pa.Table:
    arrays, names = [], []
    for name in frame.columns:
        column = frame[name]
        try:
            array = pa.array(column, from_pandas=True)
        except (pa.ArrowException, TypeError, ValueError):
            # Mixed object columns (numbers and text): keep as text, reported row by row below.
            array = pa.array(column.astype(object).where(column.notna(), None).astype(str)
                             .where(column.notna(), None), from_pandas=True)
        arrays.append(array)
        names.append(str(name))
    return pa.table(arrays, names=names)


def _part_from_table(
    table: pa.Table,
    source: str,
    columns: dict[str, str],
    stem_symbol: str | None,
    selection: _Selection,
    file_row: Callable[[int], int],
) -> _Part:
    if stem_symbol is None:
        names, codes = _symbol_codes(table[columns["symbol"]], source, columns["symbol"],
                                     file_row)
    else:
        names, codes = [stem_symbol], np.zeros(table.num_rows, dtype=np.int32)
    timestamp = _timestamps_utc_ns(
        table[columns["timestamp"]], selection.timezone, source, columns["timestamp"], file_row
    )
    values = {
        name: _as_float64(table[columns[name]], source, columns[name], file_row)
        for name in VALUE_COLUMNS
    }
    return _Part(source, columns, names, codes, timestamp, values, file_row)


def _symbol_codes(column: pa.ChunkedArray, source: str, name: str, file_row) -> tuple:
    column = pc.cast(column, pa.string())
    if column.null_count:
        first = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
        raise DataError(source, "missing symbol", row=file_row(first), column=name)
    encoded = pc.dictionary_encode(column).combine_chunks()
    return encoded.dictionary.to_pylist(), encoded.indices.to_numpy().astype(np.int32)


def _timestamps_utc_ns(
    column: pa.ChunkedArray, timezone: str, source: str, name: str, file_row
) -> np.ndarray:
    """UTC epoch ns of each timestamp; naive values are wall-clock times in `timezone`."""
    if column.null_count:
        first = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
        raise DataError(source, "missing timestamp", row=file_row(first), column=name)
    kind = column.type
    if pa.types.is_timestamp(kind):
        instants = pc.cast(column, pa.timestamp("ns", kind.tz)).to_numpy()
        values = np.ascontiguousarray(instants).view(np.int64)
        if kind.tz is not None:
            return values
        return _localize(values, timezone, source, name, file_row)
    if pa.types.is_date(kind):
        days = pc.cast(pc.cast(column, pa.date32()), pa.int32()).to_numpy().astype(np.int64)
        return _localize(days * 86_400_000_000_000, timezone, source, name, file_row)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(
            kind):
        return _parse_timestamp_text(pc.cast(column, pa.string()), timezone, source, name,
                                     file_row)
    raise DataError(
        source, f"timestamps must be dates and times, got {kind} (write ISO 8601 like "
        "2024-01-02 09:30:00 or 2024-01-02T14:30:00Z)", column=name,
    )


def _parse_timestamp_text(column, timezone, source, name, file_row) -> np.ndarray:
    with_offset = pc.match_substring_regex(column, _OFFSET_PATTERN).to_numpy(
        zero_copy_only=False)
    aware = bool(with_offset[0])
    if (with_offset != aware).any():
        first = int(np.argmax(with_offset != aware))
        raise DataError(
            source, "timestamps mix values with and without a UTC offset (write all of them "
            "one way)", row=file_row(first), column=name,
        )
    text = column.to_pandas()
    parsed = pd.to_datetime(text, format="ISO8601", utc=aware, errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(
            source, f"cannot parse timestamp {text.iloc[first]!r} (write ISO 8601 like "
            "2024-01-02 09:30:00 or 2024-01-02T14:30:00Z)", row=file_row(first), column=name,
        )
    values = pd.DatetimeIndex(parsed).as_unit("ns").asi8
    return values if aware else _localize(values, timezone, source, name, file_row)


def _localize(wall_ns: np.ndarray, timezone: str, source, name, file_row) -> np.ndarray:
    """UTC ns of naive wall-clock ns in `timezone`; DataError on DST-ambiguous/missing times."""
    utc = sessions_module.utc_from_wall_ns(wall_ns, timezone)
    if utc is not None:
        return utc
    wall = pd.DatetimeIndex(wall_ns.view("datetime64[ns]"))
    local = wall.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    bad = local.isna()
    if bad.any():
        first = int(np.argmax(bad))
        moment = wall[first : first + 1]
        shifted = moment.tz_localize(timezone, ambiguous=np.array([True]), nonexistent="NaT")
        reason = (
            "does not exist (the clocks skip it at the DST change)" if shifted.isna()[0]
            else "is ambiguous (it occurs twice at the DST change)"
        )
        raise DataError(
            source, f"naive timestamp {moment[0]} {reason} in {timezone} (write timestamps "
            "with a UTC offset, or in UTC with timezone: UTC)", row=file_row(first), column=name,
        )
    return local.as_unit("ns").asi8


def _as_float64(column: pa.ChunkedArray, source: str, name: str, file_row) -> np.ndarray:
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return np.ascontiguousarray(pc.cast(column, pa.float64()).to_numpy(), dtype=np.float64)
    if pa.types.is_null(kind):
        return np.full(len(column), np.nan)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(
            kind):
        text = pc.cast(column, pa.string()).to_pandas()
        numbers = pd.to_numeric(text, errors="coerce")
        bad = (numbers.isna() & text.notna()).to_numpy()
        if bad.any():
            first = int(np.argmax(bad))
            raise DataError(source, f"{text.iloc[first]!r} is not a number",
                            row=file_row(first), column=name)
        return np.ascontiguousarray(numbers.to_numpy(dtype=np.float64, na_value=np.nan))
    raise DataError(source, f"must be numeric, got {kind}", column=name)


def _describe_file(file: _File) -> DataFile:
    stat = os.stat(file.path)
    return _describe_cached(file.path, file.kind, stat.st_size, stat.st_mtime_ns)


_DESCRIPTIONS: dict[tuple, DataFile] = {}


def _describe_cached(path: str, kind: str, size: int, mtime_ns: int) -> DataFile:
    key = (os.path.abspath(path), size, mtime_ns)
    if key not in _DESCRIPTIONS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if kind == "parquet":
            rows = pq.ParquetFile(path).metadata.num_rows
        else:
            rows = _count_csv_rows(path)
        _DESCRIPTIONS[key] = DataFile(path, rows, digest.hexdigest())
    return _DESCRIPTIONS[key]


def _count_csv_rows(path: str) -> int:
    table = pa_csv.read_csv(
        path, convert_options=pa_csv.ConvertOptions(include_columns=[], column_types={})
    )
    return table.num_rows


def _frame_digest(part: _Part) -> str:
    digest = hashlib.sha256()
    digest.update("\0".join(part.names).encode())
    for array in (part.codes, part.timestamp, *part.values.values()):
        digest.update(np.ascontiguousarray(array).view(np.uint8))   # the bytes, not a copy
    return digest.hexdigest()


def _available_symbols(files: Sequence[_File]) -> list[str]:
    found: set[str] = set()
    for file in files:
        if file.stem_symbol is not None:
            found.add(file.stem_symbol)
            continue
        name = file.columns["symbol"]
        if file.kind == "csv":
            column = pa_csv.read_csv(file.path, convert_options=pa_csv.ConvertOptions(
                include_columns=[name], column_types={name: pa.string()}))[name]
        else:
            column = pq.read_table(file.path, columns=[name])[name]
        found.update(pc.unique(pc.cast(column, pa.string())).to_pylist())
    found.discard(None)
    return sorted(found)


def _assemble(
    parts: list[_Part],
    selection: _Selection,
    source: str,
    files: tuple[DataFile, ...],
    available: Callable[[], list[str]],
) -> BarSet:
    """Concatenate the parts, validate every rule, attach sessions and split by symbol.

    Consumes `parts`: the list is emptied so that its arrays are freed once copied.
    """
    names = sorted({name for part in parts for name in part.names})
    if selection.symbols is not None:
        missing = [symbol for symbol in selection.symbols if symbol not in names]
        listed = available() if missing else []
        # A symbol may exist but have no rows in the pushed-down date window.
        missing = [symbol for symbol in missing if symbol not in listed]
        if missing:
            shown = ", ".join(listed[:50]) + (" ..." if len(listed) > 50 else "")
            raise DataError(
                source, f"symbol(s) {', '.join(missing)} not in the source (available: "
                f"{shown or 'none'})", column="symbol",
            )
    if not parts:
        if selection.start is not None or selection.end is not None:
            raise DataError(source, f"no bars between {selection.start or 'the start'} and "
                            f"{selection.end or 'the end'}")
        raise DataError(source, "no bars (the source has a header but no rows)")
    data = _Concatenated(parts, names)
    del parts[:]  # the caller's list: the parts' arrays now live in `data`
    if len(data.codes) < 2 or bool((data.codes[1:] >= data.codes[:-1]).all()):
        # Already grouped by symbol (one file per symbol, or a long file sorted by symbol):
        # the identity order (None: built only if an error message needs it), without copying
        # every column.
        order = None
        sorted_codes, sorted_stamps = data.codes, data.timestamp
        in_order = True
    else:
        order = np.argsort(data.codes, kind="stable")
        sorted_codes = data.codes[order]
        sorted_stamps = data.timestamp[order]
        in_order = False
    _check_values(data)
    _check_order(data, order, sorted_codes, sorted_stamps, names, selection.timezone)

    bar_ns = _bar_interval(sorted_codes, sorted_stamps, selection.timezone)
    file_stamps = sorted_stamps
    if bar_ns >= _SESSION_BAR_NS:
        table, session = _sessions_for_session_bars(sorted_stamps, selection, bar_ns)
        if selection.calendar != sessions_module.NO_CALENDAR:
            sorted_stamps = np.where(session >= 0, table.open_ns[np.maximum(session, 0)],
                                     sorted_stamps)
    else:
        if selection.bar_stamp == "close":
            sorted_stamps = sorted_stamps - bar_ns
        table, session = _sessions_for(sorted_stamps, selection, bar_ns)
    outside = session < 0
    keep = None
    dropped: dict[str, int] = {}
    if outside.any():
        holiday = _holiday_bars(outside, sorted_stamps, table, selection, bar_ns)
        if (outside & ~holiday).any():
            _raise_outside(data, order, outside & ~holiday, file_stamps, table, selection,
                           bar_ns, names, sorted_codes)
        if holiday.all():
            raise DataError(source, f"every bar falls on a date that is no {selection.calendar} "
                            "session (check data.calendar and data.timezone)")
        counts = np.bincount(sorted_codes[holiday], minlength=len(names))
        dropped = {name: int(counts[code]) for code, name in enumerate(names) if counts[code]}
        keep = ~holiday

    if selection.start is not None or selection.end is not None:
        dates = table.dates[np.maximum(session, 0)]
        keep = np.ones(len(session), dtype=bool) if keep is None else keep
        if selection.start is not None:
            keep &= dates >= np.datetime64(selection.start, "D")
        if selection.end is not None:
            keep &= dates <= np.datetime64(selection.end, "D")
        if not keep.any():
            raise DataError(
                source, f"no bars between {selection.start or 'the start'} and "
                f"{selection.end or 'the end'} (the bars cover {table.dates[session[session >= 0].min()]} "
                f"to {table.dates[session.max()]})",
            )
    first_session, last_session = (
        (int(session.min()), int(session.max())) if keep is None
        else (int(session[keep].min()), int(session[keep].max()))
    )
    table = table.slice(first_session, last_session + 1)
    session = (session - first_session).astype(np.int32)

    columns = {"timestamp": sorted_stamps, "session": session}
    for name in VALUE_COLUMNS:
        columns[name] = data.values[name] if in_order else data.values[name][order]
    if keep is not None:
        sorted_codes = sorted_codes[keep]
        columns = {name: array[keep] for name, array in columns.items()}
    # Searching with the codes' own dtype: an int64 needle would convert all of them first.
    bounds = np.searchsorted(sorted_codes, np.arange(len(names) + 1, dtype=sorted_codes.dtype))
    bars: dict[str, SymbolBars] = {}
    for code, name in enumerate(names):
        low, high = bounds[code], bounds[code + 1]
        if high > low:
            bars[name] = SymbolBars(name, **{key: array[low:high]
                                             for key, array in columns.items()})
    return BarSet(bars, table, selection.timezone, int(bar_ns), files,
                  {name: count for name, count in dropped.items() if name in bars})


class _Concatenated:
    """All parts end to end, in file order, with a way back to (file, row)."""

    def __init__(self, parts: list[_Part], names: list[str]):
        self.parts = list(parts)  # `_assemble` empties the list it was given
        self.offsets = np.cumsum([0, *(len(part) for part in parts)])
        lookup = np.asarray(names, dtype=object)
        self.codes = np.concatenate([
            np.searchsorted(lookup, np.asarray(part.names, dtype=object))[part.codes]
            .astype(np.int32) for part in parts
        ])
        # Column by column, freeing each part's copy as soon as it is concatenated, so that
        # reading holds about one extra column, not a second copy of every bar.
        for part in parts:
            part.codes = None
        self.timestamp = np.concatenate([part.timestamp for part in parts])
        for part in parts:
            part.timestamp = None
        self.values = {}
        for name in VALUE_COLUMNS:
            self.values[name] = np.concatenate([part.values.pop(name) for part in parts])
            release_freed_memory()

    def locate(self, index: int) -> tuple[_Part, int]:
        """The part holding concatenated row `index`, and its 1-based row in that file."""
        which = int(np.searchsorted(self.offsets, index, side="right") - 1)
        part = self.parts[which]
        return part, part.file_row(index - int(self.offsets[which]))

    def fail(self, index: int, column: str, message: str) -> None:
        part, row = self.locate(index)
        raise DataError(part.source, message, row=row, column=part.columns[column])


def _check_values(data: _Concatenated) -> None:
    """NaN/inf, positivity and high/low consistency; raises for the earliest bad row (and, in
    that row, for the first rule in the order of `_first_bad_value_nb`)."""
    open_, high, low, close, volume = (data.values[name] for name in VALUE_COLUMNS)
    index, rule = _first_bad_value_nb(open_, high, low, close, volume)
    if index < 0:
        return
    if rule < 2 * len(PRICE_COLUMNS):
        column = PRICE_COLUMNS[rule // 2]
        value = data.values[column][index]
        message = (f"price is {value} (OHLC must be finite numbers; drop or fill the row)"
                   if rule % 2 == 0 else f"price {value:g} is not positive")
    elif rule == 8:
        column = "high"
        message = f"high {high[index]:g} is below max(open, close) " \
                  f"{max(open_[index], close[index]):g}"
    elif rule == 9:
        column = "low"
        message = f"low {low[index]:g} is above min(open, close) " \
                  f"{min(open_[index], close[index]):g}"
    else:
        column = "volume"
        message = f"volume is {volume[index]:g} (it must be a number >= 0; write 0 for no trades)"
    data.fail(index, column, message)


@njit(cache=True, nogil=True)
def _first_bad_value_nb(open_, high, low, close, volume) -> tuple[int, int]:
    """(row, rule) of the first row breaking a rule, or (-1, -1). Rules, checked in this
    order within a row: for open, high, low, close in turn, 2k: not finite and 2k + 1: not
    positive; 8: high below max(open, close); 9: low above min(open, close); 10: volume not a
    finite number >= 0. (A row reaching rule 8 has four finite prices.)"""
    for i in range(len(open_)):
        prices = (open_[i], high[i], low[i], close[i])
        for k in range(4):
            if not np.isfinite(prices[k]):
                return i, 2 * k
            if prices[k] <= 0:
                return i, 2 * k + 1
        if high[i] < max(open_[i], close[i]):
            return i, 8
        if low[i] > min(open_[i], close[i]):
            return i, 9
        if not (np.isfinite(volume[i]) and volume[i] >= 0):
            return i, 10
    return -1, -1


def _check_order(data, order, sorted_codes, sorted_stamps, names, timezone) -> None:
    """Each symbol's timestamps must strictly increase in file order."""
    same_symbol = sorted_codes[1:] == sorted_codes[:-1]
    bad = same_symbol & (sorted_stamps[1:] <= sorted_stamps[:-1])
    if not bad.any():
        return
    order = np.arange(len(sorted_codes)) if order is None else order
    later = order[1:][bad]
    pick = int(np.argmin(later))
    index, previous = int(later[pick]), int(order[:-1][bad][pick])
    previous_part, previous_row = data.locate(previous)
    part, _ = data.locate(index)
    where = f"row {previous_row}" if previous_part is part else (
        f"{previous_part.source} row {previous_row}")
    stamp = pd.Timestamp(int(data.timestamp[index]), tz="UTC").tz_convert(timezone)
    symbol = names[int(data.codes[index])]
    if data.timestamp[index] == data.timestamp[previous]:
        message = f"duplicate timestamp {stamp} for {symbol} (also at {where})"
    else:
        message = (
            f"timestamp {stamp} for {symbol} is not after the previous bar at {where} "
            "(sort the bars by symbol and time)"
        )
    data.fail(index, "timestamp", message)


def _bar_interval(sorted_codes: np.ndarray, sorted_stamps: np.ndarray, timezone: str) -> int:
    """Most common spacing of consecutive bars of one symbol on one local date (the smallest
    of equally common ones); of one symbol on any dates when no date has two bars."""
    if len(sorted_stamps) < 2:
        return DEFAULT_BAR_NS
    days = sessions_module.local_days(sorted_stamps, timezone)
    within = _gaps_nb(sorted_codes, sorted_stamps, days, True)
    if len(within) == 0:
        within = _gaps_nb(sorted_codes, sorted_stamps, days, False)  # daily bars
    if len(within) == 0:
        return DEFAULT_BAR_NS
    candidate, count = _majority_nb(within)
    if 2 * count > len(within):
        return int(candidate)   # more than half the gaps: the mode, with no tie possible
    counts = pd.Series(within).value_counts(sort=False)
    return int(counts.index[(counts == counts.max()).to_numpy()].min())


@njit(cache=True, nogil=True)
def _majority_nb(values: np.ndarray) -> tuple[int, int]:
    """Boyer-Moore vote over non-empty `values`: the value held by more than half of them if
    there is one (else any value), and how many hold it."""
    candidate, votes = values[0], 0
    for value in values:
        if votes == 0:
            candidate = value
        votes += 1 if value == candidate else -1
    count = 0
    for value in values:
        count += value == candidate
    return candidate, count


@njit(cache=True, nogil=True)
def _gaps_nb(codes: np.ndarray, stamps: np.ndarray, days: np.ndarray,
             same_day: bool) -> np.ndarray:
    """Gaps between consecutive stamps of the same symbol (and, with `same_day`, the same
    local day), in order."""
    out = np.empty(max(0, len(stamps) - 1), dtype=np.int64)
    n = 0
    for i in range(1, len(stamps)):
        if codes[i] == codes[i - 1] and (not same_day or days[i] == days[i - 1]):
            out[n] = stamps[i] - stamps[i - 1]
            n += 1
    return out[:n]


def _sessions_for(stamps: np.ndarray, selection: _Selection, bar_ns: int):
    if selection.calendar == sessions_module.NO_CALENDAR:
        table = sessions_module.infer(stamps, selection.timezone, bar_ns, selection.day_starts)
    else:
        first, last = sessions_module.local_days(
            np.array([stamps.min(), stamps.max()]), selection.timezone)
        one_day = datetime.timedelta(days=1)
        # A day either side: some calendars' sessions start on the previous local date.
        table = sessions_module.from_calendar(
            selection.calendar,
            _day_to_date(first) - one_day,
            _day_to_date(last) + one_day,
            selection.timezone,
        )
    return table, table.locate(stamps)


def _sessions_for_session_bars(stamps: np.ndarray, selection: _Selection, bar_ns: int):
    """Sessions of bars a day or longer, by the local date each is stamped with (see
    `load_bars`); -1 where that date is no session (a daily bar on a holiday)."""
    if selection.calendar == sessions_module.NO_CALENDAR:
        table = sessions_module.infer(stamps, selection.timezone, bar_ns)
        return table, table.locate(stamps)
    days = sessions_module.local_days(stamps, selection.timezone)
    span = max(1, int(bar_ns // _DAY_NS))
    table = sessions_module.from_calendar(
        selection.calendar, _day_to_date(days.min()) - datetime.timedelta(days=span),
        _day_to_date(days.max()) + datetime.timedelta(days=span), selection.timezone)
    dates = table.dates.astype(np.int64)
    if span < 7:   # daily: the session of that very date
        index = np.minimum(np.searchsorted(dates, days), len(dates) - 1)
        found = dates[index] == days
    elif selection.bar_stamp == "open":   # weekly or longer, named by its first day
        index = np.minimum(np.searchsorted(dates, days), len(dates) - 1)
        found = (dates[index] >= days) & (dates[index] < days + span)
    else:   # named by its last day
        index = np.searchsorted(dates, days, side="right") - 1
        found = (index >= 0) & (dates[np.maximum(index, 0)] > days - span)
    return table, np.where(found, index, -1).astype(np.int32)


def _holiday_bars(outside: np.ndarray, stamps: np.ndarray, table: SessionTable,
                  selection: _Selection, bar_ns: int) -> np.ndarray:
    """Where `outside` bars are to be dropped as holiday bars: with ``on_holiday_bars="drop"``
    and an exchange calendar, the bars outside every session whose local date is no session
    date (a daily bar outside every session is on such a date by construction). Bars outside
    the hours of a session date are never dropped: they stay errors."""
    if selection.on_holiday_bars != "drop" or selection.calendar == sessions_module.NO_CALENDAR:
        return np.zeros(len(outside), dtype=bool)
    if bar_ns >= _SESSION_BAR_NS:
        return outside.copy()
    days = sessions_module.local_days(stamps[outside], selection.timezone)
    holiday = outside.copy()
    holiday[outside] = ~np.isin(days, table.dates.astype(np.int64))
    return holiday


def _day_to_date(day: int) -> datetime.date:
    return datetime.date(1970, 1, 1) + datetime.timedelta(days=int(day))


def _raise_outside(data, order, outside, file_stamps, table, selection, bar_ns, names, codes):
    """The first bar (in file order) outside every session, quoted as the file stamps it."""
    order = np.arange(len(codes)) if order is None else order
    pick = int(np.argmin(order[outside]))
    index = int(order[outside][pick])
    stamp = int(file_stamps[outside][pick])
    symbol = names[int(codes[outside][pick])]
    local = pd.Timestamp(stamp, tz="UTC").tz_convert(selection.timezone)
    if bar_ns >= _SESSION_BAR_NS:
        written = str(local.date()) if local == local.normalize() else str(local.tz_localize(None))
        kind = "daily bar" if bar_ns < 7 * _DAY_NS else "bar"
        data.fail(index, "timestamp",
                  f"{kind} {written} ({symbol}) falls on no {selection.calendar} session "
                  f"(a holiday or weekend: drop the row, or use calendar: none)")
    opening = stamp - bar_ns if selection.bar_stamp == "close" else stamp
    hint = _OUTSIDE_HINT
    if selection.bar_stamp == "open" and table.locate(np.array([stamp - bar_ns]))[0] >= 0:
        hint = "if the file stamps bars at their close, use bar_stamp: close; otherwise " + hint
    in_break = table.break_start_ns is not None and bool(
        ((table.break_start_ns <= opening) & (opening < table.break_end_ns)).any())
    where = f"in a {selection.calendar} session's break" if in_break else \
        f"outside every {selection.calendar} session"
    stamped = "stamped at its close " if selection.bar_stamp == "close" else ""
    data.fail(index, "timestamp",
              f"bar at {local.tz_localize(None)} {stamped}({symbol}) is {where} ({hint})")
