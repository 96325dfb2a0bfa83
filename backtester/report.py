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
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

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


class AtomicFolder:
    """A temporary folder beside `target` that replaces it on `commit()`; removed otherwise."""

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-",
                                          dir=self.target.parent))

    def commit(self) -> Path:
        old = None
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
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


def timing_markdown(timing: Mapping[str, Any]) -> str:
    """The sequential-vs-parallel timing report as Markdown."""
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
    cs = timing.get("cluster_seconds") or []
    if cs:
        lines += ["", f"- per-cluster seconds: min {min(cs):.4f}, median "
                  f"{sorted(cs)[len(cs) // 2]:.4f}, max {max(cs):.4f}, sum {sum(cs):.3f}"]
    return "\n".join(lines) + "\n"


def git_revision(cwd: str | os.PathLike | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


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
