"""Scaling report: the same prepared plan run at several (backend, n_jobs) settings.

`scale(config, ["threading", "loky"], [1, 2, 4])` prepares the config once (data loaded,
plan compiled, clusters laid out for the largest worker count), runs the clusters sequentially
as the baseline, then on every backend at every n_jobs, and checks each result identical, bit
for bit, to the sequential one. Every setting runs the same clusters, so the speedups compare
exactly the same work.

Two speedups are reported: end-to-end (worker start-up included, what a user waits for) and
steady state (start-up excluded, what the engine does once its workers are up). `amdahl_fit`
turns the end-to-end speedups of a backend into the serial fraction s of Amdahl's law,
speedup(n) = 1 / (s + (1 - s) / n), which summarises what stops it scaling.

`render_markdown` and `render_svg` render a report (the SVG is written by hand: no plotting
dependency); `run_scale_command` is what ``backtester scale`` calls. For example::

    report = scale("configs/rsi.yaml", ["threading", "loky"], [1, 2])
    print(render_markdown(report))
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np

__all__ = ["ScalingPoint", "ScalingReport", "amdahl_fit", "amdahl_speedup", "parse_backends",
           "parse_jobs", "render_markdown", "render_svg", "run_scale_command", "scale"]

SCALABLE_BACKENDS = ("sequential", "threading", "loky", "multiprocessing", "dask")


@dataclass(frozen=True)
class ScalingPoint:
    """One (backend, n_jobs) setting: the best of its repetitions and how it compares."""

    backend: str
    n_jobs: int                  # workers actually used (joblib's -1 resolved)
    wall_seconds: float          # first task submitted to last result (start-up excluded)
    startup_seconds: float       # starting and warming the workers
    cpu_seconds: float
    n_tasks: int
    identical: bool              # every repetition's events equal the sequential run's
    speedup: float = 1.0         # sequential total / this total (end to end)
    speedup_steady: float = 1.0  # sequential wall / this wall (start-up excluded)
    bars: int = 0

    @property
    def total_seconds(self) -> float:
        return self.wall_seconds + self.startup_seconds

    @property
    def efficiency(self) -> float:
        """End-to-end speedup per worker (1.0 = perfect scaling)."""
        return self.speedup / max(1, self.n_jobs)

    @property
    def efficiency_steady(self) -> float:
        return self.speedup_steady / max(1, self.n_jobs)

    @property
    def bars_per_second(self) -> float:
        return self.bars / self.total_seconds if self.total_seconds > 0 else 0.0


@dataclass(frozen=True)
class ScalingReport:
    """The sequential baseline and every parallel setting, with the run's shape."""

    name: str
    bars: int
    symbols: int
    clusters: int
    layout: str
    layout_reason: str
    sequential: ScalingPoint
    points: tuple[ScalingPoint, ...]
    repeat: int = 1
    cluster_seconds: tuple[float, ...] = field(default=(), repr=False)  # sequential, by index

    @property
    def backends(self) -> tuple[str, ...]:
        """The parallel backends measured, in the order asked for."""
        return tuple(dict.fromkeys(p.backend for p in self.points))

    @property
    def identical(self) -> bool:
        return all(p.identical for p in self.points)

    def for_backend(self, backend: str) -> tuple[ScalingPoint, ...]:
        return tuple(sorted((p for p in self.points if p.backend == backend),
                            key=lambda p: p.n_jobs))

    def serial_fraction(self, backend: str, *, steady: bool = False) -> float | None:
        """Amdahl's serial fraction fitted to this backend's speedups (None: no n_jobs > 1)."""
        points = self.for_backend(backend)
        return amdahl_fit([p.n_jobs for p in points],
                          [p.speedup_steady if steady else p.speedup for p in points])

    def to_dict(self) -> dict[str, Any]:
        def point(p: ScalingPoint) -> dict[str, Any]:
            return {"backend": p.backend, "n_jobs": p.n_jobs, "tasks": p.n_tasks,
                    "wall_seconds": p.wall_seconds, "startup_seconds": p.startup_seconds,
                    "total_seconds": p.total_seconds, "cpu_seconds": p.cpu_seconds,
                    "bars_per_second": p.bars_per_second, "speedup": p.speedup,
                    "speedup_steady": p.speedup_steady, "efficiency": p.efficiency,
                    "identical": p.identical}

        return {"name": self.name, "bars": self.bars, "symbols": self.symbols,
                "clusters": self.clusters, "layout": self.layout,
                "layout_reason": self.layout_reason, "repeat": self.repeat,
                "sequential": point(self.sequential),
                "points": [point(p) for p in self.points],
                "serial_fraction": {b: self.serial_fraction(b) for b in self.backends},
                "serial_fraction_steady": {b: self.serial_fraction(b, steady=True)
                                           for b in self.backends}}


