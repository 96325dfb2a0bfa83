"""Engines: failures name their cluster, a killed worker is reported, outer joblib config wins."""

import os
import signal

import joblib
import pytest

import backtester
from backtester import execution, synth
from backtester.bars import from_frame
from backtester.errors import ClusterError, WorkerLost


@pytest.fixture(scope="module")
def bars():
    frame = synth.generate(["SYNA", "SYNB"], "2024-03-01", "2024-04-30", seed=5)
    return from_frame(frame, timezone="America/New_York")


CONFIG = {"name": "exe", "data": {"path": "<frame>"},
          "alerts": [{"name": "a", "when": "rsi(14) < 35 and close < sma(50)"}],
          "schedule": {"cluster_by": "week"}, "execution": {"backend": "loky", "n_jobs": 2}}


@pytest.mark.parametrize("backend", ["sequential", "threading"])
def test_failing_cluster_is_named_and_nothing_is_written(bars, backend, tmp_path, monkeypatch):
    real = execution.run_cluster

    def flaky(plan, cluster, slice_, sessions):
        if cluster.index == 3:
            raise FloatingPointError("boom")
        return real(plan, cluster, slice_, sessions)

    monkeypatch.setattr(execution, "run_cluster", flaky)
    out = tmp_path / "out"
    with pytest.raises(ClusterError) as err:
        backtester.run({**CONFIG, "execution": {"backend": backend, "n_jobs": 2}}, bars=bars,
                       out=str(out))
    assert str(err.value).startswith("cluster 3 (SYNA 2024-03-18..2024-03-22): FloatingPointError")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def _loky_workers() -> list[int]:
    """Child processes of this one running loky's worker entry point (Linux /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if ppid == os.getpid() and b"popen_loky" in cmdline:
            pids.append(int(entry))
    return pids


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds loky workers through /proc")
def test_killed_worker_is_reported_not_hung(bars, tmp_path):
    killed = []

    def kill_a_worker(result, total):
        if not killed:
            pid = _loky_workers()[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    with pytest.raises(WorkerLost, match="worker process died"):
        backtester.run({**CONFIG, "schedule": {"cluster_by": "day"}}, bars=bars,
                       out=str(tmp_path / "out"), progress=kill_a_worker)
    assert killed and not (tmp_path / "out").exists()


def test_outer_parallel_config_wins_over_the_config_file(bars):
    with joblib.parallel_config(backend="threading", n_jobs=2):
        result = backtester.run(CONFIG, bars=bars, write=False)
    assert result.timing["parallel"]["backend"] == "joblib-context"
    assert "Threading" in result.timing["backend_reason"]
    reference = backtester.run({**CONFIG, "execution": {"backend": "sequential"}}, bars=bars,
                               write=False)
    assert result.alerts.equals(reference.alerts)


def test_explicit_backend_keyword_wins_over_outer_parallel_config(bars):
    with joblib.parallel_config(backend="loky", n_jobs=2):
        result = backtester.run(CONFIG, bars=bars, backend="sequential", write=False)
    assert result.timing["parallel"]["backend"] == "sequential"


def test_tasks_batch_clusters_with_balanced_bars(bars):
    prep = backtester.prepare({**CONFIG, "schedule": {"cluster_by": "day"}}, bars=bars)
    tasks = execution.make_tasks(prep.plan, prep.layout.clusters, prep.bars, n_workers=2)
    assert len(tasks) == 8
    sizes = [sum(c.n_read for c, _ in task[1]) for task in tasks]
    assert max(sizes) < 1.5 * min(sizes)
    flat = [c.index for task in tasks for c, _ in task[1]]
    assert flat == sorted(flat) == list(range(len(prep.layout.clusters)))


@pytest.mark.parametrize("backend", ["multiprocessing", "dask"])
def test_other_engines_match_sequential(bars, backend):
    if backend == "dask":
        pytest.importorskip("distributed")
    seq = backtester.run({**CONFIG, "execution": {"backend": "sequential"}}, bars=bars,
                         write=False)
    other = backtester.run({**CONFIG, "execution": {"backend": backend, "n_jobs": 2}}, bars=bars,
                           write=False)
    assert other.alerts.equals(seq.alerts) and len(seq.alerts) > 0


def test_auto_backend_measures_and_runs_small_work_sequentially(bars):
    result = backtester.run({**CONFIG, "execution": {"backend": "auto", "n_jobs": 2}}, bars=bars,
                            write=False)
    assert result.timing["parallel"]["backend"] == "sequential"
    assert result.timing["backend_reason"].startswith("estimated ")
    assert "too little for workers" in result.timing["backend_reason"]


def test_auto_backend_prefers_threads_when_work_is_large(bars, monkeypatch):
    from backtester import api

    monkeypatch.setattr(api, "MIN_PARALLEL_SECONDS", 0.0)
    result = backtester.run({**CONFIG, "execution": {"backend": "auto", "n_jobs": 2}}, bars=bars,
                            write=False)
    assert result.timing["parallel"]["backend"] == "threading"
    assert "releases the GIL" in result.timing["backend_reason"]
