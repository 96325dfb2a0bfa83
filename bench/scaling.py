"""Scaling benchmark: the same backtest on sequential, threading, loky and multiprocessing at
n_jobs 1 and 2 (or `--jobs`), each setting in a fresh subprocess.

Data: deterministic synthetic 1-minute bars (`backtester.synth`), one Parquet file per symbol,
cached under bench/out/scaling-data/ (generated once; more symbols only add files). At least
50 symbols x 1 year (~4.9M bars); unless `--symbols` is given, the symbol count grows until the
sequential run takes `--min-seconds` (10 s) on this machine, so that worker start-up does not
decide the figures. Config: 16 alerts over 12 distinct indicators (rsi, bbands, macd, ema, vwap,
stoch, adx, cci, highest, relative_volume, sma, atr), with cooldowns, time windows, forward
returns and bracket trades; written to bench/out/scaling-data/config.yaml (so
``backtester scale`` can be run on it).

Per setting: bars/s, end-to-end speedup (worker start-up included) and steady-state speedup
(excluded), efficiency, worker start-up, tasks, whether the events are bit-identical to the
sequential run's, and peak memory: RSS of the process tree sampled every 10 ms, RSS after
imports, the bytes of bars held, and (peak - baseline) / bars bytes (goal < 1.5), plus
`ru_maxrss` of the process and its reaped children. Also: joblib's own per-task overhead
and bare worker start-up per backend (trivial tasks), and a breakdown of where the parallel
time goes (compute inflation, parent CPU, idle/imbalance), and how bars reached the workers
(views for threads; for processes a memory-mapped copy written once per run, which the memory
figures include). A variant that shows what a proposed change would buy (`--variants`, on by
default): threading with glibc malloc's arenas limited to one.

Usage::

    python bench/scaling.py                   # calibrated size, jobs 1,2, best of 3
    python bench/scaling.py --quick           # small data, one repetition (smoke test)
    python bench/scaling.py --jobs 1,2,4,8,16 # larger machines

Prints a Markdown report and writes bench/out/scaling.md (and scaling.svg, scaling.json).
Goals (issue 6), end-to-end at n_jobs=2 on a 2-core machine: loky >= 1.85x, threading >= 1.8x,
peak memory < 1.5x the bars held, identical results everywhere.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "out"
DATA = OUT / "scaling-data"
START, SEED = "2023-01-03", 11
GOALS = {"loky": 1.85, "threading": 1.8}
MEMORY_GOAL = 1.5

# 16 alerts over 12 distinct indicators; parameters vary so each alert computes its own series.
# Alerts with trades skip the last minutes of the session, as a trader opening a position would.
# (This once also kept clear of a merge bug with a signal on the data's last bar, fixed in
# 0deaae4: trades are matched to fires by signal row. It stays so figures remain comparable.)
ALERTS = [
    {"name": f"rsi_dip_{p}", "when": f"crosses_below(rsi({p}), 30) and close < bbands({p + 6}, 2).lower",
     "skip_first": "15min", "skip_last": "5min", "forward": [15, 60],
     "trade": {"side": "long", "take_profit": "1%", "stop_loss": "0.5%", "max_bars": 60}}
    for p in (9, 14)
] + [
    {"name": f"macd_up_{f}", "when": f"crosses_above(macd({f}, {f + 14}, 9).macd, "
     f"macd({f}, {f + 14}, 9).signal) and close > ema({e}) and close > vwap",
     "cooldown": "10 bars", "forward": [15]}
    for f, e in ((12, 200), (8, 100))
] + [
    {"name": f"stoch_adx_{k}", "when": f"stoch({k}, 3, 3).k < 20 and adx({k}) > 25 and cci({k + 6}) < -100",
     "cooldown": "30min"}
    for k in (14, 21)
] + [
    {"name": f"breakout_{n}", "when": f"close > prev(highest(high, {n}), 1) and relative_volume(10) > 2 "
     f"and close > sma({n + 20})", "between": ["10:00", "15:30"],
     "trade": {"side": "long", "take_profit": "2atr", "stop_loss": "1atr", "max_bars": 90}}
    for n in (30, 60)
] + [
    {"name": f"rsi_fade_{p}", "when": f"crosses_above(rsi({p}), 70) and close > bbands({p + 10}, 2.5).upper",
     "cooldown": "15min", "skip_last": "5min", "forward": [30],
     "trade": {"side": "short", "take_profit": "0.8%", "stop_loss": "0.4%", "max_bars": 45}}
    for p in (7, 21)
] + [
    {"name": f"trend_pullback_{e}", "when": f"close > ema({e}) and crosses_below(close, sma({e // 4})) "
     f"and adx(14) > 20", "once_per_day": True, "forward": [30]}
    for e in (120, 240)
] + [
    {"name": f"cci_reversal_{n}", "when": f"crosses_above(cci({n}), -100) and stoch(14, 3, 3).d < 30 "
     f"and close < vwap", "cooldown": "20min"}
    for n in (14, 40)
] + [
    {"name": f"atr_squeeze_{n}", "when": f"atr({n}) < 0.5 * sma(atr({n}), 60) and "
     f"crosses_above(close, bbands(20, 2).upper)", "forward": [60]}
    for n in (14, 30)
]
INDICATORS = ("rsi", "bbands", "macd", "ema", "vwap", "stoch", "adx", "cci", "highest",
              "relative_volume", "sma", "atr")


# --------------------------------------------------------------------------------------------
# Data and config


def end_date(years: float) -> str:
    start = dt.date.fromisoformat(START)
    return (start + dt.timedelta(days=int(round(365 * years)) - 5)).isoformat()


def data_folder(years: float) -> Path:
    return DATA / f"bars-{years:g}y-seed{SEED}"


def ensure_data(n_symbols: int, years: float) -> Path:
    """One Parquet file per symbol under the cache folder; only missing symbols are generated."""
    from backtester import synth

    folder = data_folder(years)
    folder.mkdir(parents=True, exist_ok=True)
    names = synth.symbol_names(n_symbols)
    missing = [s for s in names if not (folder / f"{s}.parquet").exists()]
    for first in range(0, len(missing), 25):          # in chunks: bounded memory
        chunk = missing[first:first + 25]
        began = time.perf_counter()
        frame = synth.generate(chunk, START, end_date(years), seed=SEED)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
        try:
            synth.write(frame, staging / "bars")
            for path in (staging / "bars").iterdir():
                os.replace(path, folder / path.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log(f"generated {len(frame):,} bars of {len(chunk)} symbols in "
            f"{time.perf_counter() - began:.1f}s -> {folder}")
    return folder


def make_config(folder: Path, n_symbols: int, *, backend: str = "loky", n_jobs: int = 2) -> dict:
    from backtester import synth

    return {"name": "bench-scaling",
            "data": {"path": str(folder), "symbols": synth.symbol_names(n_symbols),
                     "timezone": "America/New_York", "calendar": "XNYS"},
            "alerts": ALERTS,
            "schedule": {"cluster_by": "auto"},
            "execution": {"backend": backend, "n_jobs": n_jobs},
            "output": {"dir": str(OUT / "scaling-results")}}


def write_config_yaml(config: dict) -> Path:
    import yaml

    path = DATA / "config.yaml"
    path.write_text("# Generated by bench/scaling.py: the scaling benchmark's config.\n"
                    + yaml.safe_dump(config, sort_keys=False, width=100), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Memory: proportional set size (PSS) of a process tree from /proc (Linux), sampled in a thread.
# PSS splits shared pages (libraries, fork's copy-on-write pages, memory maps) between the
# processes sharing them, so a tree's sum counts every page once. Pages of tmpfs files (joblib's
# memmaps, the engine's memory-mapped bars) are counted as the files' size instead, mapped or not.


def _pss(pid: int) -> int:
    """PSS minus shared-memory (tmpfs) pages, in bytes; RSS where smaps_rollup is missing."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = {}
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Pss", "Pss_Shmem"):
                    fields[key] = int(rest.split()[0]) * 1024
        return fields.get("Pss", 0) - fields.get("Pss_Shmem", 0)
    except (OSError, ValueError, IndexError):
        try:
            with open(f"/proc/{pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out += [int(c) for c in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def tree_memory(root: int | None = None) -> tuple[int, int]:
    """Summed PSS of `root` and all its descendants, and how many processes that is."""
    root = os.getpid() if root is None else root
    seen, stack, total = set(), [root], 0
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _pss(pid)
        stack += _children(pid)
    return total, len(seen)


def folder_bytes(path: str | None) -> int:
    total = 0
    if not path or not os.path.isdir(path):
        return 0
    for base, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(base, name)).st_blocks * 512
            except OSError:
                pass
    return total


