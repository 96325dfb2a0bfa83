"""Run clusters on an engine: joblib's sequential, threading and loky backends, a
`concurrent.futures` process pool for `multiprocessing`, or Dask for more than one machine.

The interface is small (see `Engine`): start the workers, run tasks streaming results back as
they finish, stop (cancelling what is left after an error or Ctrl-C). Two capability flags,
read by `run_clusters` and nowhere else, decide how bars reach the workers:

- `uses_threads`: the workers share this process's memory; a task carries zero-copy views of
  the parent's arrays (`SymbolBars.slice`).
- `shares_files`: process workers on this machine; the parent writes a read-optimised copy of
  the bars once per run (`SharedBars`: one ``.npy`` file per column, every symbol's rows one
  after another, on ``/dev/shm`` when it has room, else the temp folder) and a task carries
  only `BarSlice` descriptions (folder, symbol, row range). Each worker memory-maps the files
  read-only once (`open_slice` caches the maps per process) and slices them: no bar is pickled
  and the pages are shared by every worker. The folder is removed when the run ends, on error
  and on Ctrl-C too.
- neither (Dask on a remote cluster, whose workers need not see our files): the task carries a
  pickled copy of its clusters' slices, never the whole data set.

Why not joblib's `multiprocessing` backend: it runs on `multiprocessing.Pool`, which cannot
stream results and hangs forever when a worker process dies. `ProcessPoolEngine` uses
`concurrent.futures.ProcessPoolExecutor` instead, which streams with `as_completed` and raises
`BrokenProcessPool` when a worker dies (reported as `WorkerLost`), with the platform's default
start method like joblib's backend (fork on Linux: workers start in ~0.1 s with every module
and compiled kernel already loaded).

Engines are looked up by name in `ENGINES`; adding one is one `register_engine` call here.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import shutil
import signal
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import joblib
import numpy as np

from . import indicators
from .bars import BarSet, SymbolBars
from .cluster import ClusterResult, run_cluster
from .errors import ClusterError, OutputError, WorkerLost
from .plan import Plan
from .report import process_alive
from .schedule import Cluster
from .sessions import SessionTable

TEST_HOOK_ENV = "BACKTESTER_TEST_HOOK"
"""Test hook, read by `run_task` wherever it runs (worker processes inherit it): ``fail=N``
makes cluster N raise, ``sleep=S`` makes every cluster sleep S seconds first. It lets tests
reach the failure and interrupt paths of process backends, which a monkeypatch in the parent
cannot. Never set it otherwise."""


@dataclass(frozen=True)
class ExecutionReport:
    """What a run of all clusters cost, and its results (in completion order)."""

    backend: str
    n_jobs: int
    results: tuple[ClusterResult, ...]
    wall_seconds: float          # from the first task submitted to the last result, start-up excluded
    startup_seconds: float       # writing the workers' copy of the bars, starting (and warming) them
    cpu_seconds: float           # this process's CPU time plus the clusters' compute time elsewhere
    n_tasks: int
    cluster_seconds: tuple[float, ...] = field(default=())
    shipping: str = "views"      # how bars reached the workers: views | memmap | pickle

    @property
    def total_seconds(self) -> float:
        return self.wall_seconds + self.startup_seconds


# ---------------------------------------------------------------------------------------------
# Bars for process workers: a memory-mapped copy written once per run
# ---------------------------------------------------------------------------------------------

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume", "session")


@dataclass(frozen=True)
class BarSlice:
    """Rows ``[start, stop)`` of the column files in `folder` (absolute rows: every symbol's
    rows follow one another), which hold `symbol`'s bars there. What a task carries instead of
    the bars themselves; `open_slice` turns it into `SymbolBars` in the worker."""

    folder: str
    symbol: str
    start: int
    stop: int


class SharedBars:
    """A read-optimised copy of a `BarSet` for process workers, removed by `close()`.

    Use as a context manager: ``with SharedBars(barset) as shared: shared.slice("SYNA", 0, 390)``.
    `folder` holds one ``.npy`` file per column (`COLUMNS`) with every symbol's rows one after
    another (in `barset.symbols` order); `offsets[symbol]` is the symbol's first row there.
    Written with plain file writes (a full disk raises `OSError`, never a bus error), on
    ``/dev/shm`` when it has room for them, else in the temp folder. Folders left by runs that
    were killed before they could clean up are removed when the next one is written.
    """

    def __init__(self, barset: BarSet, root: str | None = None):
        lengths = [len(barset.bars[s]) for s in barset.symbols]
        self.offsets = dict(zip(barset.symbols, np.cumsum([0, *lengths[:-1]]).tolist()))
        total = int(sum(lengths))
        nbytes = sum(getattr(b, c).nbytes for b in barset.bars.values() for c in COLUMNS)
        root = root or _shared_root(nbytes) or tempfile.gettempdir()
        _remove_stale_folders(root)
        self.folder = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=root)
        try:
            for column in COLUMNS:
                dtype = np.dtype(getattr(barset.bars[barset.symbols[0]], column).dtype) \
                    if barset.symbols else np.dtype(np.float64)
                with open(os.path.join(self.folder, f"{column}.npy"), "wb") as f:
                    np.lib.format.write_array_header_1_0(f, {
                        "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                        "shape": (total,)})
                    for symbol in barset.symbols:
                        values = getattr(barset.bars[symbol], column)
                        np.ascontiguousarray(values, dtype=dtype).tofile(f)
        except BaseException:
            self.close()
            raise

    def slice(self, symbol: str, start: int, stop: int) -> BarSlice:
        """The description of `symbol`'s rows ``[start, stop)``."""
        first = self.offsets[symbol]
        return BarSlice(self.folder, symbol, first + start, first + stop)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> SharedBars:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_PREFIX = "backtester-bars-"
