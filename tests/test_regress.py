"""Regression diffs: what counts as a change, how it reads, and the shipped goldens passing."""

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtester import regress, report
from backtester.cli import main

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
LABELS = ("golden", "current")


def alerts_frame(**changes) -> pd.DataFrame:
    frame = pd.DataFrame({
        "timestamp": pd.to_datetime(["2024-03-04 09:31", "2024-03-04 09:45", "2024-03-05 10:02"])
        .tz_localize("America/New_York"),
        "symbol": ["SYNA", "SYNB", "SYNA"],
        "alert": ["dip", "dip", "dip"],
        "close": [101.25, 57.5, 99.75],
        "rsi(14)": [28.733099044907085, 24.942377583242752, np.nan],
    })
    for column, (row, value) in changes.items():
        frame.loc[row, column] = value
    return frame


def trades_frame(**changes) -> pd.DataFrame:
    stamp = pd.Timestamp("2024-03-04 09:31", tz="America/New_York")
    minute = pd.Timedelta("1min")
    frame = pd.DataFrame({
        "alert": ["dip", "dip"], "symbol": ["SYNA", "SYNB"],
        "signal_time": [stamp, stamp + 14 * minute],
        "entry_time": [stamp + minute, stamp + 15 * minute],
        "exit_time": [stamp + 9 * minute, stamp + 75 * minute],
        "reason": ["tp", "time"], "bars_held": [8, 60],
        "return": [0.009871, -0.0012345678901234], "both_touched": [False, False],
    })
    for column, (row, value) in changes.items():
        frame.loc[row, column] = value
    return frame


SUMMARY = {"name": "hand", "config": "configs/hand.yaml", "fires": {"dip": 3},
           "stats": {"overall": {"fires": 3, "win_rate": 0.5, "sharpe": None,
                                 "mean_ci95": [-0.0019, 0.0002]}}}
MANIFEST = {"engine": "0.1.0", "git_revision": "abc", "versions": {"numpy": "2.4.6"},
            "data": [{"path": "bars.parquet", "rows": 10, "sha256": "aaa"}],
            "started": "2024-01-01T00:00:00", "duration_seconds": 1.5, "joblib_cpu_count": 8}


def result_folder(path: Path, alerts=None, trades=None, summary=None, manifest=None) -> Path:
    path.mkdir(parents=True)
    report.write_frame(alerts_frame() if alerts is None else alerts, path, "alerts", [])
    report.write_frame(trades_frame() if trades is None else trades, path, "trades", [])
    report.write_json(SUMMARY if summary is None else summary, path / "summary.json")
    report.write_json(MANIFEST if manifest is None else manifest, path / "manifest.json")
    return path


def diff_of(tmp_path, **current) -> regress.RunDiff:
    golden = result_folder(tmp_path / "golden")
    return regress.compare_folders(golden, result_folder(tmp_path / "current", **current),
                                   "hand", labels=LABELS)


def shows(text: str, *cells: str) -> bool:
    """Some line of `text` reads `cells`, side by side."""
    return any(line.split() == list(cells) for line in text.splitlines())


def only_file(diff: regress.RunDiff) -> regress.FileDiff:
    assert len(diff.files) == 1, diff.render()
    return diff.files[0]


def test_identical_folders_match(tmp_path):
    diff = diff_of(tmp_path)
    assert diff.ok
    assert diff.compared == ("alerts.csv", "trades.csv", "summary.json")
    assert diff.render().startswith("ok    hand:")


def test_float_change_within_1e9_relative_passes(tmp_path):
    diff = diff_of(tmp_path, alerts=alerts_frame(close=(0, 101.25 * (1 + 4e-10))))
    assert diff.ok, diff.render()


def test_float_change_beyond_1e9_relative_is_shown_side_by_side(tmp_path):
    diff = diff_of(tmp_path, alerts=alerts_frame(**{"rsi(14)": (1, 24.942377583242752 * 1.000001)}))
    changed = only_file(diff)
    assert (changed.file, changed.changed, changed.added, changed.removed) == \
        ("alerts.csv", 1, 0, 0)
    text = diff.render()
    assert "FAIL  hand" in text
    assert "timestamp=2024-03-04 09:45:00-05:00 symbol=SYNB alert=dip" in text
    assert "golden line 3, current line 3" in text
    assert shows(text, "rsi(14)", "24.942377583242752", "24.942402525620334", "1.0e-06")


def test_nan_equals_nan_but_not_a_number(tmp_path):
    assert diff_of(tmp_path / "same", alerts=alerts_frame(**{"rsi(14)": (2, np.nan)})).ok
    diff = diff_of(tmp_path / "filled", alerts=alerts_frame(**{"rsi(14)": (2, 30.0)}))
    assert only_file(diff).changed == 1


