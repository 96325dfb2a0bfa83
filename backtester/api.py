"""The public Python API: `backtester.run(config, **overrides) -> RunResult`.

For example::

    import backtester
    result = backtester.run("configs/rsi.yaml", backend="threading", n_jobs=2, write=False)
    result.alerts.head()          # timestamp (tz-aware), symbol, alert, close, indicator values
    result.timing["speedup"]

`config` is a path, a dict with the YAML's structure, or a loaded `Config`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import pandas as pd

from . import quality, report, stats
from .bars import BarSet, load_bars
from .cluster import ClusterResult
from .config import Config, load_config
from .errors import ConfigError
from .execution import (
    ExecutionReport,
    effective_n_jobs,
    outer_joblib_config,
    run_clusters,
    run_task,
    sweep_leftovers,
    warm_task,
)
from .merge import Merged, merge
from .plan import Plan, compile_plan
from .quality import DataQuality
from .schedule import Layout, schedule

__all__ = ["RunResult", "prepare", "run"]


@dataclass(frozen=True)
class RunResult:
    """A finished run: DataFrames of events, statistics, the timing report and the manifest."""

    config: Config
    plan: Plan
    alerts: pd.DataFrame
    forward: pd.DataFrame
    trades: pd.DataFrame
    summary: dict[str, Any]          # summary.json's content; the statistics dict is ["stats"]
    stats: pd.DataFrame              # one row per alert plus "(all)" (`stats.stats_frame`)
    timing: dict[str, Any]
    manifest: dict[str, Any]
    output_dir: Path | None = None
    layout: Layout | None = field(default=None, repr=False)
    equity: pd.DataFrame | None = field(default=None, repr=False)   # equity.parquet's rows
    quality: DataQuality | None = field(default=None, repr=False)   # quality.json's counts


@dataclass(frozen=True)
class Prepared:
    """A validated config with its data loaded, its plan compiled and its clusters laid out."""

    config: Config
    plan: Plan
    bars: BarSet
    layout: Layout
    backend: str
    backend_reason: str
    n_workers: int
    output_label: str = "output.dir"      # how errors name the results folder's setting
    output_hint: str | None = None
    quality: DataQuality | None = None     # counted on the bars as loaded, before any fill


# How errors name an override, by where it came from (`overrides_from`).
_FLAGS = {"backend": "--backend", "n_jobs": "--n-jobs", "out": "--out",
          "compare_sequential": "--compare-sequential", "cluster_by": "--cluster-by",
          "address": "--address"}


def prepare(config: str | os.PathLike | Mapping[str, Any] | Config, *,
            bars: BarSet | None = None, check_output: bool = False,
            overrides_from: str = "argument", **overrides) -> Prepared:
    """Validate the config and rules, load and validate the data, and lay out the clusters.

    Every input error surfaces here, before any computation, as a `BacktestError`. An override
    that is invalid is blamed on itself, not on the config file: ``--n-jobs: ...`` when
    `overrides_from` is ``"command line"``, ``argument n_jobs: ...`` otherwise. With
    `check_output`, the results folder is checked too (`report.check_target`): a run never
    starts only to find it may not replace what is there.
    """
    overrides = _address_means_dask(overrides, overrides_from)
    outer = outer_joblib_config() if overrides.get("backend") is None else None
    cfg = _apply_overrides(load_config(config), overrides, overrides_from)
    compile_plan(cfg)  # rule errors before any data is read
    output_label, output_hint = _output_label(cfg, overrides, overrides_from)
    if check_output:
        report.check_target(cfg.output.dir, output_label, output_hint)
    if bars is None:
        bars = load_bars(cfg.data.path, timezone=cfg.data.timezone, calendar=cfg.data.calendar,
                         symbols=cfg.data.symbols, start=cfg.data.start, end=cfg.data.end,
                         bar_stamp=cfg.data.bar_stamp, day_starts=cfg.data.day_starts,
                         on_holiday_bars=cfg.data.on_holiday_bars)
    data_quality = quality.assess(bars, on_gaps=cfg.data.on_gaps)
    if cfg.data.on_gaps == "error":
        quality.check_no_gaps(data_quality, cfg.data.path)
    elif cfg.data.on_gaps == "fill" and data_quality.totals()["missing_bars"]:
        bars = quality.fill_gaps(bars, cfg.data.path)
    plan = compile_plan(cfg, bars.bar_ns)
    if outer is not None:
        backend, reason = "joblib-context", f"set by an enclosing joblib.parallel_config " \
            f"({outer['name']}, n_jobs={outer['n_jobs']})"
    else:
        backend, reason = choose_backend(cfg, plan, bars)
        if overrides.get("backend") is not None and reason == "configured":
            reason = overrides_from
    workers = effective_n_jobs(backend, cfg.execution.n_jobs)
    layout = schedule(plan, bars, cfg.schedule, workers)
    return Prepared(cfg, plan, bars, layout, backend, reason, workers, output_label, output_hint,
                    data_quality)


def _override_label(name: str, overrides_from: str) -> str:
    return _FLAGS.get(name, name) if overrides_from == "command line" else f"argument {name}"


def _address_means_dask(overrides: Mapping[str, Any], overrides_from: str) -> Mapping[str, Any]:
    """A scheduler `address` selects the Dask backend; another `backend` beside it is an error
    rather than an address silently ignored."""
    if overrides.get("address") is None:
        return overrides
    if overrides.get("backend") not in (None, "dask"):
        raise ConfigError(_override_label("address", overrides_from), "",
                          f"a scheduler address needs the dask backend, not "
                          f"{overrides['backend']!r}", "leave the backend out or make it dask")
    return {**overrides, "backend": "dask"}


def _apply_overrides(cfg: Config, overrides: Mapping[str, Any], overrides_from: str) -> Config:
    """`cfg.with_overrides(...)`, one value at a time so that an error names that value."""
    for name, value in overrides.items():
        if value is None:
            continue
        try:
            cfg = cfg.with_overrides(**{name: value})
        except ConfigError as exc:
            raise ConfigError(_override_label(name, overrides_from), "", exc.message,
                              exc.hint) from None
    return cfg


def _output_label(cfg: Config, overrides: Mapping[str, Any],
                  overrides_from: str) -> tuple[str, str]:
    """How errors about the results folder name its setting, and the hint they give."""
    if overrides.get("out") is not None:
        label = _override_label("out", overrides_from)
        flag = "--out" if overrides_from == "command line" else "out="
        return label, f"choose another {flag}"
    return f"{cfg.source}: output.dir", "choose another output.dir, or pass --out"


MIN_PARALLEL_SECONDS = 0.5   # below this much estimated work, workers cost more than they save


def choose_backend(cfg: Config, plan: Plan, bars: BarSet) -> tuple[str, str]:
    """The backend to use and why: the config's, unless it says `auto` (the default, when the
    config has no `execution` section). With `auto`, a scheduler `address` means Dask.

    `auto` measures instead of guessing: it times one small cluster in this process (which also
    loads every kernel, as the run needs anyway), extrapolates to all the bars, and runs
    sequentially when that estimate is under `MIN_PARALLEL_SECONDS`; otherwise threads when every
    kernel in the plan releases the GIL, processes when one does not.
    """
    backend = cfg.execution.backend
    if backend != "auto":
        return backend, "configured"
    if cfg.execution.address:
        return "dask", "execution.address names a Dask scheduler"
    if effective_n_jobs("threading", cfg.execution.n_jobs) == 1:
        return "sequential", "one worker"
    probe = schedule(plan, bars, cfg.schedule, 1)
    task = warm_task(plan, probe.clusters, bars)
    if task is None:
        return "sequential", "no bars"
    run_task(*task)  # first call: loads kernels
    began = time.perf_counter()
    run_task(*task)
    per_bar = (time.perf_counter() - began) / max(1, task[1][0][0].n_read)
    estimate = per_bar * sum(c.n_read for c in probe.clusters)
    if estimate < MIN_PARALLEL_SECONDS:
        return "sequential", (f"estimated {estimate:.2f} s of work ({per_bar * 1e9:.0f} ns/bar): "
                              f"too little for workers to pay off")
    if plan.releases_gil:
        return "threading", (f"estimated {estimate:.1f} s of work; every kernel in the plan "
                             f"releases the GIL, so threads share the bars without copies")
    return "loky", f"estimated {estimate:.1f} s of work; some kernel holds the GIL: processes"


def run(config: str | os.PathLike | Mapping[str, Any] | Config, *, backend: str | None = None,
        n_jobs: int | None = None, out: str | os.PathLike | None = None,
        compare_sequential: bool | None = None, cluster_by: Any = None,
        address: str | None = None, write: bool = True,
        bars: BarSet | None = None,
        progress: Callable[[ClusterResult, int], None] | None = None,
        overrides_from: str = "argument") -> RunResult:
    """Run a backtest and (unless `write=False`) write its outputs atomically to `output.dir`.

    Keyword overrides take precedence over the config; `overrides_from` says where they came
    from (``"argument"``, or ``"command line"`` for the CLI) in errors and the timing report.
    The results folder may be new, empty or an earlier run's results (which carry
    `report.MARKER`): anything else there is refused (`BacktestError`) before the run starts,
    and so is a folder another run is writing (`FolderBusy`, see `report.results_lock`).
    Leftovers of killed runs are removed first, with one logged line (`sweep_leftovers`). With `compare_sequential`, the same
    clusters also run sequentially and `timing["identical"]` records whether both results match
    exactly (they must). `progress(result, total)` is called as each parallel cluster finishes;
    a `progress.start()` method, if it has one, is called just before the first is submitted.
    """
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    prep = prepare(config, bars=bars, backend=backend, n_jobs=n_jobs, out=out,
                   compare_sequential=compare_sequential, cluster_by=cluster_by, address=address,
                   check_output=write, overrides_from=overrides_from)
    # Held from here until the results are in place: a second run writing the same folder
    # stops at once (`FolderBusy`) instead of silently replacing this one's results.
    hold = report.results_lock(prep.config.output.dir, prep.output_label, prep.output_hint) \
        if write else contextlib.nullcontext()
    with hold:
        sweep_leftovers(prep.config.output.dir if write else None)
        return _run_prepared(prep, started, t0, write, progress)


def _run_prepared(prep: Prepared, started: dt.datetime, t0: float, write: bool,
                  progress: Callable[[ClusterResult, int], None] | None) -> RunResult:
    cfg, plan, barset, layout = prep.config, prep.plan, prep.bars, prep.layout
    clusters = layout.clusters
    exe = cfg.execution
    callback = None
    if progress is not None:
        def callback(result: ClusterResult) -> None:
            progress(result, len(clusters))

    # Load every kernel in this process before any clock starts, so neither run pays
    # first-call costs for the other.
    first = warm_task(plan, clusters, barset)
    if first is not None:
        run_task(*first)
    sequential: ExecutionReport | None = None
    if exe.compare_sequential and prep.backend != "sequential":
        sequential = run_clusters(plan, clusters, barset, backend="sequential", n_jobs=1)
    start_clock = getattr(progress, "start", None)
    if callable(start_clock):
        start_clock()   # data loading, warm-up and the sequential run are not the bar's to time
    parallel = run_clusters(plan, clusters, barset, backend=prep.backend, n_jobs=exe.n_jobs,
                            batch_size=exe.batch_size, address=exe.address, progress=callback)
    with _phase(progress, "merging", f"results of {len(clusters):,} clusters"):
        merged = merge(plan, parallel.results, barset)
        identical = None
        if sequential is not None:
            identical = same_events(merged, merge(plan, sequential.results, barset))
    timing = timing_report(cfg, prep, parallel, sequential, identical)
    summary = summarise(cfg, plan, barset, layout, merged)
    events = f"{len(merged.alerts):,} alerts, {len(merged.trades):,} trades"
    with _phase(progress, "statistics", events):
        run_stats, equity = statistics(cfg, barset, merged)
    summary["stats"] = run_stats
    manifest = make_manifest(cfg, prep, started, time.perf_counter() - t0)
    output_dir = None
    if write:
        with _phase(progress, "writing", f"{events} to {cfg.output.dir}"):
            output_dir = write_outputs(cfg, merged, summary, run_stats, timing, manifest,
                                       label=prep.output_label, hint=prep.output_hint,
                                       equity=equity, data_quality=prep.quality)
    return RunResult(config=cfg, plan=plan, alerts=merged.alerts, forward=merged.forward,
                     trades=merged.trades, summary=summary, stats=stats.stats_frame(run_stats),
                     timing=timing, manifest=manifest, output_dir=output_dir, layout=layout,
                     equity=equity, quality=prep.quality)


def statistics(cfg: Config, barset: BarSet, merged: Merged
               ) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """`summary.json`'s statistics dict and the account's equity curve (``equity.parquet``'s
    rows; None when no alert trades) for a merged run: the account marked to market on
    `barset`, annualised on the calendar's clock unless ``stats.periods_per_year`` says."""
    horizons = {h.label: h for a in cfg.alerts for h in a.forward}
    sides = {a.name: 1.0 if a.trade.side == "long" else -1.0
             for a in cfg.alerts if a.trade is not None}
    account = stats.build_account(merged.trades, barset, sides)
    run_stats = stats.compute_stats(
        merged.alerts, merged.trades, merged.forward, list(horizons.values()),
        timezone=barset.timezone, n_bars=barset.n_bars, n_resamples=cfg.stats.bootstrap,
        bars=barset, sides=sides, account=account,
        periods=stats.periods_per_year(barset.sessions, cfg.stats.periods_per_year),
        **stats.data_period(barset))
    return run_stats, account.frame(barset.timezone) if sides else None


