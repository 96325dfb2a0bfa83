"""Faults, one test each: signals to the main process, two runs on one folder, a full disk and a
read-only folder. Each must leave no partial output, keep the earlier results, and print one
line without a traceback. Hangs are caught by deadlines on subprocesses and threads; nothing
here asserts how fast anything is."""

import errno
import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backtester import execution, report, synth
from backtester.cli import main

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not os.path.isdir("/proc") or sys.platform == "win32",
                                reason="signals child processes and finds them through /proc")


@pytest.fixture(scope="module")
def bars_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bars") / "bars.parquet"
    synth.generate(["SYNA", "SYNB"], "2024-03-01", "2024-04-30", seed=5).to_parquet(path)
    return path


def write_config(folder: Path, bars: Path, backend: str = "sequential", n_jobs: int = 1) -> Path:
    path = folder / "c.yaml"
    path.write_text(
        f"name: faults\ndata: {{path: {bars}}}\n"
        "alerts: [{name: a, when: 'rsi(14) < 35', trade: {max_bars: 5}}]\n"
        "schedule: {cluster_by: day}\n"
        f"execution: {{backend: {backend}, n_jobs: {n_jobs}, batch_size: 1}}\n"
        f"output: {{dir: {folder / 'out'}}}\n", encoding="utf-8")
    return path


