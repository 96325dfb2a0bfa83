"""Write a run's outputs atomically: alerts, forward returns, trades, summary, timing, manifest.

Everything goes into a temporary sibling folder first and is renamed into place only when
complete, so a run that fails (or is interrupted) leaves the previous results untouched and no
partial folder behind. Floats are written with Python's shortest round-trip repr, so a CSV reads
back bit-identical.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import BacktestError

ALERT_COLUMNS = ["timestamp", "symbol", "alert", "close"]
TRADE_COLUMNS = ["alert", "symbol", "signal_time", "entry_time", "entry_price", "exit_time",
                 "exit_price", "reason", "bars_held", "return", "gross_return", "mfe", "mae",
                 "both_touched"]


def write_frame(frame: pd.DataFrame, folder: Path, stem: str, columns: list[str]) -> None:
    """`stem`.csv and `stem`.parquet in `folder`; an empty frame still gets its header."""
    if frame.empty and not len(frame.columns):
        frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
    frame.to_csv(folder / f"{stem}.csv", index=False, float_format=None)
    frame.to_parquet(folder / f"{stem}.parquet", index=False)


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
# (`scaling.write_report`) puts in its folder. A folder holding only these, one of them a
# marker, is ours to replace; anything else there is the user's and is never deleted.
RESULT_FOLDER_FILES = frozenset({
    "alerts.csv", "alerts.parquet", "forward.csv", "forward.parquet", "trades.csv",
    "trades.parquet", "summary.json", "summary.md", "timing.json", "timing.md", "manifest.json",
    "scaling.md", "scaling.svg", "scaling.json",
})
RESULT_FOLDER_MARKERS = ("manifest.json", "scaling.json")


def check_target(target: str | os.PathLike, label: str, hint: str | None = None) -> Path:
    """The absolute path of `target` if a results folder may be written there; raise otherwise.

    A target may be created when its nearest existing parent is a folder this process can write
    in, and replaced only when it is empty or one of our results folders (a marker such as
    ``manifest.json`` and nothing but files we write). Anything else (the user's folder, a
    plain file, a link) raises `BacktestError` naming `label` (``--out``,
    ``configs/x.yaml: output.dir``), the path and `hint`, before anything is written. For
    example::

        check_target("/tmp/notes", "--out")   # BacktestError if /tmp/notes holds notes.txt
    """
    hint = hint or "choose another results folder"
    shown = os.fspath(target)
    if not shown:
        raise BacktestError(f"{label}: no results folder given ({hint})")
    path = Path(os.path.abspath(shown))

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
                   if name not in RESULT_FOLDER_FILES or (path / name).is_symlink()
                   or not (path / name).is_file()]
        if foreign:
            listed = ", ".join(foreign[:3]) + \
                (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise refuse(f"exists and is not a backtester results folder (holds {listed}); "
                         f"refusing to replace it", ", or empty that folder first")
        if entries and not any(marker in entries for marker in RESULT_FOLDER_MARKERS):
            raise refuse("exists and has no manifest.json, so it is not a backtester results "
                         "folder; refusing to replace it", ", or empty that folder first")
    parent = path.parent
    while not parent.exists() and parent.parent != parent:
        parent = parent.parent
    if not parent.is_dir():
        raise refuse(f"{parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise refuse(f"no permission to write in {parent}")
    return path


class AtomicFolder:
    """A temporary folder beside `target` that replaces it on `commit()`; removed otherwise.

    `target` is checked with `check_target` first (and again just before the rename): an
    existing target is replaced only when it is one of our results folders, so a mistyped
    `--out` never deletes anything of the user's. The temporary folder is made like a plain
    ``mkdir`` would (mode 0777 less the umask), so the results are as readable as any folder.
    `label` names the setting in errors (``--out``, ``configs/x.yaml: output.dir``).
    """

    def __init__(self, target: str | os.PathLike, label: str = "results folder",
                 hint: str | None = None):
        self.label, self.hint = label, hint
        self.target = check_target(target, label, hint)
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self.path = _make_sibling(self.target, "tmp")
        except OSError as exc:
            raise BacktestError(f"{label}: {os.fspath(target)}: cannot create the results "
                                f"folder: {exc.strerror or exc}") from None

    def commit(self) -> Path:
        check_target(self.target, self.label, self.hint)   # still ours just before the swap
        old = None
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{secrets.token_hex(4)}")
            os.replace(self.target, old)
        os.replace(self.path, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.target

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> AtomicFolder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()


def _make_sibling(target: Path, kind: str) -> Path:
    """A new empty folder `.NAME.KIND-XXXXXXXX` beside `target`, mode 0777 less the umask."""
    for _ in range(100):
        path = target.with_name(f".{target.name}.{kind}-{secrets.token_hex(4)}")
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary name beside {target}")


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
