"""Run clusters on an engine: joblib's sequential, threading, loky and multiprocessing
backends, or Dask for more than one machine.

The interface is small (see `Engine`): start the workers, run tasks streaming results back as
they finish, stop. A task is a batch of (cluster, its bar slice) pairs plus the plan and the
session table: a description plus the slice it reads, never the whole data set. Threads get
zero-copy views of the parent's arrays; processes get the pickled slice (joblib memory-maps
large arrays on its own).

Engines are looked up by name in `ENGINES`; adding one is one `register_engine` call here.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import joblib

from .bars import BarSet
from .cluster import ClusterResult, run_cluster
from .errors import ClusterError, WorkerLost
from .plan import Plan
from .schedule import Cluster
from .sessions import SessionTable


@dataclass(frozen=True)
class ExecutionReport:
    """What a run of all clusters cost, and its results (in completion order)."""

    backend: str
    n_jobs: int
    results: tuple[ClusterResult, ...]
    wall_seconds: float          # from the first task submitted to the last result, start-up excluded
    startup_seconds: float       # starting (and importing into) the workers
    cpu_seconds: float           # this process's CPU time plus the clusters' compute time elsewhere
    n_tasks: int
    cluster_seconds: tuple[float, ...] = field(default=())

    @property
    def total_seconds(self) -> float:
        return self.wall_seconds + self.startup_seconds


Task = tuple[Plan, tuple[tuple[Cluster, object], ...], SessionTable]


def describe_cluster(cluster: Cluster, timezone: str) -> str:
    """`cluster 12 (SYNA 2024-03-04..2024-03-08)`: how errors name a cluster."""
    import pandas as pd

    first, last = (pd.Timestamp(ns, tz="UTC").tz_convert(timezone).date()
                   for ns in (cluster.start_ns, cluster.end_ns))
    return f"cluster {cluster.index} ({cluster.symbol} {first}..{last})"


def run_task(plan: Plan, batch: Sequence[tuple[Cluster, object]],
             sessions: SessionTable) -> list[ClusterResult]:
    """Evaluate a batch of clusters; the unit of work shipped to a worker.

    Any failure is re-raised as `ClusterError` naming the cluster it happened in.
    """
    results = []
    for cluster, bars in batch:
        try:
            results.append(run_cluster(plan, cluster, bars, sessions))
        except Exception as exc:
            where = describe_cluster(cluster, sessions.timezone)
            raise ClusterError(f"{where}: {type(exc).__name__}: {exc}") from exc
    return results


def warm_up(task: Task | None = None) -> int:
    """Import the engine and run one small task, untimed by the caller's steady-state clock.

    In a fresh worker process this pulls in numpy, pandas, numba (loading cached kernels) and
    TA-Lib: the real start-up cost of a process worker, charged to start-up and not to the
    first cluster, so the steady-state figures compare like with like.
    """
    if task is not None:
        run_task(*task)
    return os.getpid()


class Engine(ABC):
    """Runs tasks somewhere. `uses_threads` tells whether workers share this process's memory."""

    name: str = ""
    uses_threads: bool = False

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
        """Release the workers; also called after an error or an interrupt."""


class JoblibEngine(Engine):
    """joblib.Parallel with `return_as="generator_unordered"` (list for multiprocessing,
    which cannot stream)."""

    def __init__(self, n_jobs: int, backend: str, **options):
        super().__init__(n_jobs, **options)
        self.backend = backend
        self.uses_threads = backend in ("threading", "sequential")
        self._parallel: joblib.Parallel | None = None

    def _make(self) -> joblib.Parallel:
        return_as = "list" if self.backend == "multiprocessing" else "generator_unordered"
        return joblib.Parallel(n_jobs=self.n_jobs, backend=self.backend, return_as=return_as,
                               batch_size=1, pre_dispatch="2*n_jobs")

    def start(self, warm_task: Task | None = None) -> float:
        if self.backend in ("sequential", "threading") or self.n_jobs == 1:
            return 0.0
        began = time.perf_counter()
        list(self._make()(joblib.delayed(warm_up)(warm_task) for _ in range(self.n_jobs)))
        return time.perf_counter() - began

    def run(self, tasks: Sequence[Task]) -> Iterator[list[ClusterResult]]:
        yield from self._make()(joblib.delayed(run_task)(*task) for task in tasks)


def outer_joblib_config() -> dict | None:
    """The backend and n_jobs of an enclosing `joblib.parallel_config(...)`, if a caller set one.

    A library should not override what its caller chose (joblib's own advice), so an outer
    `parallel_config(backend=...)` takes precedence over the config file.
    """
    try:
        from joblib.parallel import _backend, default_parallel_config
    except ImportError:  # pragma: no cover - joblib moved its internals
        return None
    config = getattr(_backend, "config", None)
    if not config or config.get("backend") is default_parallel_config["backend"]:
        return None
    backend, n_jobs = joblib.parallel.get_active_backend()
    chosen = config["backend"]
    name = chosen if isinstance(chosen, str) else type(chosen).__name__
    return {"backend": backend, "n_jobs": n_jobs, "name": name}