def _phase(progress: Any, name: str, detail: str) -> contextlib.AbstractContextManager:
    """`progress.phase(name, detail)` where the progress reporter has one (the CLI's says on
    stderr what a long merge, statistics or writing phase is doing); otherwise nothing."""
    phase = getattr(progress, "phase", None)
    return phase(name, detail) if callable(phase) else contextlib.nullcontext()


def same_events(a: Merged, b: Merged) -> bool:
    """Bit-for-bit equality of the events of two merges (NaN equal to NaN)."""
    for x, y in ((a.alerts, b.alerts), (a.forward, b.forward), (a.trades, b.trades)):
        if x.shape != y.shape or list(x.columns) != list(y.columns):
            return False
        if not x.equals(y):
            return False
    return True


def timing_report(cfg: Config, prep: Prepared, parallel: ExecutionReport,
                  sequential: ExecutionReport | None, identical: bool | None) -> dict[str, Any]:
    bars = prep.bars.n_bars

    def block(r: ExecutionReport) -> dict[str, Any]:
        return {"backend": r.backend, "n_jobs": r.n_jobs, "tasks": r.n_tasks,
                "wall_seconds": r.wall_seconds, "startup_seconds": r.startup_seconds,
                "total_seconds": r.total_seconds, "cpu_seconds": r.cpu_seconds,
                "bars_per_second": bars / r.total_seconds if r.total_seconds > 0 else 0.0}

    timing: dict[str, Any] = {
        "name": cfg.name, "bars": bars, "symbols": len(prep.bars.symbols),
        "clusters": len(prep.layout.clusters), "layout": prep.layout.cluster_by,
        "layout_reason": prep.layout.reason, "backend_reason": prep.backend_reason,
        "parallel": block(parallel), "sequential": block(sequential) if sequential else None,
        "cluster_seconds": cluster_timings(parallel, prep.bars.timezone),
    }
    if sequential is not None:
        speedup = sequential.total_seconds / parallel.total_seconds
        steady = sequential.wall_seconds / parallel.wall_seconds
        timing.update(speedup=speedup, speedup_steady=steady,
                      efficiency=speedup / max(1, parallel.n_jobs), identical=identical,
                      verdict=timing_verdict(sequential, parallel, speedup))
    return timing


