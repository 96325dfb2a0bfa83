"""Write a run's outputs atomically: alerts, forward returns, trades, summary, timing, manifest.

Everything goes into a temporary sibling folder first and is renamed into place only when
complete, so a run that fails (or is interrupted) leaves the previous results untouched and no
partial folder behind. Floats are written with Python's shortest round-trip repr, so a CSV reads
back bit-identical.

Ownership: every results folder carries `MARKER`, a dot-file saying what wrote it, and only a
folder with it is ever replaced (`check_target`); one run at a time writes a folder
(`results_lock`); what a killed run left beside it is swept by the next (`sweep_results_leftovers`).
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import datetime as dt
import errno
import fcntl
import functools
import io
import json
import logging
import os
import platform
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from numba import njit

from .errors import BacktestError, FolderBusy, OutputError

ALERT_COLUMNS = ["timestamp", "symbol", "alert", "close"]
TRADE_COLUMNS = ["alert", "symbol", "signal_time", "entry_time", "entry_price", "exit_time",
                 "exit_price", "reason", "bars_held", "return", "gross_return", "mfe", "mae",
                 "both_touched"]


def write_frame(frame: pd.DataFrame, folder: Path, stem: str, columns: list[str]) -> None:
    """`stem`.csv and `stem`.parquet in `folder`, both written by Arrow from one table built
    once from `frame` (no per-row Python); an empty frame still gets its header (`columns`)."""
    if frame.empty and not len(frame.columns):
        frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    # Arrow releases the GIL: the Parquet file is written while the CSV text is formatted.
    with ThreadPoolExecutor(max_workers=1) as pool:
        parquet = pool.submit(pq.write_table, table, folder / f"{stem}.parquet")
        write_csv(table, folder / f"{stem}.csv")
        parquet.result()


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """`frame` as one Parquet file, by Arrow, without its index."""
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


_NEEDS_QUOTES = r'[",\r\n]'


def write_csv(table: pa.Table, path: Path) -> None:
    """`table` as CSV, formatted as pandas' ``to_csv(index=False)`` writes it, by Arrow's
    vectorised writer (about 10x faster than pandas on hundreds of thousands of rows).

    Times as ``2024-01-02 09:31:00-05:00`` (fractions only where a value has one), flags as
    ``True``/``False``, missing values (NaN, NaT, null) as empty fields, floats as their shortest
    round-trip digits (reading them back gives the same double; integral values keep ``.0``,
    so a column reads back as float; very small or large magnitudes may use an exponent where
    Python's repr would not, or the reverse). Fields are quoted only where they hold a quote, a
    comma or a line break, as the header is (by the `csv` module).
    """
    names = table.column_names
    columns = [_csv_column(table.column(i)) for i in range(table.num_columns)]
    # Text columns hold few distinct values (symbols, alert names, exit reasons): look at those.
    quote = any((pa.types.is_string(c.type) or pa.types.is_large_string(c.type))
                and pc.any(pc.match_substring_regex(pc.unique(c), _NEEDS_QUOTES)).as_py()
                for c in columns)
    text = pa.table(columns, names=[f"c{i}" for i in range(len(columns))])
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(names)
    with open(path, "wb") as handle:
        handle.write(header.getvalue().encode("utf-8"))
        if text.num_rows:
            pa_csv.write_csv(text, handle, pa_csv.WriteOptions(
                include_header=False, quoting_style="needed" if quote else "none"))


def _csv_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """One column as CSV text (or as a type Arrow's writer already prints like pandas)."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = pc.cast(column, kind.value_type), kind.value_type
    if pa.types.is_boolean(kind):
        return pc.if_else(column, "True", "False")
    if pa.types.is_floating(kind):
        return _float_text(column.to_numpy())   # nulls come back as NaN
    if pa.types.is_timestamp(kind):
        return _time_text(column)
    return column


# Arrow prints the same shortest round-trip digits as Python's repr, laid out differently:
# plain decimals from 1e-6 to 1e10 (repr: 1e-4 to 1e16), one-digit exponents ("e-7", repr
# "e-07"), and integral values without ".0". These rewrite Arrow's layout into repr's.
_REPR_LAYOUT = (
    (r"^(-?)0\.0000([1-9])$", r"\1\2e-05"), (r"^(-?)0\.0000([1-9])(\d+)$", r"\1\2.\3e-05"),
    (r"^(-?)0\.00000([1-9])$", r"\1\2e-06"), (r"^(-?)0\.00000([1-9])(\d+)$", r"\1\2.\3e-06"),
    (r"e([+-])(\d)$", r"e\10\2"),   # RE2: \1, then a literal 0
)


def _float_text(values: np.ndarray) -> pa.Array:
    """Floats as Python's repr writes them (what pandas' ``to_csv`` writes), NaN as an empty
    field, vectorised: Arrow's shortest round-trip text, with the layout rewritten by
    `_REPR_LAYOUT` on the values whose magnitude needs it. Values from 1e10 to 1e16 (rare in
    prices, returns and indicators) take repr itself."""
    text = pc.cast(pa.array(values, from_pandas=True), pa.string())
    magnitude = np.abs(values)
    finite = np.isfinite(values)
    integral = np.flatnonzero(finite & (values == np.floor(values)) & (magnitude < 1e10))
    if len(integral):
        text = _replace_at(text, integral,
                           pc.binary_join_element_wise(pc.take(text, integral), ".0", ""))
    odd = np.flatnonzero(finite & (magnitude > 0) & ((magnitude < 1e-4) | (magnitude >= 1e16)))
    if len(odd):
        shown = pc.take(text, odd)
        for pattern, replacement in _REPR_LAYOUT:
            shown = pc.replace_substring_regex(shown, pattern, replacement)
        text = _replace_at(text, odd, shown)
    large = np.flatnonzero(finite & (magnitude >= 1e10) & (magnitude < 1e16))
    if len(large):
        text = _replace_at(text, large, pa.array([repr(v) for v in values[large].tolist()]))
    return text


def _replace_at(text: pa.Array, positions: np.ndarray, values: pa.Array) -> pa.Array:
    mask = np.zeros(len(text), dtype=bool)
    mask[positions] = True
    return pc.replace_with_mask(text, pa.array(mask), values)


def _time_text(column: pa.ChunkedArray) -> pa.Array:
    """Timestamps as pandas writes them: exchange wall time, then the UTC offset for tz-aware
    columns (``2024-01-02 09:31:00-05:00``), with as many fraction digits (0, 3, 6, 9) as the
    column's most precise value needs. The offsets come from pandas' time-zone conversion, the
    text from one compiled pass (`_format_times_nb`)."""
    kind = column.type
    utc = pc.cast(pc.cast(column, pa.timestamp("ns", kind.tz)), pa.int64())
    valid = pc.is_valid(utc).to_numpy(zero_copy_only=False)
    utc_ns = utc.fill_null(0).to_numpy()
    wall_ns = utc_ns
    if kind.tz is not None:
        wall_ns = pd.DatetimeIndex(utc_ns.view("datetime64[ns]"), tz="UTC").tz_convert(
            kind.tz).tz_localize(None).asi8
    fraction = np.remainder(wall_ns[valid], 10**9)
    digits = next((d for d in (0, 3, 6) if not np.any(fraction % 10 ** (9 - d))), 9)
    width = 19 + (digits + 1 if digits else 0) + (6 if kind.tz is not None else 0)
    data = _format_times_nb(wall_ns, utc_ns, digits, kind.tz is not None, width)
    offsets = np.arange(len(utc_ns) + 1, dtype=np.int64) * width
    validity = None if valid.all() else pa.array(valid).buffers()[1]
    return pa.Array.from_buffers(pa.large_string(), len(utc_ns),
                                 [validity, pa.py_buffer(offsets), pa.py_buffer(data)])


@njit(cache=True, nogil=True)
def _format_times_nb(wall_ns, utc_ns, digits, with_offset, width):
    """``YYYY-MM-DD HH:MM:SS[.fff][+HH:MM]`` for each wall time, `width` bytes each (ASCII);
    the offset is wall minus UTC. Civil dates by Howard Hinnant's days-to-civil algorithm."""
    n = len(wall_ns)
    out = np.empty(n * width, dtype=np.uint8)
    for i in range(n):
        seconds = wall_ns[i] // 1_000_000_000
        fraction = wall_ns[i] - seconds * 1_000_000_000
        days = seconds // 86400
        second_of_day = seconds - days * 86400
        z = days + 719468
        era = z // 146097
        doe = z - era * 146097
        yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
        doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
        mp = (5 * doy + 2) // 153
        day = doy - (153 * mp + 2) // 5 + 1
        month = mp + 3 if mp < 10 else mp - 9
        year = yoe + era * 400 + (1 if month <= 2 else 0)
        at = i * width
        _digits_nb(out, at, year, 4)
        out[at + 4] = 45   # -
        _digits_nb(out, at + 5, month, 2)
        out[at + 7] = 45
        _digits_nb(out, at + 8, day, 2)
        out[at + 10] = 32  # space
        _digits_nb(out, at + 11, second_of_day // 3600, 2)
        out[at + 13] = 58  # :
        _digits_nb(out, at + 14, second_of_day // 60 % 60, 2)
        out[at + 16] = 58
        _digits_nb(out, at + 17, second_of_day % 60, 2)
        at += 19
        if digits:
            out[at] = 46   # .
            _digits_nb(out, at + 1, fraction // 10 ** (9 - digits), digits)
            at += digits + 1
        if with_offset:
            offset = (wall_ns[i] - utc_ns[i]) // 60_000_000_000
            out[at] = 43 if offset >= 0 else 45   # + -
            offset = abs(offset)
            _digits_nb(out, at + 1, offset // 60, 2)
            out[at + 3] = 58
            _digits_nb(out, at + 4, offset % 60, 2)
    return out


@njit(cache=True, nogil=True, inline="always")
def _digits_nb(out, at, value, size):
    """`value` as `size` zero-padded ASCII digits at ``out[at:at + size]``."""
    for j in range(size - 1, -1, -1):
        out[at + j] = 48 + value % 10
        value //= 10


def write_json(data: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n",
                    encoding="utf-8")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


# Every file a run (`api.write_outputs`), a golden update (`regress`) or a scaling report
# (`scaling.write_report`) puts in its folder, besides the ownership marker (`MARKER`).
RESULT_FOLDER_FILES = frozenset({
    "alerts.csv", "alerts.parquet", "forward.csv", "forward.parquet", "trades.csv",
    "trades.parquet", "summary.json", "summary.md", "timing.json", "timing.md", "manifest.json",
    "scaling.md", "scaling.svg", "scaling.json",
    "equity.parquet", "quality.json",
})
MARKER = ".backtester-results.json"
"""The dot-file in every folder `AtomicFolder` writes: what wrote it (``written_by``), and for a
run its id, process and host. A folder is replaced only when it holds this marker and nothing
but `RESULT_FOLDER_FILES`: file names alone (another tool's ``manifest.json`` and
``summary.json``) do not make a folder ours."""

_HOST = socket.gethostname()
# `.NAME.tmp-PID-XXXXXXXX`: a results folder being written by process PID; `.NAME.old-...`:
# earlier results moved aside while being replaced (only where the swap cannot be atomic).
_SIBLING = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}\Z")

log = logging.getLogger("backtester")


def owner_marker(written_by: str) -> dict[str, Any]:
    """The marker of a folder being written now by this process: `written_by` (such as
    ``"backtester run"``), a fresh run id, the process id, the host and the time."""
    return {"written_by": written_by, "run_id": secrets.token_hex(8), "pid": os.getpid(),
            "host": _HOST, "created": dt.datetime.now(dt.timezone.utc).isoformat()}


def read_marker(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The marker in `folder` when backtester wrote it (a JSON object whose ``written_by``
    starts with ``backtester``); None for anything else, a link or an unreadable file."""
    path = Path(folder) / MARKER
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 64 * 1024:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and str(data.get("written_by", "")).startswith("backtester"):
        return data
    return None


def check_target(target: str | os.PathLike, label: str, hint: str | None = None) -> Path:
    """The absolute path of `target` if a results folder may be written there; raise otherwise.

    A target may be created when its nearest existing parent is a folder this process can write
    in, and replaced only when it is empty or one of our results folders: it holds `MARKER`
    and nothing but files we write. Anything else (the user's folder, another tool's results,
    a plain file, a link) raises `BacktestError` naming `label` (``--out``,
    ``configs/x.yaml: output.dir``), the path and `hint`, before anything is written. For
    example::

        check_target("/tmp/notes", "--out")   # BacktestError if /tmp/notes holds notes.txt
    """
    hint = hint or "choose another results folder"
    shown = os.fspath(target)
    if not shown:
        raise BacktestError(f"{label}: no results folder given ({hint})")
    if "\x00" in shown:
        raise BacktestError(f"{label}: {shown[:80]!r}: a path cannot hold a NUL byte ({hint})")
    path = Path(os.path.abspath(shown))
    _check_name_lengths(path, shown, label, hint)

    def refuse(what: str, more_hint: str = "") -> BacktestError:
        return BacktestError(f"{label}: {shown}: {what} ({hint}{more_hint})")

    if path.parent == path:
        raise refuse("the filesystem root cannot be a results folder")
    if path.is_symlink():
        raise refuse("is a symbolic link; results replace their folder, not a link's target")
    if path.exists():
        if not path.is_dir():
            raise refuse("is a file, not a results folder; refusing to replace it")
        try:
            entries = sorted(os.listdir(path))
        except OSError as exc:
            raise refuse(f"cannot list this folder: {exc.strerror or exc}") from None
        foreign = [name + "/" * (path / name).is_dir() for name in entries
                   if (name not in RESULT_FOLDER_FILES and name != MARKER)
                   or (path / name).is_symlink() or not (path / name).is_file()]
        if foreign:
            listed = ", ".join(foreign[:3]) + \
                (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise refuse(f"exists and is not a backtester results folder (holds {listed}); "
                         f"refusing to replace it", ", or empty that folder first")
        if entries and read_marker(path) is None:
            raise refuse(f"exists and has no {MARKER} marker, so backtester did not write it "
                         f"(another tool's results, or an older backtester's, which wrote none); "
                         f"refusing to replace it", ", or empty that folder first")
    parent = path.parent
    while not parent.exists() and parent.parent != parent:
        parent = parent.parent
    if not parent.is_dir():
        raise refuse(f"{parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise refuse(f"no permission to write in {parent}")
    return path


def _check_name_lengths(path: Path, shown: str, label: str, hint: str) -> None:
    """Refuse names the file system cannot hold (checked before anything stats `path`, which
    would raise ENAMETOOLONG, and before the run rather than after it)."""
    existing = path.parent
    while not os.path.isdir(existing) and existing.parent != existing:
        existing = existing.parent
    try:
        longest = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        longest = 255
    # The temporary folder beside it adds `.` and `.tmp-PID-XXXXXXXX` to the name.
    too_long = [p.name for p in (path, *path.parents)
                if len(os.fsencode(p.name)) + (24 if p == path else 0) > longest]
    if too_long:
        raise BacktestError(f"{label}: {shown[:60]}...: the name {too_long[0][:20]}... is too "
                            f"long for this file system (at most {longest - 24} bytes for the "
                            f"results folder's own name, {longest} for its parents; {hint})")


# Lock files held by this process: path -> [file descriptor, owning thread, depth].
_LOCKS: dict[str, list[int]] = {}
_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def results_lock(target: str | os.PathLike, label: str = "results folder",
                 hint: str | None = None) -> Iterator[Path]:
    """Hold the lock of the results folder `target` for the block; a second run writing the
    same folder (another process, or another thread here) stops at once with `FolderBusy`.

    We stop rather than wait: a run that waited would replace the other run's results as soon
    as it finished, which is the silent "last writer wins" this lock exists to prevent. The lock
    is ``.NAME.lock`` beside the folder, held with ``flock``: the kernel releases it when its
    process dies, however it dies, so a killed run never leaves a folder locked. The file is
    removed on release (a run that finds it replaced after locking it starts over), and so are
    parent folders this made, when still empty. Re-entrant within one thread: `AtomicFolder`
    takes it too. For example::

        with results_lock("results/rsi", "--out"):
            ...   # FolderBusy: --out: results/rsi: another backtester run (pid 4242 ...) is ...
    """
    hint = hint or "choose another results folder"
    path = Path(os.path.abspath(os.fspath(target)))
    lock = path.with_name(f".{path.name}.lock")
    key, me = str(lock), threading.get_ident()
    with _LOCKS_GUARD:
        held = _LOCKS.get(key)
        if held is not None and held[1] != me:
            raise _busy(os.fspath(target), label, hint, f"pid {os.getpid()}, another thread")
        if held is not None:
            held[2] += 1
    if held is not None:
        try:
            yield path
        finally:
            with _LOCKS_GUARD:
                held[2] -= 1
        return
    made = _make_parents(path.parent, os.fspath(target), label, hint)
    try:
        fd = _acquire(lock, os.fspath(target), label, hint)
    except BaseException:
        _remove_empty(made)
        raise
    with _LOCKS_GUARD:
        _LOCKS[key] = [fd, me, 1]
    try:
        yield path
    finally:
        with _LOCKS_GUARD:
            del _LOCKS[key]
        try:
            os.unlink(lock)   # while still locked: a run that opened it meanwhile starts over
        except OSError:
            pass
        os.close(fd)
        _remove_empty(made)


def _acquire(lock: Path, shown: str, label: str, hint: str) -> int:
    for _ in range(50):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise BacktestError(f"{label}: {shown}: cannot create the lock file {lock.name} "
                                f"beside it: {exc.strerror or exc} ({hint})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise _busy(shown, label, hint, holder) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            current = os.stat(lock, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            try:
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(owner_marker("backtester")).encode())
            except OSError:
                pass   # the holder's details only improve the message a second run prints
            return fd
        os.close(fd)   # its holder removed it after we opened it: lock the new one
    raise _busy(shown, label, hint, "its lock file keeps changing")


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {int(info['pid'])} on {info['host']}, since {info['created'][:19]}"
    except (OSError, ValueError, KeyError, TypeError):
        return "details unknown"


def _busy(shown: str, label: str, hint: str, holder: str) -> FolderBusy:
    return FolderBusy(f"{label}: {shown}: another backtester run ({holder}) is writing this "
                      f"results folder; nothing was done (wait for it to finish, or {hint})")


def _make_parents(folder: Path, shown: str, label: str, hint: str) -> list[Path]:
    """Create `folder` and its missing parents; the ones made, outermost first."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    made = []
    try:
        for folder in reversed(missing):
            try:
                os.mkdir(folder)
            except FileExistsError:
                continue
            made.append(folder)
    except OSError as exc:
        _remove_empty(made)
        raise OutputError(f"{label}: {shown}: cannot create its parent folder {folder}: "
                          f"{why_not_written(exc)} ({hint}); nothing was written") from None
    return made


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            os.rmdir(folder)
        except OSError:
            return


def why_not_written(exc: OSError) -> str:
    """What an `OSError` while writing means, and what to do about it, in a few words."""
    reason = exc.strerror or str(exc)
    advice = {errno.ENOSPC: "free some space there", errno.EDQUOT: "free some of your quota",
              errno.EROFS: "the file system is mounted read-only",
              errno.EACCES: "check the folder's permissions",
              errno.EPERM: "check the folder's permissions",
              errno.EFBIG: "a file size limit (ulimit -f) was reached; raise it"}
    return f"{reason}: {advice[exc.errno]}" if exc.errno in advice else reason


class AtomicFolder:
    """A temporary folder beside `target` that replaces it on `commit()`; removed otherwise.

    `target` is checked with `check_target` first (and again just before the swap): an
    existing target is replaced only when it is one of our results folders, so a mistyped
    `--out` never deletes anything of the user's. The folder's lock (`results_lock`) is held
    from here to `commit()` or `discard()`. The temporary folder, ``.NAME.tmp-PID-XXXXXXXX``, is
    made like a plain ``mkdir`` would (mode 0777 less the umask) and gets `MARKER` at once, so
    that a later run can tell it was ours when this process dies before finishing
    (`sweep_results_leftovers`). On Linux the finished folder and the earlier results trade
    places in one atomic rename, so there is no moment without results. A write that fails
    (disk full, read-only, a quota) raises `OutputError`, one line, with nothing replaced.
    `label` names the setting in errors (``--out``, ``configs/x.yaml: output.dir``);
    `written_by` goes into the marker; `stable_marker` keeps only `written_by` there (goldens,
    reviewed as diffs, must not change on every update).
    """

    def __init__(self, target: str | os.PathLike, label: str = "results folder",
                 hint: str | None = None, *, written_by: str = "backtester run",
                 stable_marker: bool = False):
        self.label, self.hint = label, hint
        self.shown = os.fspath(target)
        self.target = check_target(target, label, hint)
        self.written_by, self.stable_marker = written_by, stable_marker
        self.path: Path | None = None
        self._lock: contextlib.AbstractContextManager | None = \
            results_lock(self.target, label, hint)
        self._lock.__enter__()
        with self._discard_on_failure():
            log_swept(sweep_results_leftovers(self.target.parent))
            self.path = _make_sibling(self.target, "tmp")
            write_json(owner_marker(written_by), self.path / MARKER)

    def commit(self) -> Path:
        """Put the finished folder in place of `target`, atomically; release the lock."""
        assert self.path is not None, "commit() after discard()"
        with self._discard_on_failure():
            check_target(self.target, self.label, self.hint)   # still ours just before the swap
            if self.stable_marker:
                write_json({"written_by": self.written_by}, self.path / MARKER)
            if not self.target.exists():
                os.rename(self.path, self.target)
            elif _exchange(self.path, self.target):
                shutil.rmtree(self.path, ignore_errors=True)   # now the earlier results
            else:   # no atomic swap here: move the earlier results aside for a moment
                old = self.target.with_name(
                    f".{self.target.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
                os.rename(self.target, old)
                try:
                    os.rename(self.path, self.target)
                except BaseException:
                    os.rename(old, self.target)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            self.path = None
        self._release()
        return self.target

    @contextlib.contextmanager
    def _discard_on_failure(self) -> Iterator[None]:
        """Any failure discards the folder; an `OSError` becomes a one-line `OutputError`."""
        try:
            yield
        except OSError as exc:
            self.discard()
            raise self._error(exc) from None
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Remove the temporary folder and release the lock; the target is left as it was."""
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
        self._release()

    def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.__exit__(None, None, None)

    def _error(self, exc: OSError) -> OutputError:
        return OutputError(f"{self.label}: {self.shown}: cannot write the results: "
                           f"{why_not_written(exc)} ({self.hint or 'choose another results '}"
                           f"{'' if self.hint else 'folder'}); nothing was replaced")

    def __enter__(self) -> AtomicFolder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.discard()   # after commit() only the (released) lock is left: nothing to undo
        if isinstance(exc, OSError):
            raise self._error(exc) from None


def _make_sibling(target: Path, kind: str) -> Path:
    """A new empty folder `.NAME.KIND-PID-XXXXXXXX` beside `target`, mode 0777 less the umask."""
    for _ in range(100):
        path = target.with_name(f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary name beside {target}")


def _exchange(a: Path, b: Path) -> bool:
    """Swap the folders `a` and `b` in one atomic rename (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``); False where the system or the file system cannot."""
    rename = getattr(_libc(), "renameat2", None)
    if rename is None:
        return False
    at_cwd, exchange = -100, 2
    if rename(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(b))


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:   # pragma: no cover - no C library to speak of
        return None


def sweep_results_leftovers(parent: str | os.PathLike) -> list[str]:
    """Clean up after runs that died while writing a results folder in `parent`.

    A ``.NAME.tmp-PID-*`` folder whose process PID is gone is removed; a ``.NAME.old-PID-*``
    folder (earlier results moved aside for a moment) is put back as ``NAME`` when that is
    missing, else removed; a ``.NAME.lock`` of ours that nobody holds is removed. Only folders that are certainly ours are touched: they hold our
    `MARKER` from this host (or nothing at all) and nothing but result files. Returns one
    description of each thing done, for the caller to report.
    """
    parent = Path(parent)
    try:
        entries = sorted(os.listdir(parent))
    except OSError:
        return []
    done = []
    for entry in entries:
        if entry.startswith(".") and entry.endswith(".lock") and _remove_stale_lock(parent / entry):
            done.append(f"lock file {parent / entry}")
        match = _SIBLING.match(entry)
        if match is None or process_alive(int(match["pid"])):
            continue
        folder = parent / entry
        try:
            if folder.is_symlink() or not folder.is_dir():
                continue
            names = os.listdir(folder)
            marker = read_marker(folder)
            if names and (marker is None or marker.get("host", _HOST) != _HOST or any(
                    n not in RESULT_FOLDER_FILES and n != MARKER for n in names)):
                continue
            target = parent / match["name"]
            if match["kind"] == "old" and names and not os.path.lexists(target):
                os.rename(folder, target)
                done.append(f"put back the earlier results {target} (from {entry})")
                continue
            shutil.rmtree(folder)
            done.append(f"temporary results folder {folder}")
        except OSError:
            continue   # not ours to fight over: left as it is
    return done


def _remove_stale_lock(path: Path) -> bool:
    """Remove the lock file `path` of a run that was killed (its lock died with it), when it
    is a lock `results_lock` wrote (another tool's ``.x.lock`` is left alone); True if done."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False   # held: its run is alive
        try:
            holder = json.loads(os.pread(fd, 4096, 0))
            ours = isinstance(holder, dict) and holder.get("written_by") == "backtester" \
                and holder.get("host") == _HOST
            if not (ours and os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))):
                return False
            os.unlink(path)   # while locked, as a releasing run does
        except (OSError, ValueError):
            return False
        return True
    finally:
        os.close(fd)


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists (this one counts; another user's counts too)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True   # exists, another user's
    return True


def log_swept(done: list[str]) -> None:
    """Say in one line what was cleaned up after killed runs (nothing when nothing was)."""
    if done:
        log.warning("removed what killed runs left behind: %s", "; ".join(done))


SLOWEST_CLUSTERS = 5


def timing_markdown(timing: Mapping[str, Any]) -> str:
    """The sequential-vs-parallel timing report as Markdown: the runs side by side, the
    speedup with a verdict on what it means, and the slowest clusters by name."""
    lines = [f"# Timing: {timing.get('name', '')}", ""]
    par = timing["parallel"]
    seq = timing.get("sequential")
    lines += [f"- bars processed: {timing['bars']:,} ({timing['symbols']} symbols)",
              f"- clusters: {timing['clusters']} ({timing['layout']}; {timing['layout_reason']})",
              f"- backend: {par['backend']} with n_jobs={par['n_jobs']}"
              + (f" ({timing['backend_reason']})" if timing.get("backend_reason") else ""),
              f"- tasks: {par['tasks']}", ""]
    lines += ["| run | wall s | start-up s | wall incl. start-up s | CPU s | bars/s |",
              "|---|---:|---:|---:|---:|---:|"]
    runs = [("sequential", seq), ("parallel", par)] if seq else [("parallel", par)]
    for label, r in runs:
        lines.append(f"| {label} ({r['backend']}, n_jobs={r['n_jobs']}) | {r['wall_seconds']:.3f} | "
                     f"{r['startup_seconds']:.3f} | {r['total_seconds']:.3f} | "
                     f"{r['cpu_seconds']:.3f} | {r['bars_per_second']:,.0f} |")
    if seq:
        lines += ["", f"- speedup (end to end, start-up included): **{timing['speedup']:.2f}x**",
                  f"- speedup (steady state, start-up excluded): {timing['speedup_steady']:.2f}x",
                  f"- efficiency (speedup / workers): {timing['efficiency']:.2f}",
                  f"- identical results: **{str(timing['identical']).lower()}**"]
        if timing.get("verdict"):
            lines += ["", f"**Verdict:** {timing['verdict']}"]
    clusters = [c if isinstance(c, Mapping) else {"seconds": c}
                for c in timing.get("cluster_seconds") or []]
    if clusters:
        cs = sorted(c["seconds"] for c in clusters)
        lines += ["", f"- per-cluster seconds: min {cs[0]:.4f}, median "
                  f"{cs[len(cs) // 2]:.4f}, max {cs[-1]:.4f}, sum {sum(cs):.3f}"]
        slowest = sorted((c for c in clusters if "symbol" in c),
                         key=lambda c: -c["seconds"])[:SLOWEST_CLUSTERS]
        if slowest:
            lines += ["", f"Slowest {len(slowest)} clusters:", "",
                      "| cluster | symbol | dates | bars | seconds |",
                      "|---:|---|---|---:|---:|"]
            lines += [f"| {c['cluster']} | {c['symbol']} | {c['first']}..{c['last']} | "
                      f"{c['bars']:,} | {c['seconds']:.4f} |" for c in slowest]
    return "\n".join(lines) + "\n"


def git_revision(package_dir: str | os.PathLike | None = None) -> str | None:
    """The commit of the repository this package's source is tracked in, with ``-dirty``
    appended when tracked files differ from it; None when the package is not in a git work
    tree of its own (installed into site-packages, even inside another project's repository).

    `package_dir` defaults to this package's folder; a repository counts only if it tracks files
    there. For example: ``'fa9ff68...-dirty'``.
    """
    folder = Path(package_dir) if package_dir is not None else Path(__file__).parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True,
                                 timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    if not git("ls-files", "--error-unmatch", "--", "."):
        return None   # not a work tree, or one that does not track this package
    head = (git("rev-parse", "HEAD") or "").strip()
    if not head:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return f"{head}-dirty" if status is None or status.strip() else head


def versions() -> dict[str, str | None]:
    """Versions of Python and the dependencies whose upgrades can move numbers."""
    out: dict[str, str | None] = {"python": platform.python_version(),
                                  "platform": f"{sys.platform}-{platform.machine()}"}
    for dist in ("backtester", "numpy", "pandas", "numba", "TA-Lib", "joblib", "pyarrow",
                 "exchange_calendars"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    try:
        from .indicators import talib_version

        out["ta-lib-c"] = talib_version()
    except Exception:  # pragma: no cover - the registry may not expose it yet
        pass
    return out