# What a run puts in its shared folder: the column files, results of tasks (`ResultsFile`) and
# joblib's memory-mapped arguments (`JoblibEngine` points joblib's temp folder here).
_SHARED_NAMES = (*(f"{c}.npy" for c in COLUMNS), "results-", "joblib_memmapping_folder_")


def _remove_stale_folders(root: str) -> list[str]:
    """Remove the shared folders of runs whose process no longer exists (killed by SIGKILL, or
    by SIGTERM outside the CLI, which skip the clean-up), so such leftovers do not pile up in
    memory on ``/dev/shm``. Only folders named after a dead process and holding nothing but
    what a run puts there are removed; returns their paths."""
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return []
    removed = []
    for entry in entries:
        if not entry.startswith(_PREFIX):
            continue
        pid = entry[len(_PREFIX):].split("-", 1)[0]
        folder = os.path.join(root, entry)
        if not pid.isdigit() or process_alive(int(pid)) or os.path.islink(folder):
            continue
        try:
            if not all(name.startswith(_SHARED_NAMES) for name in os.listdir(folder)):
                continue
            shutil.rmtree(folder)
        except OSError:
            continue
        removed.append(folder)
    return removed


def sweep_leftovers(results_target: str | os.PathLike | None = None) -> list[str]:
    """Remove what runs killed outright (SIGKILL, out of memory) left behind, and log one line
    saying what, when there was anything: the bars folders of their workers (on ``/dev/shm``
    and in the temp folder, joblib's memory maps inside them) and, beside `results_target`,
    their half-written results folders (`report.sweep_results_leftovers`). Returns the
    descriptions logged. `api.run` calls it before each run."""
    from . import report

    roots = dict.fromkeys(r for r in ("/dev/shm", tempfile.gettempdir()) if os.path.isdir(r))
    bars = [folder for root in roots for folder in _remove_stale_folders(root)]
    done = []
    if bars:
        done.append(f"{len(bars)} worker bars folder{'s' * (len(bars) > 1)} ({bars[0]}"
                    + (f" and {len(bars) - 1} more" if len(bars) > 1 else "") + ")")
    if results_target is not None:
        parent = os.path.dirname(os.path.abspath(os.fspath(results_target)))
        done += report.sweep_results_leftovers(parent)
    report.log_swept(done)
    return done


PARENT_POLL_SECONDS = 0.2
_WATCHED_PARENT: int | None = None