def shared_bars_bytes() -> int:
    """Bytes of the memory-mapped bars this process's engine wrote for process workers (on
    /dev/shm, or the temp folder when /dev/shm had no room: counted either way)."""
    import glob

    return sum(folder_bytes(path) for root in ("/dev/shm", tempfile.gettempdir())
               for path in glob.glob(os.path.join(root, f"backtester-bars-{os.getpid()}-*")))


class PeakSampler(threading.Thread):
    """Samples the tree's PSS plus a tmpfs folder's size; keeps peaks, over the whole process
    and since the last `new_phase()`.

    Reading smaps_rollup walks a process's page tables (~10 ms for a few GB), so the sampler
    waits `cost_factor` times as long as each sample took, at least `interval`: it costs the
    measured run at most ~2% of one core, at the price of a coarser peak on big processes.
    """

    def __init__(self, interval: float = 0.025, tmp_folder: str | None = None,
                 cost_factor: float = 50.0):
        super().__init__(daemon=True)
        self.interval, self.tmp_folder, self.cost_factor = interval, tmp_folder, cost_factor
        self.peak = self.phase_peak = self.tmp_peak = 0
        self.samples, self.seconds = 0, 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            began = time.perf_counter()
            self.sample()
            spent = time.perf_counter() - began
            self._halt.wait(max(self.interval, self.cost_factor * spent))

    def current(self) -> int:
        began = time.perf_counter()
        tmp = folder_bytes(self.tmp_folder) + shared_bars_bytes()
        self.tmp_peak = max(self.tmp_peak, tmp)
        total = tree_memory()[0] + tmp
        self.samples += 1
        self.seconds += time.perf_counter() - began
        return total

    def sample(self) -> None:
        total = self.current()
        self.peak = max(self.peak, total)
        self.phase_peak = max(self.phase_peak, total)

    def new_phase(self) -> None:
        self.phase_peak = self.current()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()