class ContextEngine(JoblibEngine):
    """Whatever backend an enclosing `joblib.parallel_config` set (see `outer_joblib_config`)."""

    def __init__(self, n_jobs: int, **options):
        super().__init__(n_jobs, backend="context", **options)
        active, _ = joblib.parallel.get_active_backend()
        self.uses_threads = bool(getattr(active, "uses_threads", False))

    def _make(self) -> joblib.Parallel:
        return joblib.Parallel(return_as="generator_unordered", batch_size=1)

    def start(self, warm_task: Task | None = None) -> float:
        if self.uses_threads:
            return 0.0
        began = time.perf_counter()
        list(self._make()(joblib.delayed(warm_up)(warm_task) for _ in range(self.n_jobs)))
        return time.perf_counter() - began


class DaskEngine(Engine):
    """Dask futures with deterministic keys; `address` None starts a LocalCluster."""

    name = "dask"

    def __init__(self, n_jobs: int, address: str | None = None, **options):
        super().__init__(n_jobs, **options)
        self.address = address
        self._client = None
        self._cluster = None

    def start(self, warm_task: Task | None = None) -> float:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - optional dependency
            raise RuntimeError("the dask backend needs `pip install backtester[dask]`") from exc
        began = time.perf_counter()
        if self.address:
            self._client = Client(self.address)
        else:
            self._cluster = LocalCluster(n_workers=self.n_jobs, threads_per_worker=1,
                                         processes=True, dashboard_address=None)
            self._client = Client(self._cluster)
        self._client.run(warm_up, warm_task)
        return time.perf_counter() - began

    def run(self, tasks: Sequence[Task]) -> Iterator[list[ClusterResult]]:
        from distributed import as_completed

        client = self._client
        futures = [client.submit(run_task, *task, key=f"backtester-task-{i}-{id(tasks)}",
                                 retries=1, pure=False) for i, task in enumerate(tasks)]
        try:
            for future in as_completed(futures):
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


for _name in ("sequential", "threading", "loky", "multiprocessing"):
    register_engine(_name, lambda n_jobs, _b=_name, **kw: JoblibEngine(n_jobs, _b, **kw))
register_engine("dask", DaskEngine)
register_engine("joblib-context", ContextEngine)


def effective_n_jobs(backend: str, n_jobs: int) -> int:
    """joblib's convention: -1 = all cores, -2 = all but one; sequential is always 1."""
    if backend == "sequential":
        return 1
    if backend == "joblib-context":
        return joblib.effective_n_jobs()
    if n_jobs < 0:
        return max(1, joblib.cpu_count() + 1 + n_jobs)
    return n_jobs


def make_tasks(plan: Plan, clusters: Sequence[Cluster], barset: BarSet, n_workers: int,
               batch_size: int | str = "auto") -> list[Task]:
    """Group consecutive clusters into tasks of balanced bar counts.

    `auto` aims at 4 tasks per worker (load balance) and never splits below one cluster.
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
    for cluster in clusters:
        bars = barset.bars[cluster.symbol].slice(cluster.read_start, cluster.read_end)
        batch.append((cluster, bars))
        size += cluster.n_read
        if size >= target * (len(tasks) + 1) - 1e-9 * total or cluster is clusters[-1]:
            tasks.append((plan, tuple(batch), barset.sessions))
            batch = []
    if batch:
        tasks.append((plan, tuple(batch), barset.sessions))
    return tasks


def warm_task(plan: Plan, clusters: Sequence[Cluster], barset: BarSet) -> Task | None:
    """The smallest cluster as a task: enough to load every kernel the plan uses."""
    if not clusters:
        return None
    smallest = min(clusters, key=lambda c: c.n_read)
    bars = barset.bars[smallest.symbol].slice(smallest.read_start, smallest.read_end)
    return (plan, ((smallest, bars),), barset.sessions)


def run_clusters(plan: Plan, clusters: Sequence[Cluster], barset: BarSet, *, backend: str,
                 n_jobs: int, batch_size: int | str = "auto", address: str | None = None,
                 progress: Callable[[ClusterResult], None] | None = None) -> ExecutionReport:
    """Run every cluster on `backend` and collect the results (in completion order).

    The first error in any task stops the run: the engine is stopped (pending tasks cancelled)
    and the error is re-raised with the cluster it came from.
    """
    workers = effective_n_jobs(backend, n_jobs)
    engine = ENGINES[backend](workers, address=address) if backend == "dask" else \
        ENGINES[backend](workers)
    tasks = make_tasks(plan, clusters, barset, workers, batch_size)
    cpu_before = time.process_time()
    startup = engine.start(warm_task(plan, clusters, barset))
    results: list[ClusterResult] = []
    began = time.perf_counter()
    try:
        for batch in engine.run(tasks):
            for result in batch:
                results.append(result)
                if progress is not None:
                    progress(result)
    except ClusterError:
        raise
    except Exception as exc:
        if type(exc).__name__ in ("TerminatedWorkerError", "KilledWorker"):
            raise WorkerLost(f"a {backend} worker process died while running clusters "
                             f"(killed, or out of memory?): {exc}".splitlines()[0]) from exc
        raise
    finally:
        engine.stop()
    wall = time.perf_counter() - began
    cpu = time.process_time() - cpu_before
    if not engine.uses_threads:
        cpu += sum(r.seconds for r in results)
    return ExecutionReport(backend=backend, n_jobs=workers, results=tuple(results),
                           wall_seconds=wall, startup_seconds=startup, cpu_seconds=cpu,
                           n_tasks=len(tasks),
                           cluster_seconds=tuple(r.seconds for r in sorted(
                               results, key=lambda r: r.cluster.index)))