def cluster_timings(execution: ExecutionReport, timezone: str) -> list[dict[str, Any]]:
    """Per cluster, in cluster order: index, symbol, first and last exchange-local date of its
    signal bars, bars and compute seconds (in the worker)."""
    out = []
    for r in sorted(execution.results, key=lambda r: r.cluster.index):
        first, last = (pd.Timestamp(ns, tz="UTC").tz_convert(timezone).date().isoformat()
                       for ns in (r.cluster.start_ns, r.cluster.end_ns))
        out.append({"cluster": r.cluster.index, "symbol": r.cluster.symbol, "first": first,
                    "last": last, "bars": r.cluster.n_bars, "seconds": r.seconds})
    return out


# joblib's result retrieval sleeps this long between polls (`time.sleep(0.01)` in
# joblib/parallel.py), so a parallel run that finishes sooner still pays it.
JOBLIB_POLL_SECONDS = 0.01


def timing_verdict(sequential: ExecutionReport, parallel: ExecutionReport, speedup: float) -> str:
    """One line that says what the speedup means, so that a slow parallel run does not puzzle.

    When the sequential run took less than `MIN_PARALLEL_SECONDS`, or the parallel run was
    slower on a sequential run no longer than its worker start-up, the figures measure fixed costs
    (worker start-up, dispatching tasks, joblib's polling) rather than parallel compute; the
    line says so, with the figures, and where a meaningful comparison comes from. A parallel
    run slower on more work than that is not blamed on fixed costs: the line names what slows
    workers while they compute.
    """
    seq = sequential.total_seconds
    costs = (f"worker start-up {parallel.startup_seconds:.3f} s, {parallel.n_tasks} task "
             f"dispatches, joblib polling for results every {JOBLIB_POLL_SECONDS * 1000:.0f} ms")
    bench = ("measure on more data: `backtester synth` then `backtester scale` on a config "
             "reading it, or `make bench`")
    if speedup < 1 and (seq <= parallel.startup_seconds or seq < MIN_PARALLEL_SECONDS):
        return (f"parallel slower ({speedup:.2f}x): the sequential run took only {seq:.3f} s, "
                f"less than the parallel run's fixed costs ({costs}); {bench}")
    if speedup < 1:   # more work than the fixed costs, yet slower: they do not explain it
        return (f"parallel slower ({speedup:.2f}x) on a {seq:.2f} s sequential run, longer than "
                f"the parallel run's worker start-up ({parallel.startup_seconds:.3f} s): the "
                f"workers lost time while computing (fewer free cores than {parallel.n_jobs} "
                f"workers, the GIL with threads, or shipping bars and results); compare "
                f"backends and worker counts with `backtester scale`")
    if seq < MIN_PARALLEL_SECONDS:
        return (f"speedup {speedup:.2f}x on a sequential run of only {seq:.3f} s: it mostly "
                f"measures the parallel run's fixed costs ({costs}); {bench}")
    return (f"parallel {speedup:.2f}x faster than sequential with {parallel.n_jobs} workers "
            f"(efficiency {speedup / max(1, parallel.n_jobs):.2f}) on a {seq:.2f} s "
            f"sequential run")