def bars_nbytes(barset) -> int:
    return sum(getattr(b, f).nbytes for b in barset.bars.values()
               for f in ("timestamp", "open", "high", "low", "close", "volume", "session"))


# --------------------------------------------------------------------------------------------
# One setting, in a fresh process


def events_digest(merged) -> str:
    """SHA-256 of the merged events, bit for bit (column names, dtypes, raw values)."""
    import numpy as np

    h = hashlib.sha256()
    for frame in (merged.alerts, merged.forward, merged.trades):
        h.update(repr((list(frame.columns), [str(t) for t in frame.dtypes], len(frame))).encode())
        for column in frame.columns:
            series = frame[column]
            if hasattr(series.dtype, "tz") or str(series.dtype).startswith("datetime"):
                values = series.array.asi8 if hasattr(series.array, "asi8") else series.to_numpy()
                h.update(np.asarray(values).tobytes())
            elif isinstance(series.dtype, np.dtype) and series.dtype.kind in "fiub":
                h.update(np.ascontiguousarray(series.to_numpy()).tobytes())
            # Extension dtypes (a nullable boolean where an alert lacks a horizon) go by value:
            # their to_numpy() is an object array, whose bytes are pointers.
            else:
                h.update("\x1f".join(map(str, series.tolist())).encode())
    return h.hexdigest()


def _idle_worker(seconds: float) -> int:
    import backtester.cluster  # noqa: F401  (what a worker imports to run clusters)
    import backtester.execution  # noqa: F401

    time.sleep(seconds)
    return os.getpid()