# --------------------------------------------------------------------------------------------
# Measuring


def scale(config: Any, backends: Sequence[str], jobs: Sequence[int], *, bars: Any = None,
          repeat: int = 1,
          progress: Callable[[ScalingPoint], None] | None = None) -> ScalingReport:
    """Run the prepared plan sequentially and at each (backend, n_jobs); see the module doc.

    `config` is anything `backtester.run` accepts; `bars` an already loaded `BarSet`. The
    cluster layout is chosen once, for the largest worker count asked for, and shared by every
    setting. Each setting runs `repeat` times and keeps its fastest end-to-end run (the
    machine may be shared); `identical` holds only if every repetition matched. A backend that
    maps several n_jobs to the same worker count (sequential) is measured once. `progress` is
    called with each finished point.
    """
    from . import api
    from .execution import effective_n_jobs, run_clusters, run_task, warm_task
    from .merge import merge

    backends = [str(b) for b in backends]
    for backend in backends:
        if backend not in SCALABLE_BACKENDS:
            raise ValueError(f"unknown backend {backend!r} (one of {', '.join(SCALABLE_BACKENDS)})")
    jobs = [int(n) for n in jobs]
    if not jobs or not backends:
        raise ValueError("need at least one backend and one n_jobs")
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    layout_backend = next((b for b in backends if b != "sequential"), "loky")
    widest = max(effective_n_jobs(layout_backend, n) for n in jobs)
    prep = api.prepare(config, bars=bars, backend=layout_backend, n_jobs=widest)
    plan, barset, clusters = prep.plan, prep.bars, prep.layout.clusters
    exe = prep.config.execution
    n_bars = barset.n_bars

    first = warm_task(plan, clusters, barset)   # load every kernel here before any clock starts
    if first is not None:
        run_task(*first)

    def measure(backend: str, n_jobs: int, reference=None):
        best, same, merged = None, True, None
        for _ in range(repeat):
            report = run_clusters(plan, clusters, barset, backend=backend, n_jobs=n_jobs,
                                  batch_size=exe.batch_size, address=exe.address)
            merged = merge(plan, report.results, barset)
            if reference is not None:
                same = same and api.same_events(merged, reference)
            if best is None or report.total_seconds < best.total_seconds:
                best = report
            del report
        return best, same, merged

    seq_report, _, reference = measure("sequential", 1)
    sequential = ScalingPoint(
        backend="sequential", n_jobs=1, wall_seconds=seq_report.wall_seconds,
        startup_seconds=seq_report.startup_seconds, cpu_seconds=seq_report.cpu_seconds,
        n_tasks=seq_report.n_tasks, identical=True, bars=n_bars)
    if progress is not None:
        progress(sequential)
    seq_total, seq_wall = sequential.total_seconds, sequential.wall_seconds

    points: list[ScalingPoint] = []
    seen: set[tuple[str, int]] = set()
    for backend in backends:
        for n in jobs:
            workers = effective_n_jobs(backend, n)
            if (backend, workers) in seen:
                continue
            seen.add((backend, workers))
            if backend == "sequential":
                points.append(sequential)
                continue
            best, same, _ = measure(backend, n, reference)
            point = ScalingPoint(
                backend=backend, n_jobs=workers, wall_seconds=best.wall_seconds,
                startup_seconds=best.startup_seconds, cpu_seconds=best.cpu_seconds,
                n_tasks=best.n_tasks, identical=same,
                speedup=seq_total / best.total_seconds if best.total_seconds > 0 else math.nan,
                speedup_steady=seq_wall / best.wall_seconds if best.wall_seconds > 0 else math.nan,
                bars=n_bars)
            points.append(point)
            if progress is not None:
                progress(point)
    return ScalingReport(
        name=prep.config.name, bars=n_bars, symbols=len(barset.symbols), clusters=len(clusters),
        layout=prep.layout.cluster_by, layout_reason=prep.layout.reason, sequential=sequential,
        points=tuple(points), repeat=repeat, cluster_seconds=seq_report.cluster_seconds)


