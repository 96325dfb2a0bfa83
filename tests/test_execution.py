"""Engines: failures name their cluster, a killed worker is reported, Ctrl-C stops promptly,
outer joblib config wins, process workers read memory-mapped bars."""

import glob
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import joblib
import numpy as np
import pytest

import backtester
from backtester import execution, synth
from backtester.bars import from_frame
from backtester.errors import ClusterError, WorkerLost

REPO = Path(__file__).resolve().parents[1]


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


def _fresh_loky_workers() -> None:
    """Stop loky's reusable workers, so the next run's inherit this process's environment."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def _shared_folders(pid: int | None = None) -> list[str]:
    """Folders of memory-mapped bars that process `pid` (default: this one) has written."""
    pid = os.getpid() if pid is None else pid
    return [path for root in ("/dev/shm", tempfile.gettempdir())
            for path in glob.glob(os.path.join(root, f"backtester-bars-{pid}-*"))]


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_failing_cluster_in_a_worker_process_is_named_and_cleaned_up(bars, backend, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv(execution.TEST_HOOK_ENV, "fail=3")
    if backend == "loky":
        _fresh_loky_workers()
    out = tmp_path / "out"
    try:
        with pytest.raises(ClusterError) as err:
            backtester.run({**CONFIG, "execution": {"backend": backend, "n_jobs": 2}},
                           bars=bars, out=str(out))
    finally:
        if backend == "loky":
            monkeypatch.delenv(execution.TEST_HOOK_ENV)
            _fresh_loky_workers()
    assert str(err.value).startswith("cluster 3 (SYNA 2024-03-18..2024-03-22): RuntimeError: "
                                     f"{execution.TEST_HOOK_ENV} asked cluster 3 to fail")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert _shared_folders() == []


def _children(marker: bytes | None) -> list[int]:
    """Live child processes of this one (Linux /proc) whose command line contains `marker`,
    or, with None, forked ones (the same command line as this process)."""
    with open(f"/proc/{os.getpid()}/cmdline", "rb") as f:
        own = f.read()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if int(fields[1]) != os.getpid() or fields[0] == "Z":
            continue
        if (marker is None and cmdline == own) or (marker is not None and marker in cmdline):
            pids.append(int(entry))
    return pids


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds workers through /proc")
@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_killed_worker_is_reported_not_hung(bars, backend, tmp_path):
    killed = []

    def kill_a_worker(result, total):
        if not killed:
            pid = _children(b"popen_loky" if backend == "loky" else None)[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    raised = []

    def run():
        try:
            backtester.run({**CONFIG, "schedule": {"cluster_by": "day"},
                            "execution": {"backend": backend, "n_jobs": 2, "batch_size": 1}},
                           bars=bars, out=str(tmp_path / "out"), progress=kill_a_worker)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            raised.append(exc)

    # A hang is the failure under test: run in a thread so that one fails the test instead of
    # stalling the suite (the deadline is a guard, not a speed goal: the run takes seconds).
    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(timeout=300)
    assert not runner.is_alive(), f"{backend} run still waiting after a worker was killed"
    assert len(raised) == 1 and isinstance(raised[0], WorkerLost), raised
    assert "worker process died" in str(raised[0])
    assert killed and not (tmp_path / "out").exists()
    assert _shared_folders() == []


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or sys.platform == "win32",
                    reason="sends SIGINT to a child process")
@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_ctrl_c_stops_the_workers_promptly_and_writes_nothing(bars, backend, tmp_path):
    frame = synth.generate(["SYNA", "SYNB"], "2024-03-01", "2024-04-30", seed=5)
    frame.to_parquet(tmp_path / "bars.parquet")
    out = tmp_path / "out"
    (tmp_path / "run.yaml").write_text(
        f"name: interrupted\ndata: {{path: {tmp_path / 'bars.parquet'}}}\n"
        "alerts: [{name: a, when: 'rsi(14) < 35', trade: {max_bars: 5}}]\n"
        "schedule: {cluster_by: day}\n"
        f"execution: {{backend: {backend}, n_jobs: 2, batch_size: 1}}\n"
        f"output: {{dir: {out}}}\n", encoding="utf-8")
    env = dict(os.environ, **{execution.TEST_HOOK_ENV: "sleep=0.3"})  # ~13 s of clusters
    child = subprocess.Popen([sys.executable, "-m", "backtester", "run", str(tmp_path / "run.yaml")],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                         signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not _shared_folders(child.pid) and child.poll() is None:   # workers are running
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        time.sleep(1.0)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=30)
        stopped = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 130, stderr
    assert "interrupted" in stderr
    assert stopped < 10, f"took {stopped:.1f}s to stop"
    assert not out.exists()
    assert [p for p in tmp_path.iterdir() if p.name not in ("bars.parquet", "run.yaml")] == []
    assert _shared_folders(child.pid) == []


def test_outer_parallel_config_wins_over_the_config_file(bars):
    with joblib.parallel_config(backend="threading", n_jobs=2):
        result = backtester.run(CONFIG, bars=bars, write=False)
    assert result.timing["parallel"]["backend"] == "joblib-context"
    assert "Threading" in result.timing["backend_reason"]
    reference = backtester.run({**CONFIG, "execution": {"backend": "sequential"}}, bars=bars,
                               write=False)
    assert result.alerts.equals(reference.alerts)


def test_outer_parallel_config_with_n_jobs_alone_is_respected(bars):
    with joblib.parallel_config(n_jobs=1):
        result = backtester.run(CONFIG, bars=bars, write=False)
    assert result.timing["parallel"]["backend"] == "joblib-context"
    assert result.timing["parallel"]["n_jobs"] == 1
    assert "n_jobs=1" in result.timing["backend_reason"]


def test_outer_backend_without_n_jobs_keeps_the_configured_n_jobs(bars):
    with joblib.parallel_config(backend="threading"):
        assert execution.effective_n_jobs("joblib-context", 2) == 2
    with joblib.parallel_config(backend="threading", n_jobs=3):
        assert execution.effective_n_jobs("joblib-context", 2) == 3


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


def test_process_tasks_carry_row_ranges_not_bars(bars):
    prep = backtester.prepare({**CONFIG, "schedule": {"cluster_by": "day"}}, bars=bars)
    with execution.SharedBars(prep.bars) as shared:
        tasks = execution.make_tasks(prep.plan, prep.layout.clusters, prep.bars, n_workers=2,
                                     shared=shared)
        views = execution.make_tasks(prep.plan, prep.layout.clusters, prep.bars, n_workers=2)
        for task, view in zip(tasks, views):
            for (cluster, ref), (_, expected) in zip(task[1], view[1]):
                assert isinstance(ref, execution.BarSlice)
                assert ref.stop - ref.start == cluster.n_read
                opened = execution.open_slice(ref)
                assert not opened.close.flags.writeable
                for column in execution.COLUMNS:
                    assert np.array_equal(getattr(opened, column), getattr(expected, column))
                    assert getattr(opened, column).dtype == getattr(expected, column).dtype
            # the description, not the bars: far smaller than the same task with its slices
            assert len(pickle.dumps(task[1])) * 20 < len(pickle.dumps(view[1]))
        folder = shared.folder
        assert os.path.isdir(folder)
    assert not os.path.exists(folder)
    execution._OPEN_MAPS.clear()


def test_folders_of_killed_runs_are_removed_by_the_next_run(bars, tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = tmp_path / f"backtester-bars-{gone.stdout.strip()}-x"
    alive = tmp_path / f"backtester-bars-{os.getppid()}-y"
    stale.mkdir()
    alive.mkdir()
    with execution.SharedBars(bars, root=str(tmp_path)) as shared:
        assert not stale.exists() and alive.exists() and os.path.isdir(shared.folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name]


@pytest.mark.parametrize("backend", ["threading", "loky", "multiprocessing"])
def test_bars_reach_workers_as_views_or_memory_maps(bars, backend):
    prep = backtester.prepare({**CONFIG, "execution": {"backend": backend, "n_jobs": 2}},
                              bars=bars)
    report = execution.run_clusters(prep.plan, prep.layout.clusters, prep.bars, backend=backend,
                                    n_jobs=2)
    assert report.shipping == ("views" if backend == "threading" else "memmap")
    assert len(report.results) == len(prep.layout.clusters)
    assert _shared_folders() == []


@pytest.mark.parametrize("backend", ["multiprocessing", "dask"])
def test_other_engines_match_sequential(bars, backend):
    if backend == "dask":
        pytest.importorskip("distributed")
    seq = backtester.run({**CONFIG, "execution": {"backend": "sequential"}}, bars=bars,
                         write=False)
    other = backtester.run({**CONFIG, "execution": {"backend": backend, "n_jobs": 2}}, bars=bars,
                           write=False)
    assert other.alerts.equals(seq.alerts) and len(seq.alerts) > 0


def test_auto_backend_measures_and_runs_small_work_sequentially(bars, monkeypatch):
    from backtester import api

    # The estimate is measured, so on a busy machine even this small job can look large:
    # the threshold, not the machine's speed, decides what is "small" here.
    monkeypatch.setattr(api, "MIN_PARALLEL_SECONDS", 1e9)
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


def test_process_results_come_back_as_a_file_read_once(bars, tmp_path):
    prep = backtester.prepare({**CONFIG, "schedule": {"cluster_by": "day"}}, bars=bars)
    plan, batch, sessions, _ = execution.make_tasks(prep.plan, prep.layout.clusters, prep.bars,
                                                    n_workers=2)[0]
    expected = execution.run_task(plan, batch, sessions)
    handed = execution.run_task(plan, batch, sessions, str(tmp_path))
    assert isinstance(handed, execution.ResultsFile)
    assert os.path.dirname(handed.path) == str(tmp_path)
    loaded = handed.load()
    assert not os.path.exists(handed.path)
    assert [r.cluster for r in loaded] == [r.cluster for r in expected]
    for got, want in zip(loaded, expected):
        for a, b in zip(got.events, want.events):
            assert np.array_equal(a.row, b.row) and np.array_equal(a.timestamp, b.timestamp)