def _shutdown_loky() -> None:
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def baseline_memory(backend: str, n_jobs: int) -> int:
    """The tree's memory with the engine's modules imported everywhere and no bars loaded:
    this process, plus `n_jobs` idle process workers for loky and multiprocessing."""
    if backend not in ("loky", "multiprocessing") or n_jobs == 1:
        return tree_memory()[0]
    import joblib

    peak, done = [0], threading.Event()

    def probe() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_memory()[0])
            done.wait(0.05)

    watcher = threading.Thread(target=probe, daemon=True)
    watcher.start()
    if backend == "multiprocessing":
        with _process_pool(n_jobs) as pool:
            list(pool.map(_idle_worker, [1.0] * n_jobs))
    else:
        joblib.Parallel(n_jobs=n_jobs, backend=backend, batch_size=1)(
            joblib.delayed(_idle_worker)(1.0) for _ in range(n_jobs))
    done.set()
    watcher.join()
    if backend == "loky":
        _shutdown_loky()
    return peak[0]


def child(spec: dict) -> dict:
    """Run one (backend, n_jobs[, variant]) setting `repeat` times; report timings and memory."""
    import ctypes
    import gc
    import resource

    if spec.get("variant") == "arena1":
        ctypes.CDLL("libc.so.6").mallopt(-8, 1)       # M_ARENA_MAX = 1 (glibc)
    tmp = tempfile.mkdtemp(prefix="bt-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm")
                           else None)
    os.environ["JOBLIB_TEMP_FOLDER"] = tmp
    import exchange_calendars  # noqa: F401  (imported by loading: part of the baseline)
    import pyarrow.parquet  # noqa: F401

    from backtester import api
    from backtester.execution import run_clusters, run_task, warm_task
    from backtester.merge import merge

    backend, n_jobs, repeat = spec["backend"], spec["n_jobs"], spec["repeat"]
    sampler = PeakSampler(tmp_folder=tmp)
    try:
        baseline = baseline_memory(backend, n_jobs)
        sampler.start()
        began = time.perf_counter()
        prep = api.prepare(spec["config"], backend=spec["layout_backend"],
                           n_jobs=spec["layout_jobs"])
        load_seconds = time.perf_counter() - began
        barset, plan, layout = prep.bars, prep.plan, prep.layout
        clusters = layout.clusters
        held = bars_nbytes(barset)
        prep = None
        gc.collect()
        loaded = sampler.current()
        load_peak = max(sampler.peak, loaded)
        first = warm_task(plan, clusters, barset)
        if first is not None:
            run_task(*first)
        sampler.new_phase()
        runs = []
        for _ in range(repeat):
            if backend == "loky":
                _shutdown_loky()          # every repetition starts fresh workers
            gc.collect()
            cpu0 = time.process_time()
            report = run_clusters(plan, clusters, barset, backend=backend, n_jobs=n_jobs,
                                  batch_size=spec.get("batch_size", "auto"))
            parent_cpu = time.process_time() - cpu0
            merged = merge(plan, report.results, barset)
            runs.append({"wall": report.wall_seconds, "startup": report.startup_seconds,
                         "total": report.total_seconds, "cpu": report.cpu_seconds,
                         "parent_cpu": parent_cpu, "tasks": report.n_tasks,
                         "n_jobs": report.n_jobs,
                         "cluster_seconds": list(report.cluster_seconds),
                         "digest": events_digest(merged), "shipping": report.shipping,
                         "events": int(len(merged.alerts)), "trades": int(len(merged.trades))})
            del report, merged
        run_peak = sampler.phase_peak
        if backend == "loky":
            _shutdown_loky()
        import pyarrow
        before = sampler.current()
        pyarrow.default_memory_pool().release_unused()
        arrow_retained = before - sampler.current()
    finally:
        sampler.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    self_usage = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"backend": backend, "variant": spec.get("variant"), "requested_jobs": n_jobs,
            "runs": runs, "bars": barset.n_bars, "symbols": len(barset.symbols),
            "clusters": len(clusters), "layout": layout.cluster_by, "reason": layout.reason,
            "load_seconds": load_seconds, "bars_bytes": held, "baseline": baseline,
            "loaded": loaded, "load_peak": load_peak, "run_peak": run_peak,
            "peak": sampler.peak, "tmpfs_peak": sampler.tmp_peak,
            "ratio_run": (run_peak - baseline) / held, "ratio_all": (sampler.peak - baseline) / held,
            "maxrss_self": self_usage.ru_maxrss * 1024, "maxrss_children": kids.ru_maxrss * 1024,
            "arrow_retained": arrow_retained, "sampler_samples": sampler.samples,
            "sampler_seconds": sampler.seconds}


