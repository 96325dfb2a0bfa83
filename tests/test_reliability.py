"""Nothing lost, no debris: results folders are replaced only when backtester wrote them, one
run at a time per folder, and what killed runs left behind is swept by the next one."""

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from backtester import execution, regress, report, synth
from backtester.cli import main
from backtester.errors import BacktestError, FolderBusy, OutputError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bars_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bars") / "bars.parquet"
    synth.generate(["SYNA"], "2024-03-04", "2024-03-08", seed=3).to_parquet(path)
    return path


@pytest.fixture
def case(tmp_path, bars_file, monkeypatch) -> Path:
    """`tmp_path` with a quick sequential config `c.yaml` writing to `out`; the cwd."""
    (tmp_path / "c.yaml").write_text(
        f"name: rel\ndata: {{path: {bars_file}}}\n"
        "alerts:\n  - {name: a, when: 'rsi(14) < 40'}\n"
        "execution: {backend: sequential}\noutput: {dir: out}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(capsys, *args: str) -> tuple[int, list[str]]:
    status = main(list(args))
    return status, capsys.readouterr().err.splitlines()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def dead_pid() -> int:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(gone.stdout)


# --------------------------------------------------------------------------------------------
# Ownership


def test_another_tools_manifest_and_summary_do_not_make_a_folder_ours(case, capsys):
    theirs = case / "out"
    theirs.mkdir()
    (theirs / "manifest.json").write_text('{"tool": "other"}\n')
    (theirs / "summary.json").write_text('{"sharpe": 1.2}\n')
    before = snapshot(theirs)
    status, err = run_cli(capsys, "run", "c.yaml")
    assert status == 2
    assert len(err) == 1 and err[0].startswith(
        "c.yaml: output.dir: out: exists and has no .backtester-results.json marker")
    assert snapshot(theirs) == before and hidden(case) == []


def test_a_run_marks_its_results_and_a_rerun_replaces_only_them(case, capsys):
    markers = []
    for _ in range(2):
        status, err = run_cli(capsys, "run", "c.yaml")
        assert status == 0, err
        markers.append(report.read_marker(case / "out"))
    assert all(m["written_by"] == "backtester run" and m["pid"] == os.getpid() for m in markers)
    assert markers[0]["run_id"] != markers[1]["run_id"]
    assert hidden(case) == []   # no lock file, no temporary folder


def test_a_forged_or_garbled_marker_is_not_ours(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "alerts.csv").write_text("x\n")
    for text in ('{"written_by": "sometool"}', "not json", '["backtester"]'):
        (folder / report.MARKER).write_text(text)
        assert report.read_marker(folder) is None
        with pytest.raises(BacktestError, match="has no .backtester-results.json marker"):
            report.check_target(folder, "--out")


@pytest.mark.parametrize(("out", "start"), [
    ("res\x00ults", "--out: 'res\\x00ults': a path cannot hold a NUL byte (choose another --out)"),
    ("r" * 300, f"--out: {'r' * 60}...: the name {'r' * 20}... is too long for this file system"),
    ("r" * 240, f"--out: {'r' * 60}...: the name {'r' * 20}... is too long for this file system"),
])
def test_impossible_folder_names_are_refused_before_the_run(case, capsys, out, start):
    status, err = run_cli(capsys, "run", "c.yaml", "--out", out)
    assert status == 2 and len(err) == 1 and err[0].startswith(start), err
    assert sorted(os.listdir(case)) == ["c.yaml"]


def test_shipped_goldens_carry_the_stable_golden_marker():
    for folder in (REPO / "tests" / "golden").iterdir():
        assert json.loads((folder / report.MARKER).read_text()) == \
            {"written_by": regress.GOLDEN_WRITER}


def test_regress_update_touches_only_goldens_it_wrote(case, capsys):
    configs, golden = case / "configs", case / "golden"
    configs.mkdir()
    shutil.copyfile(case / "c.yaml", configs / "rel.yaml")
    users = golden / "notes"                    # the user's: another tool's manifest
    users.mkdir(parents=True)
    (users / "manifest.json").write_text("{}\n")
    (users / "todo.txt").write_text("keep\n")
    mixed = golden / "old_config"               # ours, but the user added a file
    mixed.mkdir()
    report.write_json({"written_by": regress.GOLDEN_WRITER}, mixed / report.MARKER)
    (mixed / "alerts.csv").write_text("timestamp\n")
    (mixed / "mine.txt").write_text("keep\n")
    stale = golden / "gone_config"              # ours, nothing else: removed
    stale.mkdir()
    report.write_json({"written_by": regress.GOLDEN_WRITER}, stale / report.MARKER)
    (stale / "alerts.csv").write_text("timestamp\n")
    kept = {p: snapshot(p) for p in (users, mixed)}

    assert main(["regress", "--update", "--configs", "configs", "--golden", "golden"]) == 0
    out = capsys.readouterr().out
    assert "new   rel: golden results written" in out
    assert "gone  gone_config: removed stale golden results" in out
    assert "kept  old_config: stale golden results, but the folder also holds mine.txt" in out
    assert "notes" not in out
    assert {p: snapshot(p) for p in (users, mixed)} == kept and not stale.exists()
    assert report.read_marker(golden / "rel") == {"written_by": regress.GOLDEN_WRITER}
    assert hidden(golden) == []


def test_regress_update_refuses_a_golden_folder_it_did_not_write(case, capsys):
    configs, golden = case / "configs", case / "golden"
    configs.mkdir()
    shutil.copyfile(case / "c.yaml", configs / "rel.yaml")
    (golden / "rel").mkdir(parents=True)
    (golden / "rel" / "manifest.json").write_text("{}\n")
    status, err = run_cli(capsys, "regress", "--update", "--configs", "configs",
                          "--golden", "golden")
    assert status == 2
    assert len(err) == 1 and err[0].startswith("--golden: ") and "marker" in err[0]
    assert sorted(os.listdir(golden / "rel")) == ["manifest.json"]


# --------------------------------------------------------------------------------------------
# One writer per folder

HOLD_LOCK = ("import sys; from backtester import report\n"
             "with report.results_lock(sys.argv[1]):\n"
             "    print('held', flush=True); sys.stdin.read()\n")


def test_a_second_writer_stops_with_one_line_while_the_first_holds_the_folder(case, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(case / "out")], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        status, err = run_cli(capsys, "run", "c.yaml")
        assert status == 2
        assert len(err) == 1 and err[0].startswith(
            f"c.yaml: output.dir: out: another backtester run (pid {holder.pid} on ")
        assert "wait for it to finish" in err[0] and not (case / "out").exists()
    finally:
        holder.communicate("", timeout=60)
    status, err = run_cli(capsys, "run", "c.yaml")
    assert status == 0, err
    assert hidden(case) == []


def test_a_killed_holder_leaves_no_lock_behind(case, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(case / "out")], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    holder.kill()
    holder.communicate(timeout=60)
    assert hidden(case) == [".out.lock"]        # the file stays, its lock died with the holder
    status, err = run_cli(capsys, "run", "c.yaml")
    assert status == 0, err
    assert hidden(case) == []


def test_the_lock_is_reentrant_in_one_thread_and_exclusive_across_threads(tmp_path):
    target = tmp_path / "out"
    refused = []

    def other_thread():
        try:
            with report.results_lock(target):
                pass
        except FolderBusy as exc:
            refused.append(str(exc))

    with report.results_lock(target), report.results_lock(target):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join(timeout=60)
    assert len(refused) == 1 and "another thread" in refused[0]
    assert os.listdir(tmp_path) == []
    with report.results_lock(target):           # released: free again
        pass


def test_the_lock_removes_the_parent_folders_it_made_when_nothing_was_written(tmp_path):
    with report.results_lock(tmp_path / "a" / "b" / "out"):
        assert (tmp_path / "a" / "b").is_dir()
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------------------------
# Replacing earlier results


def earlier_results(folder: Path) -> dict[str, bytes]:
    with report.AtomicFolder(folder) as staging:
        (staging.path / "alerts.csv").write_text("earlier\n")
        staging.commit()
    return snapshot(folder)


def test_replacing_without_an_atomic_swap_still_ends_with_new_results(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "_exchange", lambda a, b: False)
    earlier_results(tmp_path / "out")
    with report.AtomicFolder(tmp_path / "out") as staging:
        (staging.path / "alerts.csv").write_text("new\n")
        staging.commit()
    assert (tmp_path / "out" / "alerts.csv").read_text() == "new\n"
    assert os.listdir(tmp_path) == ["out"]


def test_a_failed_swap_puts_the_earlier_results_back(tmp_path, monkeypatch):
    before = earlier_results(tmp_path / "out")
    monkeypatch.setattr(report, "_exchange", lambda a, b: False)
    real_rename, calls = os.rename, []

    def rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:   # the earlier results are aside, the new ones fail to move in
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OutputError, match="No space left on device: free some space there"):
        with report.AtomicFolder(tmp_path / "out", "--out") as staging:
            (staging.path / "alerts.csv").write_text("new\n")
            staging.commit()
    assert snapshot(tmp_path / "out") == before and os.listdir(tmp_path) == ["out"]