def die_with_parent(parent_pid: int) -> None:
    """In a worker process, exit as soon as the run's main process `parent_pid` is gone.

    Without it, a main process killed by SIGKILL (or by SIGTERM outside the CLI) leaves loky
    and multiprocessing workers computing their tasks for minutes, holding memory and the
    bars' files. A daemon thread checks every `PARENT_POLL_SECONDS` that this process still has
    the parent it started with, and ends the process at once (``os._exit``) when not. A thread
    rather than ``prctl(PR_SET_PDEATHSIG)``: that signal fires when the *thread* that started
    the worker exits, and loky keeps its workers for later runs, which may start in a thread
    that ends before them. Also restores SIGTERM's default action, which a forked worker
    inherits from the CLI's handler (`cli.main`), so that stopping a worker stops it. Does
    nothing in `parent_pid` itself (threads) or when already watching.
    """
    global _WATCHED_PARENT
    if os.getpid() == parent_pid or _WATCHED_PARENT is not None:
        return
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # A worker forked inside `_signals_deferred` inherits its mask: take the signals again.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    watched = os.getppid()
    if watched != parent_pid and _gone(parent_pid):
        os._exit(1)   # the run ended before this worker started
    _WATCHED_PARENT = watched

    def watch() -> None:
        while os.getppid() == watched:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="backtester-parent-watch", daemon=True).start()