def run_child(spec: dict, timeout: float = 1800) -> dict:
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run([sys.executable, __file__, "--child"], input=json.dumps(spec),
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1],
                "backend": spec["backend"], "variant": spec.get("variant"),
                "requested_jobs": spec["n_jobs"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# The engines' own costs: per-task overhead and bare worker start-up (joblib for sequential,
# threading and loky; a concurrent.futures process pool for multiprocessing, as the engine runs)


def _noop(x=None):
    return x


def _process_pool(n_jobs: int):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=n_jobs, mp_context=multiprocessing.get_context())


def task_overhead(backend: str, n_jobs: int, n_tasks: int) -> float:
    """Seconds per trivial task on warm workers (one task per submission, as the engine does)."""
    import joblib

    if backend == "multiprocessing" and n_jobs > 1:
        from concurrent.futures import as_completed

        with _process_pool(n_jobs) as pool:
            list(pool.map(_noop, range(4 * n_jobs)))   # warm
            began = time.perf_counter()
            for future in as_completed([pool.submit(_noop, i) for i in range(n_tasks)]):
                future.result()
            return (time.perf_counter() - began) / n_tasks
    with joblib.Parallel(n_jobs=n_jobs, backend=backend, batch_size=1,
                         pre_dispatch="2*n_jobs", return_as="generator_unordered") as parallel:
        list(parallel(joblib.delayed(_noop)(i) for i in range(4 * n_jobs)))   # warm
        began = time.perf_counter()
        list(parallel(joblib.delayed(_noop)(i) for i in range(n_tasks)))
        return (time.perf_counter() - began) / n_tasks


def bare_startup(backend: str, n_jobs: int, repeat: int) -> float:
    """Seconds to start `n_jobs` fresh workers and run one trivial task on each (best of)."""
    import joblib

    best = math.inf
    for _ in range(repeat):
        if backend == "loky":
            _shutdown_loky()
        began = time.perf_counter()
        if backend == "multiprocessing" and n_jobs > 1:
            with _process_pool(n_jobs) as pool:
                list(pool.map(_noop, range(n_jobs)))
        else:
            joblib.Parallel(n_jobs=n_jobs, backend=backend, batch_size=1)(
                joblib.delayed(_noop)(i) for i in range(n_jobs))
        best = min(best, time.perf_counter() - began)
    if backend == "loky":
        _shutdown_loky()
    return best


# --------------------------------------------------------------------------------------------
# Report


def best_run(result: dict) -> dict:
    return min(result["runs"], key=lambda r: r["total"])


def label(result: dict) -> str:
    variant = result.get("variant")
    return result["backend"] + (f" [{VARIANTS[variant]}]" if variant else "")