# --------------------------------------------------------------------------------------------
# Sweeping what killed runs left


def leftover(folder: Path, marker: dict | None, files: dict[str, str]) -> Path:
    folder.mkdir()
    if marker is not None:
        report.write_json(marker, folder / report.MARKER)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_the_next_run_sweeps_results_folders_of_dead_runs_and_says_so(tmp_path, caplog):
    gone, ours = dead_pid(), {"written_by": "backtester run", "host": report._HOST}
    half = leftover(tmp_path / f".out.tmp-{gone}-0123abcd", ours, {"alerts.csv": "half"})
    empty = leftover(tmp_path / f".out.tmp-{gone}-0123abce", None, {})
    aside = leftover(tmp_path / f".prev.old-{gone}-0123abcf", ours, {"alerts.csv": "earlier"})
    foreign = leftover(tmp_path / f".out.tmp-{gone}-0123abd0", None, {"alerts.csv": "?"})
    mixed = leftover(tmp_path / f".out.tmp-{gone}-0123abd1", ours, {"notes.txt": "mine"})
    elsewhere = leftover(tmp_path / f".out.tmp-{gone}-0123abd2", {**ours, "host": "other"},
                         {"alerts.csv": "remote"})
    running = leftover(tmp_path / f".out.tmp-{os.getppid()}-0123abd3", ours, {})

    with caplog.at_level(logging.WARNING, logger="backtester"):
        done = execution.sweep_leftovers(tmp_path / "out")
    assert not half.exists() and not empty.exists() and not aside.exists()
    assert (tmp_path / "prev" / "alerts.csv").read_text() == "earlier"   # put back, not lost
    assert all(p.exists() for p in (foreign, mixed, elsewhere, running))
    assert len(done) == 3
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert line.startswith("removed what killed runs left behind: ") and "\n" not in line
    assert f"put back the earlier results {tmp_path / 'prev'}" in line