def earlier_results(folder: Path) -> dict[str, bytes]:
    """`folder` holding a results folder of ours (marker included); its files' bytes."""
    with report.AtomicFolder(folder) as staging:
        (staging.path / "alerts.csv").write_text("timestamp,symbol,alert,close\n")
        (staging.path / "summary.json").write_text('{"earlier": true}\n')
        staging.commit()
    return snapshot(folder)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def start_cli(*args: str, hook: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(execution.TEST_HOOK_ENV, None)
    if hook:
        env[execution.TEST_HOOK_ENV] = hook
    return subprocess.Popen([sys.executable, "-m", "backtester", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rindex(b")") + 2:].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def workers_of(pid: int) -> set[int]:
    """The worker processes under `pid`: its descendants but for resource trackers."""
    found = set()
    for child in descendants(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"resource_tracker" not in f.read():
                    found.add(child)
        except OSError:
            continue
    return found


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:].split()[0] != b"Z"


def bars_folders(pid: int) -> list[str]:
    return [p for root in ("/dev/shm", "/tmp") for p in glob.glob(f"{root}/backtester-bars-{pid}-*")]


def wait_for(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.kill()
    child.communicate(timeout=60)


# Each cluster sleeps 3 s first: about two minutes of work per worker, far longer than the
# deadlines below, so a worker that outlives its parent is seen doing so.
SLOW = "sleep=3"


def start_with_workers(config: Path) -> tuple[subprocess.Popen, set[int]]:
    """A slow run of `config` in a child process, once its workers have started: the child,
    and every process under it."""
    child = start_cli("run", str(config), hook=SLOW)
    try:
        wait_for(lambda: bars_folders(child.pid) or child.poll() is not None, "never started")
        wait_for(lambda: len(workers_of(child.pid)) >= 2, "no workers started")
    except BaseException:
        stop(child)
        raise
    return child, descendants(child.pid)


@pytest.mark.parametrize(("signum", "backend", "status", "line"), [
    (signal.SIGINT, "loky", 130, "interrupted: no results written"),
    (signal.SIGTERM, "loky", 143, "terminated: no results written"),
    (signal.SIGTERM, "multiprocessing", 143, "terminated: no results written"),
])
def test_a_signalled_run_stops_its_workers_and_keeps_the_earlier_results(
        tmp_path, bars_file, signum, backend, status, line):
    config = write_config(tmp_path, bars_file, backend, 2)
    before = earlier_results(tmp_path / "out")
    child, workers = start_with_workers(config)
    try:
        child.send_signal(signum)
        _, stderr = child.communicate(timeout=120)
    finally:
        stop(child)
    assert child.returncode == status, stderr
    assert stderr.splitlines() == [line]
    wait_for(lambda: not any(running(pid) for pid in workers), "workers outlived the run", 30)
    assert snapshot(tmp_path / "out") == before
    assert sorted(os.listdir(tmp_path)) == ["c.yaml", "out"] and bars_folders(child.pid) == []


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_a_killed_run_takes_its_workers_along_and_the_next_run_sweeps_its_leftovers(
        tmp_path, bars_file, backend):
    config = write_config(tmp_path, bars_file, backend, 2)
    before = earlier_results(tmp_path / "out")
    child, workers = start_with_workers(config)
    try:
        child.kill()
        child.wait(timeout=60)   # not communicate(): a surviving worker holds its pipes open
    finally:
        stop(child)
    wait_for(lambda: not any(running(pid) for pid in workers), "workers outlived the run", 30)
    assert snapshot(tmp_path / "out") == before           # SIGKILL: nothing cleaned, nothing lost
    # The killed run's bars folder is left; any run on this machine may sweep it from now on
    # (other test sessions too), so the rerun reports it, or found it gone.
    left = bars_folders(child.pid)
    rerun = start_cli("run", str(config), "--backend", "sequential")
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    lines = stderr.splitlines()
    assert len(lines) <= 1 and all(line.startswith("removed what killed runs left behind: ")
                                   for line in lines)
    assert not left or left[0] in stderr or not os.path.exists(left[0])
    assert bars_folders(child.pid) == []
    assert snapshot(tmp_path / "out") != before
    assert sorted(os.listdir(tmp_path)) == ["c.yaml", "out"]


def test_two_runs_on_one_folder_the_second_stops_and_the_first_finishes(tmp_path, bars_file):
    config = write_config(tmp_path, bars_file)
    before = earlier_results(tmp_path / "out")
    first = start_cli("run", str(config), hook="sleep=0.1")
    try:
        wait_for(lambda: (tmp_path / ".out.lock").exists() or first.poll() is not None,
                 "the first run never locked its folder")
        second = start_cli("run", str(config))
        _, second_err = second.communicate(timeout=300)
        assert first.poll() is None, "the first run ended before the second tried"
        _, first_err = first.communicate(timeout=300)
    finally:
        stop(first)
    assert second.returncode == 2
    lines = second_err.splitlines()
    assert len(lines) == 1 and f"another backtester run (pid {first.pid} on " in lines[0]
    assert first.returncode == 0, first_err
    assert snapshot(tmp_path / "out") != before
    assert report.read_marker(tmp_path / "out")["pid"] == first.pid
    assert sorted(os.listdir(tmp_path)) == ["c.yaml", "out"]


def run_in_process(capsys, config: Path, *args: str) -> tuple[int, list[str]]:
    status = main(["run", str(config), *args])
    return status, capsys.readouterr().err.splitlines()


def test_a_full_disk_while_writing_results_keeps_the_earlier_ones(tmp_path, bars_file,
                                                                  monkeypatch, capsys):
    config = write_config(tmp_path, bars_file)
    before = earlier_results(tmp_path / "out")
    written = []

    def write_table(table, path, *args, **kwargs):
        written.append(path)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("pyarrow.parquet.write_table", write_table)
    status, err = run_in_process(capsys, config)
    assert written and status == 1
    assert err == [f"error: {config}: output.dir: {tmp_path / 'out'}: cannot write the results: "
                   "No space left on device: free some space there (choose another output.dir, "
                   "or pass --out); nothing was replaced"]
    assert snapshot(tmp_path / "out") == before
    assert sorted(os.listdir(tmp_path)) == ["c.yaml", "out"]


def test_a_full_disk_for_the_workers_bars_is_one_line_and_leaves_nothing(tmp_path, bars_file,
                                                                         monkeypatch, capsys):
    import numpy as np

    config = write_config(tmp_path, bars_file, "loky", 2)
    real, calls = np.lib.format.write_array_header_1_0, []

    def header(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array_header_1_0", header)
    status, err = run_in_process(capsys, config, "--no-compare-sequential")
    assert status == 1 and len(err) == 1
    assert err[0].startswith("error: cannot write the run's temporary files in ")
    assert "No space left on device: free some space there" in err[0]
    assert not (tmp_path / "out").exists() and bars_folders(os.getpid()) == []
    assert sorted(os.listdir(tmp_path)) == ["c.yaml"]


def test_a_read_only_output_folder_is_refused_before_the_run(tmp_path, bars_file, monkeypatch,
                                                            capsys):
    config = write_config(tmp_path, bars_file)
    before = earlier_results(tmp_path / "out")
    if os.geteuid() == 0:   # root writes anywhere the file system allows: play the refusal
        real = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: False
                            if os.fspath(path) == str(tmp_path) else real(path, mode, **kw))
    tmp_path.chmod(0o555)
    try:
        status, err = run_in_process(capsys, config)
    finally:
        tmp_path.chmod(0o755)
    assert status == 2
    assert err == [f"{config}: output.dir: {tmp_path / 'out'}: no permission to write in "
                   f"{tmp_path} (choose another output.dir, or pass --out)"]
    assert snapshot(tmp_path / "out") == before


def test_a_folder_turned_read_only_during_the_run_is_one_line(tmp_path, bars_file, monkeypatch,
                                                              capsys):
    config = write_config(tmp_path, bars_file)
    before = earlier_results(tmp_path / "out")

    def read_only(target, kind):
        raise OSError(errno.EROFS, "Read-only file system", str(target))

    monkeypatch.setattr(report, "_make_sibling", read_only)
    status, err = run_in_process(capsys, config)
    assert status == 1
    assert err == [f"error: {config}: output.dir: {tmp_path / 'out'}: cannot write the results: "
                   "Read-only file system: the file system is mounted read-only (choose another "
                   "output.dir, or pass --out); nothing was replaced"]
    assert snapshot(tmp_path / "out") == before
    assert sorted(os.listdir(tmp_path)) == ["c.yaml", "out"]


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:1", "nonsense://x"])
def test_an_unreachable_dask_scheduler_is_one_line(tmp_path, bars_file, capsys, address):
    pytest.importorskip("distributed")
    import dask

    config = write_config(tmp_path, bars_file, "dask", 2)
    config.write_text(config.read_text().replace("batch_size: 1}", f"address: '{address}'}}"))
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        status, err = run_in_process(capsys, config, "--no-compare-sequential")
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"execution.address: cannot connect to the Dask scheduler at "
                             f"'{address}': ")
    assert sorted(os.listdir(tmp_path)) == ["c.yaml"]