def summarise(cfg: Config, plan: Plan, barset: BarSet, layout: Layout,
              merged: Merged) -> dict[str, Any]:
    """Fires per alert and per exchange-local hour of day, plus the run's shape."""
    alerts = merged.alerts
    per_alert = {a.name: 0 for a in plan.alerts}
    per_hour: dict[str, dict[str, int]] = {a.name: {} for a in plan.alerts}
    if len(alerts):
        for name, count in alerts.groupby("alert", sort=False).size().items():
            per_alert[str(name)] = int(count)
        hours = alerts["timestamp"].dt.hour
        for (name, hour), count in alerts.groupby([alerts["alert"], hours]).size().items():
            per_hour[str(name)][f"{int(hour):02d}"] = int(count)
    return {
        "name": cfg.name, "config": cfg.source, "bars": barset.n_bars,
        "symbols": list(barset.symbols), "clusters": len(layout.clusters),
        "first_bar": _iso(barset, min((b.timestamp[0] for b in barset.bars.values() if len(b)),
                                      default=None)),
        "last_bar": _iso(barset, max((b.timestamp[-1] for b in barset.bars.values() if len(b)),
                                     default=None)),
        "fires": per_alert, "fires_by_hour": per_hour, "candidates": merged.candidates,
        "suppressed_by_state": merged.suppressed, "trades": int(len(merged.trades)),
    }