def test_lock_files_of_killed_runs_are_swept_but_not_held_or_foreign_ones(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "killed")],
                              cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    holder.kill()
    holder.communicate(timeout=60)
    (tmp_path / ".foreign.lock").write_text("")
    with report.results_lock(tmp_path / "held"):
        done = report.sweep_results_leftovers(tmp_path)
        assert done == [f"lock file {tmp_path / '.killed.lock'}"]
        assert hidden(tmp_path) == [".foreign.lock", ".held.lock"]


def test_a_sweep_with_nothing_to_do_says_nothing(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="backtester"):
        assert execution.sweep_leftovers(tmp_path / "out") == []
    assert caplog.records == []


def test_bars_folders_holding_files_we_do_not_write_are_not_swept(tmp_path):
    gone = dead_pid()
    ours = tmp_path / f"backtester-bars-{gone}-a"
    (ours / "joblib_memmapping_folder_1_x").mkdir(parents=True)
    (ours / "close.npy").write_bytes(b"")
    theirs = tmp_path / f"backtester-bars-{gone}-b"
    theirs.mkdir()
    (theirs / "data.db").write_bytes(b"")
    assert execution._remove_stale_folders(str(tmp_path)) == [str(ours)]
    assert theirs.exists() and not ours.exists()


def test_a_slow_parallel_run_is_not_blamed_on_fixed_costs_smaller_than_the_sequential_run():
    from backtester.api import timing_verdict
    from backtester.execution import ExecutionReport

    seq = ExecutionReport("sequential", 1, (), 12.8, 0.0, 12.8, 1)
    par = ExecutionReport("loky", 4, (), 10.1, 3.9, 14.0, 16)
    verdict = timing_verdict(seq, par, 12.8 / 14.0)
    assert verdict.startswith("parallel slower (0.91x) on a 12.80 s sequential run, longer than "
                              "the parallel run's worker start-up (3.900 s)")
    assert "less than" not in verdict and "`backtester scale`" in verdict
    quick = ExecutionReport("sequential", 1, (), 0.5, 0.0, 0.5, 1)
    assert timing_verdict(quick, par, 0.5 / 14.0).startswith(
        "parallel slower (0.04x): the sequential run took only 0.500 s, less than the parallel "
        "run's fixed costs")