VARIANTS = {"arena1": "M_ARENA_MAX=1 (proposed)"}


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def render(results: list[dict], overhead: dict, startup: dict, meta: dict) -> str:
    seq = next(r for r in results if r["backend"] == "sequential" and "error" not in r)
    sbest = best_run(seq)
    seq_digest = sbest["digest"]
    seq_clusters = sum(sbest["cluster_seconds"])
    lines = [
        "# Scaling benchmark", "",
        f"{meta['machine']}; best of {meta['repeat']} per setting, each setting in a fresh "
        f"process (loky workers restarted every repetition); {meta['date']}.", "",
        f"- data: {seq['bars']:,} bars = {seq['symbols']} symbols x {meta['years']:g} year(s) of "
        f"1-minute bars ({mb(seq['bars_bytes'])} MB of arrays), loaded in "
        f"{seq['load_seconds']:.1f}s",
        f"- config: {len(ALERTS)} alerts over {len(INDICATORS)} indicators "
        f"({', '.join(INDICATORS)}); {meta['config_path']}",
        f"- layout: {seq['clusters']} clusters ({seq['layout']}: {seq['reason']})",
        f"- sequential: {sbest['total']:.2f}s, {seq['bars'] / sbest['total']:,.0f} bars/s"
        + ("" if sbest["total"] >= meta["min_seconds"] else
           f" (below the {meta['min_seconds']:g}s target: figures are start-up-sensitive)"), "",
        "## Speedup", "",
        "| backend | n_jobs | tasks | wall s | start-up s | total s | bars/s | speedup end-to-end "
        "| speedup steady | efficiency | identical | goal |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {label(r)} | {r['requested_jobs']} | | | | | | | | | | "
                         f"failed: {r['error'][:80]} |")
            continue
        b = best_run(r)
        speedup, steady = sbest["total"] / b["total"], sbest["wall"] / b["wall"]
        goal = ""
        if r["backend"] in GOALS and b["n_jobs"] == 2 and not r.get("variant"):
            ok = speedup >= GOALS[r["backend"]]
            goal = f"{'met' if ok else 'MISSED'} (>= {GOALS[r['backend']]}x)"
        same = all(x["digest"] == seq_digest for x in r["runs"])
        lines.append(
            f"| {label(r)} | {b['n_jobs']} | {b['tasks']} | {b['wall']:.2f} | {b['startup']:.2f} | "
            f"{b['total']:.2f} | {r['bars'] / b['total']:,.0f} | {speedup:.2f}x | {steady:.2f}x | "
            f"{speedup / max(1, b['n_jobs']):.2f} | {str(same).lower()} | {goal} |")
    lines += ["", "## Where the parallel time goes", "",
              "compute = sum of per-cluster seconds (inflation: vs the sequential run's "
              f"{seq_clusters:.2f}s); idle = wall - compute / workers (imbalance, shipping, "
              "waiting); parent CPU = the parent process during the run (dispatch, pickling, "
              "results); bars = how bars reached the workers (views: threads share the parent's "
              "arrays; memmap: a copy written once per run, mapped by each process).", "",
              "| backend | n_jobs | bars | compute s | inflation | wall s | ideal wall s | idle s | "
              "parent CPU s | slowest cluster s |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            continue
        b = best_run(r)
        compute = sum(b["cluster_seconds"])
        ideal = seq_clusters / max(1, b["n_jobs"])
        lines.append(
            f"| {label(r)} | {b['n_jobs']} | {b.get('shipping', '')} | {compute:.2f} | "
            f"{compute / seq_clusters:.2f}x | "
            f"{b['wall']:.2f} | {ideal:.2f} | {b['wall'] - compute / max(1, b['n_jobs']):.2f} | "
            f"{b['parent_cpu']:.2f} | {max(b['cluster_seconds'] or [0]):.3f} |")
    lines += ["", "## Peak memory", "",
              "Memory = summed PSS of the process and its workers (shared pages split between "
              "the processes sharing them, so each page counts once) plus the tmpfs files of "
              "joblib's memmaps and of the engine's memory-mapped bars for process workers (tmpfs "
              "peak); sampled every 25 ms. baseline = the same "
              "with every module imported (and the process workers started, idle) before any "
              "bars are loaded. ratio = (peak - baseline) / bars bytes, over the runs only and "
              f"including the data loading; goal < {MEMORY_GOAL}. `ru_maxrss`: the process, and "
              "its largest reaped child (RSS, shared pages included). pyarrow pool retained: "
              "memory pyarrow's allocator still held after the runs, freed by "
              "`pyarrow.default_memory_pool().release_unused()` (part of every peak above). "
              "samples: memory samples taken (the sampler backs off to stay under ~2% of a "
              "core).", "",
              "| backend | n_jobs | bars MB | baseline MB | after load MB | peak loading MB | "
              "peak running MB | ratio running | ratio incl. loading | tmpfs peak MB | "
              "pyarrow pool retained MB | ru_maxrss self / child MB | samples |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in results:
        if "error" in r:
            continue
        b = best_run(r)
        lines.append(
            f"| {label(r)} | {b['n_jobs']} | {mb(r['bars_bytes'])} | {mb(r['baseline'])} | "
            f"{mb(r['loaded'])} | {mb(r['load_peak'])} | {mb(r['run_peak'])} | "
            f"{r['ratio_run']:.2f} | {r['ratio_all']:.2f} | {mb(r['tmpfs_peak'])} | "
            f"{mb(r['arrow_retained'])} | {mb(r['maxrss_self'])} / {mb(r['maxrss_children'])} | "
            f"{r['sampler_samples']} |")
    lines += ["", "## Per-task overhead and worker start-up", "",
              "Trivial tasks on warm workers, batch_size=1 (as the engine submits): the parent's "
              "cost per task. Bare start-up: fresh workers running one trivial task each; "
              "engine start-up: the engine's own (the memory-mapped copy of the bars for "
              "processes, imports, numba kernels, one warm cluster per "
              "worker), from the runs above.", "",
              "| backend | n_jobs | ms per task | bare start-up s | engine start-up s | "
              "tasks x overhead / compute |", "|---|---:|---:|---:|---:|---:|"]
    for key, per_task in overhead.items():
        backend, n = key.split(":")
        n = int(n)
        engine = [best_run(r)["startup"] for r in results if "error" not in r
                  and r["backend"] == backend and not r.get("variant")
                  and best_run(r)["n_jobs"] == n]
        tasks = [best_run(r)["tasks"] for r in results if "error" not in r
                 and r["backend"] == backend and not r.get("variant")
                 and best_run(r)["n_jobs"] == n]
        share = f"{tasks[0] * per_task / seq_clusters:.2%}" if tasks else ""
        lines.append(f"| {backend} | {n} | {per_task * 1e3:.3f} | "
                     f"{startup.get(key, float('nan')):.3f} | "
                     f"{engine[0] if engine else float('nan'):.3f} | {share} |")
    return "\n".join(lines) + "\n"


def scaling_report(results: list[dict]):
    """The benchmark's settings as a `backtester.scaling.ScalingReport` (for the SVG chart)."""
    from backtester.scaling import ScalingPoint, ScalingReport

    ok = [r for r in results if "error" not in r and not r.get("variant")]
    seq = next(r for r in ok if r["backend"] == "sequential")
    sbest = best_run(seq)

    def point(r: dict) -> ScalingPoint:
        b = best_run(r)
        return ScalingPoint(
            backend=r["backend"], n_jobs=b["n_jobs"], wall_seconds=b["wall"],
            startup_seconds=b["startup"], cpu_seconds=b["cpu"], n_tasks=b["tasks"],
            identical=all(x["digest"] == sbest["digest"] for x in r["runs"]),
            speedup=sbest["total"] / b["total"], speedup_steady=sbest["wall"] / b["wall"],
            bars=r["bars"])

    return ScalingReport(
        name="bench-scaling", bars=seq["bars"], symbols=seq["symbols"], clusters=seq["clusters"],
        layout=seq["layout"], layout_reason=seq["reason"], sequential=point(seq),
        points=tuple(point(r) for r in ok if r["backend"] != "sequential"))


# --------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def calibrate(symbols: int, years: float, min_seconds: float, cap: int) -> int:
    """Symbols needed for a sequential run of `min_seconds`, measured on `symbols` symbols
    (in a child process, like every measurement)."""
    folder = ensure_data(symbols, years)
    result = run_child({"backend": "sequential", "n_jobs": 1, "repeat": 2,
                        "config": make_config(folder, symbols), "layout_backend": "loky",
                        "layout_jobs": 2})
    if "error" in result:
        raise RuntimeError(f"calibration run failed: {result['error']}")
    seconds = best_run(result)["total"]
    if seconds >= min_seconds:
        return symbols
    grown = min(cap, math.ceil(symbols * min_seconds * 1.1 / seconds))
    log(f"calibration: {symbols} symbols run in {seconds:.2f}s sequentially; "
        f"growing to {grown} symbols for >= {min_seconds:g}s")
    return grown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=None,
                        help="fixed symbol count (default: >= 50, grown to --min-seconds)")
    parser.add_argument("--years", type=float, default=1.0)
    parser.add_argument("--min-seconds", type=float, default=10.0,
                        help="grow the data until the sequential run takes this long")
    parser.add_argument("--max-symbols", type=int, default=400)
    parser.add_argument("--backends", default="sequential,threading,loky,multiprocessing")
    parser.add_argument("--jobs", default="1,2", help="comma-separated n_jobs, e.g. 1,2,4,8,16")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-variants", dest="variants", action="store_false",
                        help="skip the proposed-fix variant (one malloc arena for threads)")
    parser.add_argument("--quick", action="store_true",
                        help="4 symbols x 2 months, one repetition, no calibration (smoke test)")
    parser.add_argument("--out", default=str(OUT / "scaling.md"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(sys.stdin.read()))))
        return 0
    if args.quick:
        args.symbols, args.years, args.repeat, args.min_seconds = \
            args.symbols or 4, 1 / 6, 1, 0.0
    jobs = [int(j) for j in args.jobs.split(",") if j.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if "sequential" not in backends:
        backends.insert(0, "sequential")

    began = time.perf_counter()
    symbols = args.symbols
    if symbols is None:
        symbols = calibrate(50, args.years, args.min_seconds, args.max_symbols)
    folder = ensure_data(symbols, args.years)
    config = make_config(folder, symbols)
    config_path = write_config_yaml(config)

    layout_backend = "loky"
    specs = []
    for backend in backends:
        for n in ([1] if backend == "sequential" else jobs):
            specs.append({"backend": backend, "n_jobs": n})
    if args.variants:
        for n in jobs:
            if n > 1 and "threading" in backends:
                specs.append({"backend": "threading", "n_jobs": n, "variant": "arena1"})
    results = []
    for spec in specs:
        spec.update(config=config, repeat=args.repeat, layout_backend=layout_backend,
                    layout_jobs=max(jobs))
        log(f"running {spec['backend']} n_jobs={spec['n_jobs']}"
            + (f" ({spec['variant']})" if spec.get("variant") else "") + " ...")
        result = run_child(spec)
        if "error" in result:
            log(f"  failed: {result['error']}")
        else:
            b = best_run(result)
            log(f"  total {b['total']:.2f}s (wall {b['wall']:.2f}s, start-up {b['startup']:.2f}s)")
        results.append(result)

    overhead, startup = {}, {}
    for backend in backends:
        for n in sorted({1, *jobs}):
            if backend == "sequential" and n > 1:
                continue
            key = f"{backend}:{n}"
            try:
                overhead[key] = task_overhead(backend, n, 400 if args.quick else 3000)
                if backend in ("loky", "multiprocessing"):
                    startup[key] = bare_startup(backend, n, args.repeat)
                else:
                    startup[key] = 0.0
            except Exception as exc:  # a backend this machine cannot run
                log(f"  overhead {key} failed: {exc}")

    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs "
                       f"({platform.processor() or platform.platform()}), Python "
                       f"{platform.python_version()}",
            "repeat": args.repeat, "years": args.years, "min_seconds": args.min_seconds,
            "config_path": config_path.relative_to(ROOT),
            "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M")}
    text = render(results, overhead, startup, meta)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    (out.with_suffix(".json")).write_text(json.dumps(
        {"meta": {k: str(v) for k, v in meta.items()}, "results": results,
         "overhead_seconds_per_task": overhead, "bare_startup_seconds": startup}, indent=1),
        encoding="utf-8")
    try:
        from backtester.scaling import render_svg
        out.with_suffix(".svg").write_text(render_svg(scaling_report(results)), encoding="utf-8")
    except StopIteration:
        pass
    log(f"wrote {out} ({time.perf_counter() - began:.0f}s)")
    seq_ok = all("error" not in r for r in results)
    return 0 if seq_ok else 1


if __name__ == "__main__":
    sys.exit(main())