def test_moved_timestamp_is_one_removed_and_one_added_event(tmp_path):
    moved = alerts_frame(timestamp=(1, pd.Timestamp("2024-03-04 09:46", tz="America/New_York")))
    diff = only_file(diff_of(tmp_path, alerts=moved))
    assert (diff.changed, diff.added, diff.removed) == (0, 1, 1)
    text = "\n".join(diff.render(LABELS))
    assert "removed  golden line 3: timestamp=2024-03-04 09:45:00-05:00 symbol=SYNB" in text
    assert "added    current line 3: timestamp=2024-03-04 09:46:00-05:00 symbol=SYNB" in text


def test_exit_reason_and_bars_held_compare_exactly(tmp_path):
    diff = only_file(diff_of(tmp_path, trades=trades_frame(reason=(1, "sl"), bars_held=(0, 9))))
    assert (diff.file, diff.changed) == ("trades.csv", 2)
    text = "\n".join(diff.render(LABELS))
    assert shows(text, "bars_held", "8", "9", "1.1e-01") and shows(text, "reason", "time", "sl")


def test_integer_column_is_exact_even_within_float_tolerance(tmp_path):
    golden = result_folder(tmp_path / "golden", alerts=alerts_frame().assign(volume=[10**12, 5, 7]))
    current = result_folder(tmp_path / "current",
                            alerts=alerts_frame().assign(volume=[10**12 + 1, 5, 7]))
    assert only_file(regress.compare_folders(golden, current, "hand")).changed == 1


def test_extra_and_missing_rows_are_counted(tmp_path):
    current = pd.concat([alerts_frame().iloc[1:], alerts_frame().iloc[:1]
                         .assign(symbol="SYNC"), alerts_frame().iloc[:1].assign(symbol="SYND")])
    diff = only_file(diff_of(tmp_path, alerts=current.sort_values("timestamp", kind="stable")))
    assert (diff.changed, diff.added, diff.removed) == (0, 2, 1)
    assert diff.rows == (3, 4)


def test_reordered_rows_are_a_difference(tmp_path):
    diff = only_file(diff_of(tmp_path, alerts=alerts_frame().iloc[[1, 0, 2]]))
    assert "same rows in a different order from data row 1" in diff.notes


def test_column_changes_are_named(tmp_path):
    current = alerts_frame().drop(columns="rsi(14)").assign(**{"ema(200)": 1.0})
    diff = only_file(diff_of(tmp_path, alerts=current))
    assert diff.notes == ("columns only in golden: rsi(14)", "columns only in current: ema(200)")


def test_missing_file_counts_its_rows(tmp_path):
    golden = result_folder(tmp_path / "golden")
    current = result_folder(tmp_path / "current")
    (current / "trades.csv").unlink()
    diff = only_file(regress.compare_folders(golden, current, "hand", labels=LABELS))
    assert (diff.file, diff.removed, diff.notes) == ("trades.csv", 2, ("missing in current",))


def test_summary_statistics_are_compared_by_dotted_path(tmp_path):
    summary = json.loads(json.dumps(SUMMARY))
    summary["config"] = "elsewhere/hand.yaml"          # where the config lives does not matter
    summary["stats"]["overall"]["mean_ci95"][1] = 0.00021
    summary["stats"]["overall"]["sharpe"] = 1.5
    del summary["fires"]
    diff = only_file(diff_of(tmp_path, summary=summary))
    assert (diff.file, diff.changed, diff.added, diff.removed) == ("summary.json", 2, 0, 1)
    text = "\n".join(diff.details)
    assert "stats.overall.mean_ci95[1]" in text and "removed  fires.dip = 3" in text


def test_manifest_differences_explain_a_failure_without_volatile_fields(tmp_path):
    manifest = {**MANIFEST, "versions": {"numpy": "2.5.0"}, "started": "later",
                "duration_seconds": 9.0, "joblib_cpu_count": 2}
    same = diff_of(tmp_path / "same", manifest=manifest)
    assert same.ok and same.manifest == ()
    diff = diff_of(tmp_path / "moved", manifest=manifest, alerts=alerts_frame(close=(0, 1.0)))
    assert diff.manifest == (("versions.numpy", "2.4.6", "2.5.0"),)
    assert "versions.numpy: 2.4.6 -> 2.5.0" in diff.render()


def test_compare_command_exit_status(tmp_path, capsys):
    a = result_folder(tmp_path / "a")
    b = result_folder(tmp_path / "b", trades=trades_frame(reason=(0, "sl")))
    assert main(["compare", str(a), str(a)]) == 0
    assert main(["compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  a vs b" in out and "trades.csv: 2 rows A, 2 B: 1 changed" in out
    assert main(["compare", str(a), str(tmp_path / "nothing")]) == 2
    assert "not a result folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The shipped configs against the shipped goldens


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # configs name their data relative to the repository root


def shipped_configs():
    return sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))