# --------------------------------------------------------------------------------------------
# Limits that hold

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)) \
    + "name: *i\n"


def within(seconds: float, function, *args):
    """`function(*args)` in a thread; its result or exception, failing the test on a hang."""
    box: list = []

    def call():
        try:
            box.append(("value", function(*args)))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            box.append(("raised", exc))

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    assert box, f"{function.__name__} still running after {seconds} s"
    return box[0]


@pytest.mark.parametrize(("text", "message"), [
    (BOMB, "c.yaml: line 6, column 4: invalid YAML: expands to more than 100,000 values "
           "through aliases (*name); write the values out"),
    ("name: " + "[" * 5000 + "]" * 5000 + "\n",
     "c.yaml: line 1, column 70: invalid YAML: nested deeper than 64 levels"),
])
def test_yaml_bombs_and_deep_nesting_are_refused_in_one_line(tmp_path, text, message):
    from backtester.config import load_config

    (tmp_path / "c.yaml").write_text(text)
    kind, outcome = within(60, load_config, str(tmp_path / "c.yaml"))
    assert kind == "raised" and isinstance(outcome, BacktestError)
    assert str(outcome) == message.replace("c.yaml", str(tmp_path / "c.yaml"))


@pytest.mark.parametrize(("alert", "execution", "flags", "message"), [
    ("cooldown: 99999999999d", "", (), "alerts[0].cooldown: '99999999999d' is longer than "
     "36,500 days (use a shorter cooldown, or once_per_day)"),
    ("cooldown: 10000000000000", "", (), "alerts[0].cooldown: 10000000000000 is more than "
     "1,000,000,000 bars"),
    ("skip_first: 1000000000", "", (), "alerts[0].skip_first: 1000000000 is longer than a day "
     "(1440 minutes) (sessions are shorter than a day)"),
    ("", "execution: {n_jobs: 1000000000}", (), "execution.n_jobs: 1000000000 workers is more "
     "than the"),
    ("", "", ("--n-jobs", "-1000000000"), "--n-jobs: -1000000000 workers is more than the"),
])
def test_huge_counts_and_durations_are_one_line_errors(case, capsys, alert, execution, flags,
                                                       message):
    text = (case / "c.yaml").read_text().replace("'rsi(14) < 40'}", f"'rsi(14) < 40', {alert}}}"
                                                 if alert else "'rsi(14) < 40'}")
    (case / "c.yaml").write_text(text.replace("execution: {backend: sequential}\n",
                                              execution + "\n" if execution else
                                              "execution: {backend: sequential}\n"))
    status, err = run_cli(capsys, "run", "c.yaml", *flags)
    assert status == 2 and len(err) == 1
    assert err[0].startswith(message if flags else f"c.yaml: {message}")
    assert sorted(os.listdir(case)) == ["c.yaml"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_data_path_is_refused_not_waited_on(case, capsys):
    os.mkfifo(case / "bars.csv")
    text = (case / "c.yaml").read_text()
    (case / "c.yaml").write_text(text[:text.index("data:")] + "data: {path: bars.csv}\n"
                                 + text[text.index("alerts:"):])
    kind, status = within(60, main, ["run", "c.yaml"])
    assert (kind, status) == ("value", 2)
    assert capsys.readouterr().err.splitlines() == \
        ["bars.csv: not a regular file (a FIFO, device or socket cannot be read as bars; copy "
         "the data into a file)"]