def _gone(pid: int) -> bool:
    """Process `pid` has ended, or is a zombie its own parent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2:][:1] in (b"Z", b"X")
    except OSError:
        return not process_alive(pid)


def _shared_root(nbytes: int) -> str | None:
    """``/dev/shm`` when it is a writable folder with room for `nbytes` (and a 25% margin);
    None (the temp folder) otherwise."""
    root = "/dev/shm"
    try:
        if os.path.isdir(root) and os.access(root, os.W_OK) and \
                shutil.disk_usage(root).free > 1.25 * nbytes + 16 * 2**20:
            return root
    except OSError:
        pass
    return None


_OPEN_MAPS: dict[str, dict[str, np.ndarray]] = {}


def open_slice(ref: BarSlice) -> SymbolBars:
    """The bars `ref` describes, as read-only views of memory-mapped files.

    The maps are opened on a task's first slice and shared by its later ones; `run_task`
    closes them when the task ends (`close_slices`).
    """
    maps = _OPEN_MAPS.get(ref.folder)
    if maps is None:
        _OPEN_MAPS.clear()
        maps = {c: np.load(os.path.join(ref.folder, f"{c}.npy"), mmap_mode="r") for c in COLUMNS}
        _OPEN_MAPS[ref.folder] = maps
    rows = slice(ref.start, ref.stop)
    return SymbolBars(ref.symbol, *(np.asarray(maps[c][rows]) for c in COLUMNS))


def close_slices() -> None:
    """Unmap what `open_slice` mapped in this process.

    Pages of a mapped file that a process has touched count in its resident size. loky restarts
    a worker whose resident size grew by more than 300 MB since its first task (its leak check,
    active whenever psutil is installed, as it is with the `dask` extra), so a worker that kept
    its maps across tasks was restarted in the middle of large runs, costing a fresh interpreter
    each time (about 1.8 s of a 8 s run on 17M bars). Re-mapping costs ~1 ms per task.
    """
    _OPEN_MAPS.clear()


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------

Task = tuple[Plan, tuple[tuple[Cluster, SymbolBars | BarSlice], ...], SessionTable, str | None]


@dataclass(frozen=True)
class ResultsFile:
    """Where a process worker left a task's results: a pickle in the run's shared folder.

    A task's results (every candidate event of its clusters, tens of MB on large runs) went
    back through the pool's pipe, and the worker could not start its next task until the parent
    had read all of it; on a machine with as many workers as cores the parent is itself
    competing for a core, so each hand-over cost 0.2-0.6 s. Writing the results to the shared
    folder (memory on /dev/shm) and returning only the path frees the worker at once.
    """

    path: str

    def load(self) -> list[ClusterResult]:
        """The results, read once: the file is removed."""
        with open(self.path, "rb") as f:
            results = pickle.load(f)
        os.unlink(self.path)
        return results


def describe_cluster(cluster: Cluster, timezone: str) -> str:
    """`cluster 12 (SYNA 2024-03-04..2024-03-08)`: how errors name a cluster."""
    import pandas as pd

    first, last = (pd.Timestamp(ns, tz="UTC").tz_convert(timezone).date()
                   for ns in (cluster.start_ns, cluster.end_ns))
    return f"cluster {cluster.index} ({cluster.symbol} {first}..{last})"


def run_task(plan: Plan, batch: Sequence[tuple[Cluster, SymbolBars | BarSlice]],
             sessions: SessionTable, results_folder: str | None = None
             ) -> list[ClusterResult] | ResultsFile:
    """Evaluate a batch of clusters; the unit of work shipped to a worker.

    Each cluster comes with its bars (`SymbolBars`) or their description (`BarSlice`). Any
    failure is re-raised as `ClusterError` naming the cluster it happened in.
    """
    hook = os.environ.get(TEST_HOOK_ENV)
    results = []
    indicators.install(plan.custom_indicators)  # a worker process lacks the user's indicators
    try:
        for cluster, bars in batch:
            try:
                if hook:
                    _test_hook(hook, cluster)
                if isinstance(bars, BarSlice):
                    bars = open_slice(bars)
                results.append(run_cluster(plan, cluster, bars, sessions))
            except Exception as exc:
                where = describe_cluster(cluster, sessions.timezone)
                raise ClusterError(f"{where}: {type(exc).__name__}: {exc}") from exc
    finally:
        close_slices()   # the views still held are freed when this returns
    if results_folder is None:
        return results
    handle, path = tempfile.mkstemp(prefix="results-", suffix=".pkl", dir=results_folder)
    with os.fdopen(handle, "wb") as f:
        pickle.dump(results, f, protocol=pickle.HIGHEST_PROTOCOL)
    return ResultsFile(path)


def _test_hook(hook: str, cluster: Cluster) -> None:
    """See `TEST_HOOK_ENV`."""
    action, _, value = hook.partition("=")
    if action == "fail" and str(cluster.index) == value:
        raise RuntimeError(f"{TEST_HOOK_ENV} asked cluster {value} to fail")
    if action == "sleep":
        time.sleep(float(value))


def warm_up(task: Task | None = None) -> int:
    """Import the engine and run one small task, untimed by the caller's steady-state clock.

    In a fresh worker process this pulls in numpy, pandas, numba (loading cached kernels) and
    TA-Lib: the real start-up cost of a process worker, charged to start-up and not to the
    first cluster, so the steady-state figures compare like with like.
    """
    if task is not None:
        run_task(*task)
    return os.getpid()


def make_tasks(plan: Plan, clusters: Sequence[Cluster], barset: BarSet, n_workers: int,
               batch_size: int | str = "auto", shared: SharedBars | None = None) -> list[Task]:
    """Group consecutive clusters into tasks of balanced bar counts.

    `auto` aims at 4 tasks per worker (load balance) and never splits below one cluster. Each
    cluster comes with a zero-copy view of its bars, or with `shared`, their `BarSlice`.
    """
    if not clusters:
        return []
    if batch_size == "auto":
        n_tasks = min(len(clusters), max(1, 4 * n_workers)) if n_workers > 1 else len(clusters)
    else:
        n_tasks = max(1, -(-len(clusters) // int(batch_size)))
    total = sum(c.n_read for c in clusters)
    target = total / n_tasks
    tasks, batch, size = [], [], 0
    folder = shared.folder if shared is not None else None   # results come back as files
    for cluster in clusters:
        batch.append((cluster, _bars_for(cluster, barset, shared)))
        size += cluster.n_read
        if size >= target * (len(tasks) + 1) - 1e-9 * total or cluster is clusters[-1]:
            tasks.append((plan, tuple(batch), barset.sessions, folder))
            batch = []
    if batch:
        tasks.append((plan, tuple(batch), barset.sessions, folder))
    return tasks


def warm_task(plan: Plan, clusters: Sequence[Cluster], barset: BarSet,
              shared: SharedBars | None = None) -> Task | None:
    """The smallest cluster as a task: enough to load every kernel the plan uses."""
    if not clusters:
        return None
    smallest = min(clusters, key=lambda c: c.n_read)
    return (plan, ((smallest, _bars_for(smallest, barset, shared)),), barset.sessions, None)


def _bars_for(cluster: Cluster, barset: BarSet, shared: SharedBars | None):
    if shared is not None:
        return shared.slice(cluster.symbol, cluster.read_start, cluster.read_end)
    return barset.bars[cluster.symbol].slice(cluster.read_start, cluster.read_end)


# ---------------------------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------------------------

class Engine(ABC):
    """Runs tasks somewhere.

    Flags (read with these defaults): `uses_threads`, the workers share this process's memory
    (tasks carry views, and cluster compute is part of this process's CPU time); `shares_files`,
    process workers on this machine that can map files the parent writes (tasks carry
    `BarSlice`s). With neither, tasks carry pickled slices.
    """

    name: str = ""
    uses_threads: bool = False
    shares_files: bool = False

    def __init__(self, n_jobs: int, **options):
        self.n_jobs = n_jobs
        self.options = options

    def start(self, warm_task: Task | None = None) -> float:
        """Start the workers (and warm them with `warm_task`); returns the seconds it took."""
        return 0.0

    @abstractmethod
    def run(self, tasks: Sequence[Task]) -> Iterator[list[ClusterResult]]:
        """Yield each task's results as soon as it finishes (any order)."""

    def stop(self) -> None:
        """Release the workers; also called after an error or an interrupt, when it must cancel
        what is still queued or running."""


class JoblibEngine(Engine):
    """joblib.Parallel with `return_as="generator_unordered"`: sequential, threading, loky.

    Closing the generator early (an error, Ctrl-C) makes joblib abort: loky terminates the
    workers still running tasks.
    """

    def __init__(self, n_jobs: int, backend: str, **options):
        super().__init__(n_jobs, **options)
        self.backend = self.name = backend
        # n_jobs=1 runs in this process whatever the backend (joblib falls back to sequential)
        self.uses_threads = backend in ("threading", "sequential") or n_jobs == 1
        self.shares_files = not self.uses_threads

    def _make(self) -> joblib.Parallel:
        # loky workers die with this process (`die_with_parent`, run as each one starts: a
        # worker killed before its first task would otherwise wait for tasks for ever), and
        # joblib's memory maps of large arguments go in the run's shared folder (`temp_folder`,
        # set by `run_clusters`), which `sweep_leftovers` removes if the run is killed.
        workers = {"initializer": die_with_parent, "initargs": (os.getpid(),)} \
            if self.backend == "loky" and not self.uses_threads else {}
        return joblib.Parallel(n_jobs=self.n_jobs, backend=self.backend,
                               return_as="generator_unordered", batch_size=1,
                               pre_dispatch="2*n_jobs", temp_folder=self.options.get("temp_folder"),
                               **workers)

    def start(self, warm_task: Task | None = None) -> float:
        if self.uses_threads:
            return 0.0
        began = time.perf_counter()
        list(self._make()(joblib.delayed(warm_up)(warm_task) for _ in range(self.n_jobs)))
        return time.perf_counter() - began

    def run(self, tasks: Sequence[Task]) -> Iterator[list[ClusterResult]]:
        yield from self._make()(joblib.delayed(run_task)(*task) for task in tasks)


class ProcessPoolEngine(Engine):
    """`multiprocessing`: a `concurrent.futures.ProcessPoolExecutor` of `n_jobs` processes.

    Results stream back with `as_completed`; a worker that dies breaks the pool
    (`BrokenProcessPool`, reported as `WorkerLost`) instead of hanging it as
    `multiprocessing.Pool` (joblib's multiprocessing backend) does. Stopping after an error or
    an interrupt cancels the queued tasks and terminates the workers, so none keeps computing.
    """

    name = "multiprocessing"

    def __init__(self, n_jobs: int, **options):
        super().__init__(n_jobs, **options)
        self.uses_threads = n_jobs == 1
        self.shares_files = not self.uses_threads
        self._executor: ProcessPoolExecutor | None = None
        self._unfinished = False

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(max_workers=self.n_jobs,
                                                 mp_context=multiprocessing.get_context(),
                                                 initializer=die_with_parent,
                                                 initargs=(os.getpid(),))
        return self._executor

    def start(self, warm_task: Task | None = None) -> float:
        if self.uses_threads:
            return 0.0
        began = time.perf_counter()
        with _signals_deferred():    # the first submit forks every worker
            futures = [self._pool().submit(warm_up, warm_task) for _ in range(self.n_jobs)]
        self._unfinished = True
        for future in as_completed(futures):
            future.result()
        self._unfinished = False
        return time.perf_counter() - began

    def run(self, tasks: Sequence[Task]) -> Iterator[list[ClusterResult]]:
        if self.uses_threads:
            for task in tasks:
                yield run_task(*task)
            return
        with _signals_deferred():
            futures = [self._pool().submit(run_task, *task) for task in tasks]
        self._unfinished = True
        for future in as_completed(futures):
            yield future.result()
        self._unfinished = False

    def stop(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if not self._unfinished:
            executor.shutdown(wait=True)
            return
        # An error or an interrupt: drop the queue and stop the workers still computing.
        processes = list(getattr(executor, "_processes", {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=5)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends (main thread only; threads started inside
    inherit the mask).

    The CLI turns both into exceptions. Raised while `os.fork` runs the interpreter's at-fork
    hooks, such an exception is swallowed half-way through a hook ("Exception ignored in
    _releaseLock") and leaves `logging`'s module lock held, so the run hangs at its next log
    call instead of stopping. Deferred, the signal is delivered when the block ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def outer_joblib_config() -> dict | None:
    """The backend and n_jobs of an enclosing `joblib.parallel_config(...)`, if a caller set
    either (an `n_jobs` alone counts: ``parallel_config(n_jobs=1)`` asks for one worker).

    A library should not override what its caller chose (joblib's own advice), so an outer
    `parallel_config` takes precedence over the config file; with `n_jobs` alone, the backend
    is joblib's default (loky), as for any `joblib.Parallel` in that context.
    """
    try:
        from joblib.parallel import _backend, default_parallel_config
    except ImportError:  # pragma: no cover - joblib moved its internals
        return None
    config = getattr(_backend, "config", None)
    if not config:
        return None
    chosen = config.get("backend")
    backend_set = chosen is not default_parallel_config["backend"]
    n_jobs_set = config.get("n_jobs") is not default_parallel_config["n_jobs"]
    if not backend_set and not n_jobs_set:
        return None
    backend, n_jobs = joblib.parallel.get_active_backend()
    if backend_set:
        name = chosen if isinstance(chosen, str) else type(chosen).__name__
    else:
        name = f"{type(backend).__name__}, joblib's default"
    return {"backend": backend, "n_jobs": n_jobs, "name": name}


class ContextEngine(JoblibEngine):
    """Whatever backend an enclosing `joblib.parallel_config` set (see `outer_joblib_config`),
    with its n_jobs, or ours when it set none."""

    name = "joblib-context"

    def __init__(self, n_jobs: int, **options):
        super().__init__(n_jobs, backend="context", **options)
        self.name = "joblib-context"
        active, _ = joblib.parallel.get_active_backend()
        from joblib._parallel_backends import LokyBackend, MultiprocessingBackend

        self.uses_threads = bool(getattr(active, "uses_threads", False)) or n_jobs == 1
        self.shares_files = not self.uses_threads and \
            isinstance(active, (LokyBackend, MultiprocessingBackend))

    def _make(self) -> joblib.Parallel:
        return joblib.Parallel(n_jobs=self.n_jobs, return_as="generator_unordered", batch_size=1)


class DaskEngine(Engine):
    """Dask futures with deterministic keys; `address` None starts a LocalCluster (whose
    workers, on this machine, read the memory-mapped bars; a remote cluster's get slices)."""

    name = "dask"

    def __init__(self, n_jobs: int, address: str | None = None, **options):
        super().__init__(n_jobs, **options)
        self.address = address
        self.shares_files = address is None
        self._client = None
        self._cluster = None

    def start(self, warm_task: Task | None = None) -> float:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - optional dependency
            raise RuntimeError("the dask backend needs `pip install backtester[dask]`") from exc
        began = time.perf_counter()
        if self.address:
            try:
                self._client = Client(self.address)
            except (OSError, ValueError, TypeError) as exc:   # refused, timed out, malformed
                from .errors import BacktestError

                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise BacktestError(f"execution.address: cannot connect to the Dask scheduler "
                                    f"at {self.address!r}: {reason[:200]} (check the address; "
                                    f"it must be a scheduler you trust)") from None
        else:
            self._cluster = LocalCluster(n_workers=self.n_jobs, threads_per_worker=1,
                                         processes=True, dashboard_address=None)
            self._client = Client(self._cluster)
            self._client.run(die_with_parent, os.getpid())
        self._client.run(warm_up, warm_task)
        return time.perf_counter() - began

    def run(self, tasks: Sequence[Task]) -> Iterator[list[ClusterResult]]:
        from distributed import as_completed as dask_as_completed

        client = self._client
        futures = [client.submit(run_task, *task, key=f"backtester-task-{i}-{id(tasks)}",
                                 retries=1, pure=False) for i, task in enumerate(tasks)]
        try:
            for future in dask_as_completed(futures):
                yield future.result()
        finally:
            client.cancel([f for f in futures if not f.done()])

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None


ENGINES: dict[str, Callable[..., Engine]] = {}


def register_engine(name: str, factory: Callable[..., Engine]) -> None:
    ENGINES[name] = factory


for _name in ("sequential", "threading", "loky"):
    register_engine(_name, lambda n_jobs, _b=_name, **kw: JoblibEngine(n_jobs, _b, **kw))
register_engine("multiprocessing", ProcessPoolEngine)
register_engine("dask", DaskEngine)
register_engine("joblib-context", ContextEngine)


def effective_n_jobs(backend: str, n_jobs: int) -> int:
    """joblib's convention: -1 = all cores, -2 = all but one; sequential is always 1. For
    `joblib-context`, the enclosing `parallel_config`'s n_jobs when it set one, else `n_jobs`,
    as that backend counts them."""
    if backend == "sequential":
        return 1
    if backend == "joblib-context":
        active, context_jobs = joblib.parallel.get_active_backend()
        return max(1, int(active.effective_n_jobs(context_jobs if context_jobs is not None
                                                  else n_jobs)))
    if n_jobs < 0:
        return max(1, joblib.cpu_count() + 1 + n_jobs)
    return n_jobs


_LOST_WORKER = ("TerminatedWorkerError", "KilledWorker", "BrokenProcessPool")


def run_clusters(plan: Plan, clusters: Sequence[Cluster], barset: BarSet, *, backend: str,
                 n_jobs: int, batch_size: int | str = "auto", address: str | None = None,
                 progress: Callable[[ClusterResult], None] | None = None) -> ExecutionReport:
    """Run every cluster on `backend` and collect the results (in completion order).

    The first error in any task stops the run: the engine is stopped (pending tasks cancelled,
    process workers terminated), the workers' copy of the bars removed, and the error re-raised
    with the cluster it came from (`ClusterError`), or as `WorkerLost` when a worker process
    died. Ctrl-C (`KeyboardInterrupt`) cleans up the same way.
    """
    workers = effective_n_jobs(backend, n_jobs)
    engine = ENGINES[backend](workers, address=address) if backend == "dask" else \
        ENGINES[backend](workers)
    cpu_before = time.process_time()
    results: list[ClusterResult] = []
    shared: SharedBars | None = None
    shipping = "views" if engine.uses_threads else "memmap" if engine.shares_files else "pickle"
    began = time.perf_counter()
    try:
        if shipping == "memmap" and clusters:
            shared = SharedBars(barset)
            engine.options["temp_folder"] = shared.folder
        tasks = make_tasks(plan, clusters, barset, workers, batch_size, shared)
        written = time.perf_counter() - began
        startup = written + engine.start(warm_task(plan, clusters, barset, shared))
        began = time.perf_counter()
        for batch in engine.run(tasks):
            if isinstance(batch, ResultsFile):
                batch = batch.load()
            for result in batch:
                results.append(result)
                if progress is not None:
                    progress(result)
    except ClusterError:
        raise
    except OSError as exc:   # the run's own temporary files: the bars' copy, task results
        from .report import why_not_written

        where = shared.folder if shared is not None else tempfile.gettempdir()
        raise OutputError(f"cannot write the run's temporary files in {where}: "
                          f"{why_not_written(exc)} (or run with --backend threading, which "
                          f"needs none); no results were written") from None
    except Exception as exc:
        if type(exc).__name__ in _LOST_WORKER:
            raise WorkerLost(f"a {backend} worker process died while running clusters "
                             f"(killed, or out of memory?): {exc}".splitlines()[0]) from exc
        raise
    finally:
        try:
            engine.stop()
        finally:
            if shared is not None:
                shared.close()
    wall = time.perf_counter() - began
    cpu = time.process_time() - cpu_before
    if not engine.uses_threads:
        cpu += sum(r.seconds for r in results)
    return ExecutionReport(backend=backend, n_jobs=workers, results=tuple(results),
                           wall_seconds=wall, startup_seconds=startup, cpu_seconds=cpu,
                           n_tasks=len(tasks),
                           cluster_seconds=tuple(r.seconds for r in sorted(
                               results, key=lambda r: r.cluster.index)),
                           shipping=shipping)