def test_every_shipped_config_has_small_csv_goldens():
    assert shipped_configs() == sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())
    for stem in shipped_configs():
        names = {p.name for p in (GOLDEN / stem).iterdir()}
        assert {"alerts.csv", "summary.json", "manifest.json"} <= names
        manifest = json.loads((GOLDEN / stem / "manifest.json").read_text())
        assert not set(regress.VOLATILE_MANIFEST_FIELDS) & set(manifest)


def test_regress_passes_on_the_shipped_goldens_and_leaves_nothing(in_repo, tmp_path,
                                                                 monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    results = REPO / "results"
    before = sorted(os.listdir(results)) if results.is_dir() else None
    assert main(["regress"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert f"regress: {len(shipped_configs())} configs match their goldens" in out
    assert list(tmp_path.iterdir()) == []
    assert (sorted(os.listdir(results)) if results.is_dir() else None) == before


def test_regress_fails_with_a_readable_diff_on_a_hand_edited_golden(in_repo, tmp_path, capsys):
    golden = tmp_path / "golden"
    shutil.copytree(GOLDEN, golden)
    stem = shipped_configs()[0]
    alerts = golden / stem / "alerts.csv"
    lines = alerts.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    close = header.index("close")
    fields = lines[3].rstrip("\n").split(",")            # data row 3, file line 4
    fields[close] = repr(float(fields[close]) + 0.01)
    lines[3] = ",".join(fields) + "\n"
    key = " ".join(f"{c}={fields[header.index(c)]}" for c in ("timestamp", "symbol", "alert"))
    del lines[5]                                         # file line 6: the run adds it back
    alerts.write_text("".join(lines))

    assert main(["regress", "--golden", str(golden)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  {stem}: results differ (golden -> current)" in out
    assert "alerts.csv:" in out and "1 changed, 1 added, 0 removed" in out
    assert f"changed  {key}  (golden line 4, current line 4)" in out
    assert "added    current line 6:" in out
    assert "manifest fields that differ" in out or "manifest: no field differs" in out
    assert "make regress-update" in out
    others = [s for s in shipped_configs() if s != stem]
    assert all(f"ok    {s}:" in out for s in others)


def test_regress_update_rewrites_goldens_and_removes_stale_ones(in_repo, tmp_path, capsys):
    configs, golden = tmp_path / "configs", tmp_path / "golden"
    configs.mkdir()
    stem = "rsi"
    shutil.copyfile(REPO / "configs" / f"{stem}.yaml", configs / f"{stem}.yaml")
    shutil.copytree(GOLDEN, golden)
    (golden / stem / "alerts.csv").write_text("timestamp,symbol,alert,close\n")
    stale = [s for s in shipped_configs() if s != stem]

    assert main(["regress", "--update", "--configs", str(configs), "--golden", str(golden)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {stem}: golden results rewritten:" in out
    assert "alerts.csv: 0 rows old" in out
    assert all(f"gone  {s}: removed stale golden results" in out for s in stale)
    assert sorted(p.name for p in golden.iterdir()) == [stem]       # no staging folder left
    for name in ("alerts.csv", "forward.csv"):   # summary.json names the config's path
        assert (golden / stem / name).read_bytes() == (GOLDEN / stem / name).read_bytes()
    assert main(["regress", "--configs", str(configs), "--golden", str(golden)]) == 0


def test_update_keeps_the_manifest_when_only_the_revision_moved(tmp_path):
    run = result_folder(tmp_path / "run", manifest={**MANIFEST, "git_revision": "def"})
    golden = tmp_path / "golden"
    result_folder(golden / "hand", manifest=regress.stable_manifest(MANIFEST))
    report.write_json({"written_by": regress.GOLDEN_WRITER}, golden / "hand" / report.MARKER)
    kept = (golden / "hand" / "manifest.json").read_bytes()
    regress._update_goldens({"hand": run}, golden, io.StringIO())
    assert (golden / "hand" / "manifest.json").read_bytes() == kept

    run = result_folder(tmp_path / "upgraded", manifest={**MANIFEST, "versions": {"numpy": "3"}})
    regress._update_goldens({"hand": run}, golden, io.StringIO())
    written = json.loads((golden / "hand" / "manifest.json").read_text())
    assert written == regress.stable_manifest({**MANIFEST, "versions": {"numpy": "3"}})


def _git(cwd: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_revision_marks_a_dirty_tree_and_ignores_repos_that_do_not_track_the_package(
        tmp_path):
    repo = tmp_path / "project"
    package = repo / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    _git(repo, "init", "-q", ".")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")
    assert report.git_revision(package) == head
    (repo / "untracked.txt").write_text("results and notes do not make it dirty")
    assert report.git_revision(package) == head
    (package / "__init__.py").write_text("x = 2\n")
    assert report.git_revision(package) == f"{head}-dirty"
    # Installed into a virtual environment inside some other project's work tree:
    installed = repo / ".venv" / "lib" / "site-packages" / "backtester"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    assert report.git_revision(installed) is None
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert report.git_revision(outside) is None
