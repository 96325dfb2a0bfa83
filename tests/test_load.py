"""Load: fifty runs in one process, alternating backends, leave nothing behind.

After a warm-up run per backend (which starts what stays by design: loky's reusable executor
with its workers, semaphores and resource tracker, numba's and pyarrow's thread pools), fifty
more runs must bring threads, child processes, open file descriptors, this process's
``/dev/shm`` entries and the temp folder's bars folders back to exactly the warm counts, give
the same alerts on every backend, and keep memory flat: the resident set after the last ten
runs within `RSS_BOUND_MB` of the one after the first ten. Dask is left out: a LocalCluster
costs ~15 s a run on two cores (its own tests are in test_execution.py and test_faults.py).
"""

import gc
import os
import re
import tempfile
from pathlib import Path

import pytest

import backtester
from backtester import synth

BACKENDS = ("sequential", "threading", "loky", "multiprocessing")
RUNS = 50
RSS_BOUND_MB = 32   # measured growth here: under 10 MB (allocator noise, numba caches)


def child_processes() -> list[int]:
    """Process ids whose parent is this process, zombies included (an unreaped child is a
    leak too)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:   # exited while we looked
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            found.append(int(entry))
    return sorted(found)


def own_shared_memory() -> list[str]:
    """``/dev/shm`` entries named after this process (loky's ``sem.loky-PID-*``, joblib's
    ``joblib_memmapping_folder_PID_*``, our ``backtester-bars-PID-*``): other processes on the
    machine create and remove theirs meanwhile."""
    pid = re.compile(rf"(^|[-_.]){os.getpid()}([-_.]|$)")
    return sorted(n for n in os.listdir("/dev/shm") if pid.search(n)) \
        if os.path.isdir("/dev/shm") else []


def own_temp_folders() -> list[str]:
    prefix = f"backtester-bars-{os.getpid()}-"
    return sorted(n for n in os.listdir(tempfile.gettempdir()) if n.startswith(prefix))


def resident_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def snapshot() -> dict[str, object]:
    gc.collect()
    return {
        "threads": len(os.listdir("/proc/self/task")),
        "children": child_processes(),
        "fds": sorted(os.listdir("/proc/self/fd")),
        "shm": own_shared_memory(),
        "temp": own_temp_folders(),
    }


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts read /proc (Linux)")
def test_fifty_runs_on_alternating_backends_leak_nothing_and_stay_flat(tmp_path):
    synth.generate(["SYNA", "SYNB"], "2024-03-04", "2024-03-15", seed=3).to_parquet(
        tmp_path / "bars.parquet")
    config = {"name": "load", "data": {"path": str(tmp_path / "bars.parquet")},
              "alerts": [{"name": "dip", "when": "rsi(14) < 40", "forward": [5]}],
              "schedule": {"cluster_by": "day"}, "output": {"dir": str(tmp_path / "out")}}

    first = {backend: backtester.run(config, backend=backend, n_jobs=2) for backend in BACKENDS}
    reference = first["sequential"].alerts
    assert len(reference) > 0
    before = snapshot()

    rss = []
    for i in range(RUNS):
        backend = BACKENDS[i % len(BACKENDS)]
        result = backtester.run(config, backend=backend, n_jobs=2)
        assert result.alerts.equals(reference), backend
        if i + 1 in (10, RUNS):
            gc.collect()
            rss.append(resident_mb())
        del result

    after = snapshot()
    assert after["fds"] == before["fds"], [os.readlink(f"/proc/self/fd/{fd}")
                                           for fd in set(after["fds"]) - set(before["fds"])
                                           if os.path.exists(f"/proc/self/fd/{fd}")]
    assert after == before
    assert rss[1] - rss[0] < RSS_BOUND_MB, rss
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.parquet", "out"]
