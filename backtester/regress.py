"""Regression runs: re-run every config on the sample data and diff the results with golden files.

`regress(configs, golden)` runs each `configs/<stem>.yaml` sequentially into a temporary folder
(never the config's `output.dir`) and compares its result files with `golden/<stem>/`:

- `alerts.csv`, `forward.csv`, `trades.csv`: rows are matched by their event key (`timestamp`,
  `signal_time`, `symbol`, `alert`, whichever the file has); text fields, integers and booleans
  (timestamps, symbols, alert names, exit reasons, bars held) must be equal exactly, floats to
  `REL_TOL` (1e-9) relative, NaN equal to NaN.
- `summary.json`: every statistic, flattened to dotted paths, under the same rule.

When a run differs, the report names the config and the file, counts added, removed and changed
rows, shows the first differing rows side by side, and lists the fields of the run manifest that
differ from the golden run's (dependency versions, data hashes, config hash), so an upgrade that
moves numbers is recognised as such. `compare(run_a, run_b)` is the same diff between any two
result folders. With `update=True`, `regress` rewrites the goldens instead (the manifest without
its volatile fields), and the review diff of `tests/golden/` shows what changed. An update
touches only golden folders regress wrote (they carry `report.MARKER`): it refuses to replace,
and never removes as stale, a folder without it, nor one holding files of the user's.

The files are compared as text read with the `csv` module, not through pandas: what is
compared is what a user reads, independent of the pandas version's parsing.

For example::

    >>> from backtester import regress
    >>> regress.regress("configs", "tests/golden")            # doctest: +SKIP
    0
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import report
from .errors import BacktestError

__all__ = ["REL_TOL", "FileDiff", "RunDiff", "compare", "compare_folders", "regress",
           "stable_manifest"]

REL_TOL = 1e-9
EVENT_FILES = ("alerts.csv", "forward.csv", "trades.csv")
RESULT_FILES = (*EVENT_FILES, "summary.json")
MANIFEST = "manifest.json"
# Columns that identify an event; rows are matched on those a file has, in the file's order.
KEY_COLUMNS = ("timestamp", "signal_time", "symbol", "alert")
# Fields that change on every run or machine without saying anything about the numbers.
VOLATILE_MANIFEST_FIELDS = ("started", "duration_seconds", "joblib_cpu_count")
# The config's path as given on the command line: the manifest's config hash is what matters.
IGNORED_SUMMARY_FIELDS = ("config",)
SHOW_ROWS = 5
# How golden folders are named in errors and marked (`report.MARKER`): the marker holds only
# this, so that an update that moves nothing leaves no diff.
GOLDEN_LABEL = "--golden"
GOLDEN_HINT = "move that folder aside, or choose another --golden"
GOLDEN_WRITER = "backtester regress --update"

_INTEGER = re.compile(r"[+-]?\d+\Z")
_ABSENT = type("Absent", (), {"__repr__": lambda self: "(absent)"})()


@dataclass(frozen=True)
class FileDiff:
    """How one result file differs: row counts and the first differences, ready to print."""

    file: str
    rows: tuple[int, int]                  # (expected, actual) data rows or fields
    added: int = 0
    removed: int = 0
    changed: int = 0
    notes: tuple[str, ...] = ()            # missing file, column changes, row order
    details: tuple[str, ...] = ()          # the first differing rows, side by side

    def render(self, labels: tuple[str, str]) -> list[str]:
        unit = "fields" if self.file.endswith(".json") else "rows"
        head = (f"  {self.file}: {self.rows[0]} {unit} {labels[0]}, {self.rows[1]} {labels[1]}: "
                f"{self.changed} changed, {self.added} added, {self.removed} removed")
        return [head, *(f"    {note}" for note in self.notes), *self.details]


@dataclass(frozen=True)
class RunDiff:
    """The differences between an expected and an actual result folder of one config."""

    name: str
    labels: tuple[str, str]
    files: tuple[FileDiff, ...] = ()
    manifest: tuple[tuple[str, Any, Any], ...] = ()   # (dotted field, expected, actual)
    compared: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.files

    def render(self) -> str:
        if self.ok:
            return f"ok    {self.name}: {', '.join(self.compared)} match"
        a, b = self.labels
        lines = [f"FAIL  {self.name}: results differ ({a} -> {b})"]
        for diff in self.files:
            lines += diff.render(self.labels)
        if self.manifest:
            lines.append(f"  manifest fields that differ ({a} -> {b}):")
            lines += [f"    {key}: {_show(x)} -> {_show(y)}" for key, x, y in self.manifest]
        else:
            lines.append("  manifest: no field differs (same versions, data, config and layout)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Commands


def regress(configs: str | Path = "configs", golden: str | Path = "tests/golden", *,
            update: bool = False, stream: TextIO | None = None) -> int:
    """Run every `configs/*.yaml` and compare with (or, with `update`, rewrite) `golden/<stem>/`.

    Returns the exit status: 0 when every config matches its golden (or the goldens were
    rewritten), 1 when anything differs, a golden is missing or stale, or a config fails.
    """
    out = stream or sys.stdout
    configs, golden = Path(configs), Path(golden)
    paths = sorted([*configs.glob("*.yaml"), *configs.glob("*.yml")])
    if not paths:
        raise BacktestError(f"{configs}: no *.yaml configs to run")
    failures = 0
    if update:   # refuse a golden folder we did not write before running anything
        for path in paths:
            report.check_target(golden / path.stem, GOLDEN_LABEL, GOLDEN_HINT)
    with tempfile.TemporaryDirectory(prefix="backtester-regress-") as tmp:
        runs: dict[str, Path] = {}
        for path in paths:
            try:
                runs[path.stem] = _run_config(path, Path(tmp) / path.stem)
            except BacktestError as exc:
                print(f"ERROR {path.stem}: {exc}", file=out)
                failures += 1
        if update:
            if failures:
                print(f"regress: {failures} config(s) failed to run: goldens left unchanged",
                      file=out)
                return 1
            _update_goldens(runs, golden, out)
            return 0
        for stem, folder in runs.items():
            expected = golden / stem
            if not expected.is_dir():
                print(f"FAIL  {stem}: no golden results in {expected} "
                      "(create them with `make regress-update`)", file=out)
                failures += 1
                continue
            diff = compare_folders(expected, folder, stem, labels=("golden", "current"))
            print(diff.render(), file=out)
            failures += not diff.ok
        stale = _stale_goldens(golden, {p.stem for p in paths})
        for folder in stale:
            print(f"FAIL  {folder.name}: golden results in {folder} have no config in {configs} "
                  "(`make regress-update` removes them)", file=out)
        failures += len(stale)
    total = len(paths) + len(stale)
    if failures:
        print(f"regress: {failures} of {total} differ; if the change is intended, rewrite the "
              "goldens with `make regress-update` and review their diff", file=out)
        return 1
    print(f"regress: {len(paths)} configs match their goldens ({golden})", file=out)
    return 0


def compare(run_a: str | Path, run_b: str | Path, *, stream: TextIO | None = None) -> int:
    """The regression diff between two result folders: 0 when they match, 1 when they differ."""
    out = stream or sys.stdout
    run_a, run_b = Path(run_a), Path(run_b)
    for folder in (run_a, run_b):
        if not any((folder / name).is_file() for name in RESULT_FILES):
            raise BacktestError(f"{folder}: not a result folder (expected "
                                f"{', '.join(RESULT_FILES)} from `backtester run`)")
    print(f"A = {run_a}\nB = {run_b}", file=out)
    diff = compare_folders(run_a, run_b, f"{run_a.name} vs {run_b.name}", labels=("A", "B"))
    print(diff.render(), file=out)
    return 0 if diff.ok else 1


def _run_config(path: Path, out: Path) -> Path:
    """Run one config sequentially into `out` (a temporary folder), returning `out`."""
    from .api import run  # the pipeline is heavy to import; `compare` does not need it

    run(path, backend="sequential", n_jobs=1, compare_sequential=False, out=out)
    return out


def _stale_goldens(golden: Path, stems: set[str]) -> list[Path]:
    """Folders in `golden` that regress wrote (they carry our marker) for no config in `stems`:
    any other folder there is the user's and none of regress's business."""
    if not golden.is_dir():
        return []
    return sorted(p for p in golden.iterdir()
                  if p.is_dir() and not p.is_symlink() and p.name not in stems
                  and report.read_marker(p) is not None)


def _update_goldens(runs: Mapping[str, Path], golden: Path, out: TextIO) -> None:
    """Rewrite `golden/<stem>/` from each run, saying what changed; remove stale goldens."""
    golden.mkdir(parents=True, exist_ok=True)
    for stem, folder in runs.items():
        target = golden / stem
        before = compare_folders(target, folder, stem, labels=("old", "new")) \
            if target.is_dir() else None
        with report.AtomicFolder(target, GOLDEN_LABEL, GOLDEN_HINT, stable_marker=True,
                                 written_by=GOLDEN_WRITER) as staging:
            for name in RESULT_FILES:
                if (folder / name).is_file():
                    shutil.copyfile(folder / name, staging.path / name)
            manifest = stable_manifest(_read_json(folder / MANIFEST))
            old = _read_json(target / MANIFEST) if (target / MANIFEST).is_file() else None
            changes = _manifest_changes(old, manifest) if old is not None else None
            if changes is not None and all(k == "git_revision" for k, _, _ in changes):
                # Same versions, data and config: keep the old file so an update that moves
                # nothing leaves no diff behind.
                shutil.copyfile(target / MANIFEST, staging.path / MANIFEST)
            else:
                report.write_json(manifest, staging.path / MANIFEST)
            staging.commit()
        if before is None:
            print(f"new   {stem}: golden results written to {target}", file=out)
        elif before.ok:
            print(f"same  {stem}: golden results unchanged", file=out)
        else:
            print(f"wrote {stem}: golden results rewritten:", file=out)
            for diff in before.files:
                print(diff.render(before.labels)[0], file=out)
    for folder in _stale_goldens(golden, set(runs)):
        foreign = sorted(p.name for p in folder.iterdir()
                         if p.name not in report.RESULT_FOLDER_FILES and p.name != report.MARKER
                         or p.is_symlink() or not p.is_file())
        if foreign:
            print(f"kept  {folder.name}: stale golden results, but the folder also holds "
                  f"{', '.join(foreign[:3])}, which regress did not write: remove it yourself",
                  file=out)
            continue
        shutil.rmtree(folder)
        print(f"gone  {folder.name}: removed stale golden results (no such config)", file=out)
    print(f"regress: goldens of {len(runs)} configs in {golden}; review `git diff {golden}`",
          file=out)


# ---------------------------------------------------------------------------------------------
# Comparison


def compare_folders(expected: str | Path, actual: str | Path, name: str, *,
                    labels: tuple[str, str] = ("expected", "actual")) -> RunDiff:
    """Compare the result files of two run folders; the manifests only explain differences."""
    expected, actual = Path(expected), Path(actual)
    diffs, compared = [], []
    for file in RESULT_FILES:
        a, b = expected / file, actual / file
        if not a.is_file() and not b.is_file():
            continue
        compared.append(file)
        if not a.is_file() or not b.is_file():
            where = labels[1] if a.is_file() else labels[0]
            rows = (_count(a), _count(b))
            diffs.append(FileDiff(file, rows, added=rows[1], removed=rows[0],
                                  notes=(f"missing in {where}",)))
            continue
        compare_file = compare_summary if file.endswith(".json") else compare_csv
        diff = compare_file(a, b, labels=labels)
        if diff is not None:
            diffs.append(diff)
    manifest: tuple[tuple[str, Any, Any], ...] = ()
    if diffs and (expected / MANIFEST).is_file() and (actual / MANIFEST).is_file():
        manifest = _manifest_changes(stable_manifest(_read_json(expected / MANIFEST)),
                                     stable_manifest(_read_json(actual / MANIFEST)))
    return RunDiff(name, labels, tuple(diffs), manifest, tuple(compared))


def compare_csv(expected: Path, actual: Path, *,
                labels: tuple[str, str] = ("expected", "actual")) -> FileDiff | None:
    """Rows matched by event key; None when every row and column agrees (floats to REL_TOL)."""
    head_a, rows_a = _read_csv(expected)
    head_b, rows_b = _read_csv(actual)
    notes = []
    gone = [c for c in head_a if c not in head_b]
    new = [c for c in head_b if c not in head_a]
    if gone:
        notes.append(f"columns only in {labels[0]}: {', '.join(gone)}")
    if new:
        notes.append(f"columns only in {labels[1]}: {', '.join(new)}")
    key = [c for c in head_a if c in KEY_COLUMNS and c in head_b]
    common = [c for c in head_a if c in head_b and c not in key]
    numeric = {c for c in common if _all_numbers(rows_a, head_a.index(c))
               and _all_numbers(rows_b, head_b.index(c))}
    index_a = _by_key(rows_a, [head_a.index(c) for c in key])
    index_b = _by_key(rows_b, [head_b.index(c) for c in key])
    removed = [index_a[k] for k in index_a if k not in index_b]
    added = [index_b[k] for k in index_b if k not in index_a]
    changed = []
    for k, (line_a, row_a) in index_a.items():
        if k not in index_b:
            continue
        line_b, row_b = index_b[k]
        cells = [(c, row_a[head_a.index(c)], row_b[head_b.index(c)]) for c in common]
        differing = [(c, x, y) for c, x, y in cells if not _same_cell(x, y, c in numeric)]
        if differing:
            changed.append((k, line_a, line_b, differing))
    if not (removed or added or changed):
        order_a = [k for k in index_a]
        order_b = [k for k in index_b]
        if order_a != order_b:
            first = next(i for i, (x, y) in enumerate(zip(order_a, order_b)) if x != y)
            notes.append(f"same rows in a different order from data row {first + 1}")
    if not (notes or removed or added or changed):
        return None
    details = []
    for k, line_a, line_b, differing in changed[:SHOW_ROWS]:
        details.append(f"    changed  {_describe_key(key, k)}  "
                       f"({labels[0]} line {line_a}, {labels[1]} line {line_b})")
        details += _side_by_side(differing, labels)
    if len(changed) > SHOW_ROWS:
        details.append(f"    ... and {len(changed) - SHOW_ROWS} more changed")
    for title, rows, header, label in (("removed", removed, head_a, labels[0]),
                                       ("added", added, head_b, labels[1])):
        for line, row in sorted(rows)[:SHOW_ROWS]:
            details.append(f"    {title:<8} {label} line {line}: {_describe_row(header, row)}")
        if len(rows) > SHOW_ROWS:
            details.append(f"    ... and {len(rows) - SHOW_ROWS} more {title}")
    return FileDiff(expected.name, (len(rows_a), len(rows_b)), len(added), len(removed),
                    len(changed), tuple(notes), tuple(details))


def compare_summary(expected: Path, actual: Path, *,
                    labels: tuple[str, str] = ("expected", "actual")) -> FileDiff | None:
    """Every statistic of two `summary.json` files, by dotted path; None when all agree."""
    a = {k: v for k, v in flatten(_read_json(expected)).items()
         if k.split(".")[0] not in IGNORED_SUMMARY_FIELDS}
    b = {k: v for k, v in flatten(_read_json(actual)).items()
         if k.split(".")[0] not in IGNORED_SUMMARY_FIELDS}
    removed = [k for k in a if k not in b]
    added = [k for k in b if k not in a]
    changed = [(k, a[k], b[k]) for k in a if k in b and not _same_json(a[k], b[k])]
    if not (removed or added or changed):
        return None
    details = []
    if changed:
        details += _side_by_side([(k, _show(x), _show(y)) for k, x, y in changed[:SHOW_ROWS]],
                                 labels, title="field")
        if len(changed) > SHOW_ROWS:
            details.append(f"    ... and {len(changed) - SHOW_ROWS} more changed")
    for title, keys, values in (("removed", removed, a), ("added", added, b)):
        for k in keys[:SHOW_ROWS]:
            details.append(f"    {title:<8} {k} = {_show(values[k])}")
        if len(keys) > SHOW_ROWS:
            details.append(f"    ... and {len(keys) - SHOW_ROWS} more {title}")
    return FileDiff(expected.name, (len(a), len(b)), len(added), len(removed), len(changed),
                    details=tuple(details))


def stable_manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest without the fields that change on every run or machine (times, CPU count)."""
    return {k: v for k, v in manifest.items() if k not in VOLATILE_MANIFEST_FIELDS}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists as one dict of dotted paths: ``{"a": [{"b": 1}]} -> {"a[0].b": 1}``.

    Empty containers stay as leaves, so a statistic that disappears is still seen.
    """
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _manifest_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple:
    """(dotted field, value in a, value in b) for every field that differs."""
    fa, fb = flatten(dict(a)), flatten(dict(b))
    keys = [*fa, *(k for k in fb if k not in fa)]
    return tuple((k, fa.get(k, _ABSENT), fb.get(k, _ABSENT)) for k in keys
                 if fa.get(k, _ABSENT) != fb.get(k, _ABSENT))


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (file line number, fields) per data row, exactly as written."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        rows = [(reader.line_num, row) for row in reader]
    width = len(header)
    for line, row in rows:
        if len(row) != width:
            raise BacktestError(f"{path}: line {line}: {len(row)} fields, the header has {width}")
    return header, rows


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BacktestError(f"{path}: cannot read JSON: {exc}") from None


def _count(path: Path) -> int:
    if not path.is_file():
        return 0
    if path.suffix == ".json":
        return len(flatten(_read_json(path)))
    return len(_read_csv(path)[1])


def _by_key(rows: Iterable[tuple[int, list[str]]], key: list[int]) -> dict[tuple, tuple]:
    """Rows by key plus occurrence number (repeated keys pair up in file order); by position
    when the file has no key columns."""
    seen: Counter = Counter()
    out = {}
    for i, (line, row) in enumerate(rows):
        k = tuple(row[j] for j in key) if key else (i,)
        out[(*k, seen[k])] = (line, row)
        seen[k] += 1
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _all_numbers(rows: list[tuple[int, list[str]]], column: int) -> bool:
    return all(row[column] == "" or _is_number(row[column]) for _, row in rows)


def _same_cell(x: str, y: str, numeric: bool) -> bool:
    """Text equal; or, in a float column, both floats within REL_TOL (integers stay exact)."""
    if x == y:
        return True
    if not numeric or not x or not y or _INTEGER.match(x) or _INTEGER.match(y):
        return False
    return same_float(float(x), float(y))


def same_float(x: float, y: float) -> bool:
    """Equal within REL_TOL relative to the larger magnitude; NaN equals NaN, inf only itself."""
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    return abs(x - y) <= REL_TOL * max(abs(x), abs(y))


def _same_json(x: Any, y: Any) -> bool:
    numbers = (int, float)
    if isinstance(x, bool) or isinstance(y, bool) or not isinstance(x, numbers) \
            or not isinstance(y, numbers):
        return x == y and type(x) is type(y)
    if isinstance(x, int) and isinstance(y, int):
        return x == y
    return same_float(float(x), float(y))


def _rel_diff(x: str, y: str) -> str:
    try:
        a, b = float(x), float(y)
    except (TypeError, ValueError):
        return ""
    if not (math.isfinite(a) and math.isfinite(b)) or max(abs(a), abs(b)) == 0:
        return ""
    return f"{abs(a - b) / max(abs(a), abs(b)):.1e}"


def _side_by_side(cells: list[tuple[str, Any, Any]], labels: tuple[str, str],
                  title: str = "column") -> list[str]:
    rows = [(str(c), str(x), str(y), _rel_diff(x, y)) for c, x, y in cells]
    table = [(title, labels[0], labels[1], "rel. diff"), *rows]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    return [f"        {r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}"
            .rstrip() for r in table]


def _describe_key(key: list[str], k: tuple) -> str:
    if not key:
        return f"data row {k[0] + 1}"
    text = " ".join(f"{c}={v}" for c, v in zip(key, k))
    return text + (f" (occurrence {k[-1] + 1})" if k[-1] else "")


def _describe_row(header: list[str], row: list[str], limit: int = 300) -> str:
    text = " ".join(f"{c}={v}" for c, v in zip(header, row))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    return value if isinstance(value, str) else json.dumps(value)