def _iso(barset: BarSet, ns: Any) -> str | None:
    if ns is None:
        return None
    return pd.Timestamp(int(ns), tz="UTC").tz_convert(barset.timezone).isoformat()


@functools.cache
def _loaded_versions() -> tuple[tuple[str, str | None], ...]:
    # The modules this process runs cannot change version while it runs, and reading the
    # installed metadata costs ~30 ms: a script sweeping parameters pays it once.
    return tuple(report.versions().items())


def make_manifest(cfg: Config, prep: Prepared, started: dt.datetime,
                  seconds: float) -> dict[str, Any]:
    versions = dict(_loaded_versions())
    return {
        "engine": versions.get("backtester"),
        "git_revision": report.git_revision(),
        "versions": versions,
        "config": {"source": cfg.source, "sha256": cfg.content_hash, "name": cfg.name},
        "data": [{"path": f.path, "rows": f.rows, "sha256": f.sha256} for f in prep.bars.files],
        "layout": {"cluster_by": prep.layout.cluster_by, "clusters": len(prep.layout.clusters),
                   "warmup_bars": prep.plan.warmup_bars,
                   "warmup_sessions": prep.plan.warmup_sessions,
                   "lookahead_bars": prep.plan.lookahead_bars},
        "backend": prep.backend, "n_jobs": prep.n_workers,
        "started": started.isoformat(), "duration_seconds": seconds,
        "joblib_cpu_count": joblib.cpu_count(),
    }