# --------------------------------------------------------------------------------------------
# Amdahl's law


def amdahl_speedup(serial_fraction: float, n_jobs: Any) -> Any:
    """Amdahl's law: the speedup on `n_jobs` workers of work whose `serial_fraction` is serial."""
    n = np.asarray(n_jobs, dtype=float)
    return 1.0 / (serial_fraction + (1.0 - serial_fraction) / n)


def amdahl_fit(n_jobs: Sequence[float], speedups: Sequence[float]) -> float | None:
    """The serial fraction s in [0, 1] whose Amdahl curve fits `speedups` best (least squares).

    Points at one worker carry no information about s (every curve passes through 1) but are
    accepted; None when no point has more than one worker or no speedup is finite. A speedup
    above n (super-linear: caches, or a noisy baseline) pulls s to 0; the fit never returns a
    negative fraction.
    """
    n = np.asarray(n_jobs, dtype=float)
    s = np.asarray(speedups, dtype=float)
    if n.shape != s.shape:
        raise ValueError(f"n_jobs and speedups differ in length ({n.size} vs {s.size})")
    keep = np.isfinite(n) & np.isfinite(s) & (n >= 1) & (s > 0)
    n, s = n[keep], s[keep]
    if not (n > 1).any():
        return None

    def loss(fraction: float) -> float:
        return float(np.sum((s - amdahl_speedup(fraction, n)) ** 2))

    grid = np.linspace(0.0, 1.0, 2001)
    losses = np.sum((s[None, :] - amdahl_speedup(grid[:, None], n[None, :])) ** 2, axis=1)
    i = int(np.argmin(losses))
    lo, hi = grid[max(0, i - 1)], grid[min(len(grid) - 1, i + 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0     # golden-section search inside the best bracket
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    for _ in range(60):
        if loss(a) < loss(b):
            hi = b
        else:
            lo = a
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    best = (lo + hi) / 2.0
    return float(min(1.0, max(0.0, best if loss(best) <= losses[i] else grid[i])))


# --------------------------------------------------------------------------------------------
# Rendering


def _fmt_fraction(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def render_markdown(report: ScalingReport) -> str:
    """The scaling table (one row per setting, the sequential baseline first) and the Amdahl
    serial fraction of each backend, as Markdown."""
    seq = report.sequential
    lines = [f"# Scaling: {report.name}", "",
             f"- bars: {report.bars:,} ({report.symbols} symbols), clusters: {report.clusters} "
             f"({report.layout}; {report.layout_reason})",
             f"- sequential baseline: {seq.total_seconds:.3f} s "
             f"({seq.bars_per_second:,.0f} bars/s), best of {report.repeat}",
             "- every setting runs the same clusters; identical = its events equal the "
             "sequential run's, bit for bit", "",
             "| backend | n_jobs | tasks | wall s | start-up s | total s | bars/s | "
             "speedup end-to-end | speedup steady | efficiency | identical |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    rows = [seq] + [p for p in report.points if p is not seq]
    for p in rows:
        lines.append(
            f"| {p.backend} | {p.n_jobs} | {p.n_tasks} | {p.wall_seconds:.3f} | "
            f"{p.startup_seconds:.3f} | {p.total_seconds:.3f} | {p.bars_per_second:,.0f} | "
            f"{p.speedup:.2f}x | {p.speedup_steady:.2f}x | {p.efficiency:.2f} | "
            f"{str(p.identical).lower()} |")
    fitted = [b for b in report.backends if b != "sequential"]
    if fitted:
        lines += ["", "Amdahl fit, speedup(n) = 1 / (s + (1 - s) / n), least squares over the "
                  "n_jobs measured:", "",
                  "| backend | serial fraction s (end-to-end) | s (steady state) | "
                  "speedup limit 1/s |", "|---|---:|---:|---:|"]
        for backend in fitted:
            s = report.serial_fraction(backend)
            steady = report.serial_fraction(backend, steady=True)
            limit = "n/a" if s is None else ("unbounded" if s <= 0 else f"{1 / s:.1f}x")
            lines.append(f"| {backend} | {_fmt_fraction(s)} | {_fmt_fraction(steady)} | "
                         f"{limit} |")
    lines += ["", f"identical results on every setting: **{str(report.identical).lower()}**"]
    return "\n".join(lines) + "\n"


_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def render_svg(report: ScalingReport, *, width: int = 560, height: int = 360) -> str:
    """A line chart of end-to-end speedup against n_jobs: one polyline per backend (its
    measured points), the ideal line (speedup = n) and each backend's Amdahl fit (dashed)."""
    backends = [b for b in report.backends if b != "sequential"]
    ns = [p.n_jobs for p in report.points] + [1]
    x_max = max(2, max(ns))
    speeds = [p.speedup for p in report.points if math.isfinite(p.speedup)]
    y_max = max([float(x_max)] + speeds) * 1.05
    left, right, top, bottom = 56, 150, 36, 46
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(n: float) -> float:
        return left + (n - 1) / (x_max - 1) * plot_w

    def y(v: float) -> float:
        return top + plot_h - v / y_max * plot_h

    def pts(pairs) -> str:
        return " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in pairs)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f"<title>{escape(f'Scaling: {report.name}')}</title>",
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="20" font-size="13">'
           f"{escape(f'{report.name}: speedup vs n_jobs ({report.bars:,} bars)')}</text>"]
    # axes, ticks and grid
    out.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" '
               f'y2="{top + plot_h}" stroke="black"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="black"/>')
    for n in sorted(set(ns) | {1, x_max}):
        out.append(f'<line x1="{x(n):.1f}" y1="{top + plot_h}" x2="{x(n):.1f}" '
                   f'y2="{top + plot_h + 4}" stroke="black"/>')
        out.append(f'<text x="{x(n):.1f}" y="{top + plot_h + 16}" '
                   f'text-anchor="middle">{n}</text>')
    step = _nice_step(y_max)
    v = 0.0
    while v <= y_max + 1e-9:
        out.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + plot_w}" y2="{y(v):.1f}" '
                   f'stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        v += step
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 10}" '
               f'text-anchor="middle">n_jobs (workers)</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">speedup (end to end)</text>')
    # ideal line
    out.append(f'<path class="ideal" d="M {x(1):.1f} {y(1):.1f} L {x(x_max):.1f} '
               f'{y(min(x_max, y_max)):.1f}" stroke="#888" stroke-dasharray="2 3" fill="none"/>')
    legend = [("ideal (speedup = n)", "#888", "2 3")]
    curve = np.linspace(1, x_max, 40)
    for i, backend in enumerate(backends):
        colour = _COLOURS[i % len(_COLOURS)]
        points = [(p.n_jobs, p.speedup) for p in report.for_backend(backend)
                  if math.isfinite(p.speedup)]
        s = report.serial_fraction(backend)
        if s is not None:
            fit = amdahl_speedup(s, curve)
            d = "M " + " L ".join(f"{x(a):.1f} {y(b):.1f}" for a, b in zip(curve, fit))
            out.append(f'<path class="amdahl" data-backend={quoteattr(backend)} d="{d}" '
                       f'stroke="{colour}" stroke-dasharray="6 4" fill="none" opacity="0.7"/>')
        out.append(f'<polyline class="measured" data-backend={quoteattr(backend)} '
                   f'points="{pts(points)}" stroke="{colour}" stroke-width="2" fill="none"/>')
        for a, b in points:
            out.append(f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="3" fill="{colour}"/>')
        label = backend + ("" if s is None else f" (Amdahl s={s:.3f})")
        legend.append((label, colour, None))
    for i, (label, colour, dash) in enumerate(legend):
        ly = top + 10 + 18 * i
        lx = left + plot_w + 12
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 20}" y2="{ly}" stroke="{colour}" '
                   f'stroke-width="2"{dash_attr}/>')
        out.append(f'<text x="{lx + 25}" y="{ly + 4}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _nice_step(span: float) -> float:
    raw = span / 6
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


# --------------------------------------------------------------------------------------------
# Command


def parse_backends(text: str) -> list[str]:
    """``"threading,loky"`` -> ``["threading", "loky"]``; unknown names raise ConfigError."""
    from .errors import ConfigError

    names = [b.strip() for b in str(text).split(",") if b.strip()]
    bad = [b for b in names if b not in SCALABLE_BACKENDS]
    if not names or bad:
        raise ConfigError("command line", "--backends",
                          f"unknown backend {bad[0]!r}" if bad else "no backend given",
                          f"a comma-separated list of {', '.join(SCALABLE_BACKENDS)}")
    return list(dict.fromkeys(names))


def parse_jobs(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]``; joblib's negative counts (-1 = all cores) are accepted."""
    from .errors import ConfigError

    jobs = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            n = int(part)
        except ValueError:
            n = 0
        if n == 0:
            raise ConfigError("command line", "--jobs", f"{part!r} is not a worker count",
                              "comma-separated integers such as 1,2,4; -1 = all cores")
        jobs.append(n)
    if not jobs:
        raise ConfigError("command line", "--jobs", "no worker count given", "for example 1,2,4")
    return list(dict.fromkeys(jobs))


def default_out(config: Any) -> Path:
    """`<output.dir>-scaling`: beside the run's results, which a later run replaces whole."""
    from .config import load_config

    target = Path(load_config(config).output.dir)
    return target.with_name(target.name + "-scaling")


def write_report(report: ScalingReport, out: str | os.PathLike) -> Path:
    """`scaling.md`, `scaling.svg` and `scaling.json` in `out`, replaced atomically."""
    from .report import AtomicFolder, write_json

    with AtomicFolder(out, written_by="backtester scale") as folder:
        (folder.path / "scaling.md").write_text(render_markdown(report), encoding="utf-8")
        (folder.path / "scaling.svg").write_text(render_svg(report), encoding="utf-8")
        write_json(report.to_dict(), folder.path / "scaling.json")
        return folder.commit()


def run_scale_command(config: str | os.PathLike | Mapping[str, Any], backends: str, jobs: str,
                      out: str | os.PathLike | None = None, *, repeat: int = 1,
                      stream=None) -> int:
    """``backtester scale CONFIG --backends threading,loky --jobs 1,2,4 [--out DIR]``.

    Prints the table, writes the report to `out` (default `default_out`) and returns the exit
    status: 0, or 1 when some setting's results differ from the sequential run's. Bad input
    raises `BacktestError` (the CLI prints it and exits 2).
    """
    stream = sys.stdout if stream is None else stream
    names, counts = parse_backends(backends), parse_jobs(jobs)
    target = Path(out) if out is not None else default_out(config)
    began = time.perf_counter()
    report = scale(config, names, counts, repeat=repeat)
    stream.write(render_markdown(report))
    folder = write_report(report, target)
    stream.write(f"\nwrote {folder / 'scaling.md'} and {folder / 'scaling.svg'} "
                 f"({time.perf_counter() - began:.1f} s)\n")
    if not report.identical:
        print("error: some parallel results differ from the sequential run", file=sys.stderr)
        return 1
    return 0