def write_outputs(cfg: Config, merged: Merged, summary: dict, run_stats: dict, timing: dict,
                  manifest: dict, *, label: str = "output.dir", hint: str | None = None,
                  equity: pd.DataFrame | None = None,
                  data_quality: DataQuality | None = None) -> Path:
    """Every output file of a run, written into a temporary folder that replaces `output.dir`
    only when complete (`report.AtomicFolder`); `equity` (the account's curve) becomes
    ``equity.parquet`` when given, `data_quality` ``quality.json`` and a section of
    ``summary.md``."""
    with report.AtomicFolder(cfg.output.dir, label, hint) as folder:
        tmp = folder.path
        report.write_frame(merged.alerts, tmp, "alerts", report.ALERT_COLUMNS)
        if any(a.forward for a in cfg.alerts):
            report.write_frame(merged.forward, tmp, "forward", ["timestamp", "symbol", "alert"])
        if any(a.trade is not None for a in cfg.alerts):
            report.write_frame(merged.trades, tmp, "trades", report.TRADE_COLUMNS)
        if equity is not None:
            report.write_parquet(equity, tmp / "equity.parquet")
        report.write_json(summary, tmp / "summary.json")
        summary_md = stats.render_markdown(run_stats, title=cfg.name)
        if data_quality is not None:
            report.write_json(data_quality.to_dict(), tmp / "quality.json")
            summary_md = summary_md.rstrip("\n") + "\n\n" + quality.markdown(data_quality)
        (tmp / "summary.md").write_text(summary_md, encoding="utf-8")
        report.write_json(timing, tmp / "timing.json")
        (tmp / "timing.md").write_text(report.timing_markdown(timing), encoding="utf-8")
        report.write_json(manifest, tmp / "manifest.json")
        return folder.commit()
