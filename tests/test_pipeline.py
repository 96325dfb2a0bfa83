"""End to end: hand-made bars with known answers, backends agreeing, and clean failures."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import backtester
from backtester import synth
from backtester.bars import from_frame


def session_bars(day: str, closes, symbol="HAND") -> pd.DataFrame:
    """1-minute bars from 09:30 New York with the given closes (open = previous close)."""
    closes = np.asarray(closes, dtype=float)
    stamps = pd.date_range(f"{day} 09:30", periods=len(closes), freq="1min", tz="America/New_York")
    opens = np.concatenate(([closes[0]], closes[:-1]))
    return pd.DataFrame({"timestamp": stamps, "symbol": symbol, "open": opens,
                         "high": np.maximum(opens, closes) + 0.01,
                         "low": np.minimum(opens, closes) - 0.01, "close": closes,
                         "volume": 100.0})


def config(when, **alert):
    return {"name": "hand", "data": {"path": "<frame>"},
            "alerts": [{"name": "a", "when": when, **alert}],
            "schedule": {"cluster_by": "day"}, "execution": {"backend": "sequential"}}


@pytest.fixture(scope="module")
def hand_bars():
    closes = np.full(390, 100.0)
    closes[[10, 59, 60, 200]] = 106.0        # 09:40, 10:29, 10:30, 12:50
    day1 = session_bars("2024-03-04", closes)
    day2 = session_bars("2024-03-05", np.full(390, 100.0))
    day2.loc[5, ["close", "high"]] = [107.0, 107.01]   # 09:35 the next day
    return from_frame(pd.concat([day1, day2], ignore_index=True), timezone="America/New_York")


def fired(result):
    return [t.strftime("%m-%d %H:%M") for t in result.alerts["timestamp"]]


def test_rule_fires_exactly_on_the_known_bars(hand_bars):
    result = backtester.run(config("crosses_above(close, 105)"), bars=hand_bars, write=False)
    assert fired(result) == ["03-04 09:40", "03-04 10:29", "03-04 12:50", "03-05 09:35"]
    assert list(result.alerts.columns[:4]) == ["timestamp", "symbol", "alert", "close"]
    assert str(result.alerts["timestamp"].dt.tz) == "America/New_York"


def test_between_window_includes_start_and_excludes_end(hand_bars):
    result = backtester.run(config("close > 105", between=["09:40", "10:30"]), bars=hand_bars,
                            write=False)
    assert fired(result) == ["03-04 09:40", "03-04 10:29"]


def test_cooldown_drops_second_alert_within_30min(hand_bars):
    result = backtester.run(config("close > 105", cooldown="60min"), bars=hand_bars, write=False)
    # 10:29 is 49 minutes after 09:40: dropped; 10:30 is 50 minutes: dropped too.
    assert fired(result) == ["03-04 09:40", "03-04 12:50", "03-05 09:35"]
    assert result.summary["suppressed_by_state"] == {"a": 2}


def test_cooldown_holds_across_cluster_boundaries(hand_bars):
    # One fire per 24h: the day-2 candidate at 09:35 is < 24h after 09:40 the day before,
    # although it sits in another cluster.
    result = backtester.run(config("close > 105", cooldown="24h"), bars=hand_bars, write=False)
    assert fired(result) == ["03-04 09:40"]


def test_once_per_day_and_indicator_columns(hand_bars):
    result = backtester.run(config("close > 105 and sma(5) > 100", once_per_day=True),
                            bars=hand_bars, write=False)
    assert fired(result) == ["03-04 09:40", "03-05 09:35"]
    np.testing.assert_allclose(result.alerts["sma(5)"], [101.2, 101.4])


def test_rearm_when_silences_until_the_condition_held():
    closes = np.full(390, 100.0)
    closes[[10, 11, 20, 40]] = 90.0
    closes[30] = 110.0       # rearms between the fire at bar 20 and bar 40
    bars = from_frame(session_bars("2024-03-04", closes), timezone="America/New_York")
    result = backtester.run(config("close < 95", rearm_when="close > 105"), bars=bars, write=False)
    assert fired(result) == ["03-04 09:40", "03-04 10:10"]


@pytest.fixture(scope="module")
def synthetic_bars():
    frame = synth.generate(["SYNA", "SYNB"], "2024-03-01", "2024-04-30", seed=3)
    return from_frame(frame, timezone="America/New_York")


RULES = {"name": "many", "data": {"path": "<frame>"},
         "define": {"oversold": "rsi(14) < 35"},
         "alerts": [
             {"name": "rsi", "when": "oversold and close < bbands(20, 2).lower",
              "cooldown": "15min", "forward": [5, 30]},
             {"name": "macd", "when": "crosses_above(macd(12, 26, 9).macd, macd(12, 26, 9).signal)"
                                      " and close > vwap", "once_per_day": False},
             {"name": "atr", "when": "true_range > 2 * atr(14)", "between": ["10:00", "15:00"]},
         ],
         "schedule": {"cluster_by": "week"}}


@pytest.mark.parametrize("backend", ["threading", "loky"])
def test_backends_give_identical_results(synthetic_bars, backend):
    seq = backtester.run({**RULES, "execution": {"backend": "sequential"}}, bars=synthetic_bars,
                         write=False)
    par = backtester.run({**RULES, "execution": {"backend": backend, "n_jobs": 2}},
                         bars=synthetic_bars, write=False)
    assert len(seq.alerts) > 20
    pd.testing.assert_frame_equal(seq.alerts, par.alerts)
    pd.testing.assert_frame_equal(seq.forward, par.forward)


def test_layouts_agree_with_one_unsplit_cluster(synthetic_bars):
    whole = backtester.run({**RULES, "schedule": {"cluster_by": {"count": 1}},
                            "execution": {"backend": "sequential"}}, bars=synthetic_bars,
                           write=False)
    for layout in ("day", {"bars": 777}, "month"):
        split = backtester.run({**RULES, "schedule": {"cluster_by": layout},
                                "execution": {"backend": "sequential"}}, bars=synthetic_bars,
                               write=False)
        pd.testing.assert_frame_equal(whole.alerts[["timestamp", "symbol", "alert"]],
                                      split.alerts[["timestamp", "symbol", "alert"]])
        numeric = [c for c in whole.alerts.columns if c not in ("timestamp", "symbol", "alert")]
        np.testing.assert_allclose(whole.alerts[numeric].to_numpy(float),
                                   split.alerts[numeric].to_numpy(float), rtol=1e-9)


def test_compare_sequential_reports_identical(synthetic_bars, tmp_path):
    out = tmp_path / "res"
    result = backtester.run({**RULES, "execution": {"backend": "threading", "n_jobs": 2,
                                                    "compare_sequential": True}},
                            bars=synthetic_bars, out=str(out))
    assert result.timing["identical"] is True
    timing = json.loads((out / "timing.json").read_text())
    for key in ("speedup", "efficiency", "cluster_seconds", "parallel", "sequential", "verdict"):
        assert key in timing
    clusters = timing["cluster_seconds"]
    assert [c["cluster"] for c in clusters] == list(range(len(result.layout.clusters)))
    assert {c["symbol"] for c in clusters} == {"SYNA", "SYNB"}
    assert sum(c["bars"] for c in clusters) == result.summary["bars"]
    assert all(c["first"] <= c["last"] and c["seconds"] >= 0 for c in clusters)
    markdown = (out / "timing.md").read_text()
    slowest = max(clusters, key=lambda c: c["seconds"])
    assert f"| {slowest['cluster']} | {slowest['symbol']} | {slowest['first']}..{slowest['last']} |" \
        in markdown
    assert f"**Verdict:** {timing['verdict']}" in markdown
    assert (out / "alerts.csv").exists() and (out / "alerts.parquet").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert sum(summary["fires"].values()) == len(result.alerts)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "backtester", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_bad_config_exits_2_with_one_line_and_no_output(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "name: bad\ndata: {path: bars.csv}\nalerts:\n  - {name: a, when: 'rsii(14) < 30'}\n"
        "output: {dir: out}\n")
    proc = cli("run", "c.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == \
        ["c.yaml: alerts[0].when: unknown function 'rsii' at column 1 (did you mean 'rsi'?)"]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_bad_config_field_exits_2_with_exactly_one_line(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "name: bad\ndata: {path: bars.csv}\nalerts:\n  - {name: a, when: 'close > 1', "
        "cooldown: soon}\noutput: {dir: out}\n")
    proc = cli("run", "c.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("c.yaml: alerts[0].cooldown: ")
    assert "'soon'" in lines[0]
    assert not (tmp_path / "out").exists()


def test_bad_data_file_exits_2_naming_file_and_row(tmp_path):
    frame = session_bars("2024-03-04", np.full(30, 100.0))
    frame.loc[7, "high"] = 50.0   # below the close
    frame.to_csv(tmp_path / "bars.csv", index=False)
    (tmp_path / "c.yaml").write_text(
        "name: bad\ndata: {path: bars.csv}\nalerts:\n  - {name: a, when: 'close > 1'}\n"
        "output: {dir: out}\n")
    proc = cli("run", "c.yaml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "bars.csv" in line and "row 8" in line and "high" in line
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# The results folder, flags and one-line errors


def hand_case(tmp_path: Path, when: str = "close > 100.5", data: str = "bars.csv",
              extra: str = "") -> Path:
    """A config `c.yaml` over 30 hand-made bars in `tmp_path`, writing to `out`."""
    closes = np.full(30, 100.0)
    closes[[5, 20]] = 101.0
    session_bars("2024-03-04", closes).to_csv(tmp_path / "bars.csv", index=False)
    (tmp_path / "c.yaml").write_text(
        f"name: hand\ndata: {{path: {data}}}\nalerts:\n  - {{name: a, when: '{when}'}}\n"
        f"execution: {{backend: sequential}}\noutput: {{dir: out}}\n{extra}")
    return tmp_path / "c.yaml"


def run_cli(monkeypatch, capsys, cwd: Path, *args: str) -> tuple[int, str, list[str]]:
    from backtester.cli import main

    monkeypatch.chdir(cwd)
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err.splitlines()


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_out_refuses_a_folder_of_the_users_and_leaves_it_intact(tmp_path, monkeypatch, capsys):
    hand_case(tmp_path, data="missing.csv")   # refused before the data is even read
    target = tmp_path / "v"
    (target / "sub").mkdir(parents=True)
    (target / "notes.txt").write_text("keep me\n")
    status, _, err = run_cli(monkeypatch, capsys, tmp_path, "run", "c.yaml", "--out", "v")
    assert status == 2
    assert len(err) == 1 and err[0].startswith("--out: v: exists and is not a backtester "
                                               "results folder (holds notes.txt, sub/)")
    assert "choose another --out" in err[0]
    assert (target / "notes.txt").read_text() == "keep me\n" and (target / "sub").is_dir()
    assert siblings(tmp_path) == []


def test_output_dir_in_the_config_is_named_when_it_is_refused(tmp_path, monkeypatch, capsys):
    hand_case(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "alerts.csv").write_text("not ours: no manifest\n")
    status, _, err = run_cli(monkeypatch, capsys, tmp_path, "run", "c.yaml")
    assert status == 2
    assert err == ["c.yaml: output.dir: out: exists and has no .backtester-results.json "
                   "marker, so backtester did not write it (another tool's results, or an older "
                   "backtester's, which wrote none); refusing to replace it (choose another "
                   "output.dir, or pass --out, or empty that folder first)"]
    assert (tmp_path / "out" / "alerts.csv").read_text() == "not ours: no manifest\n"


def test_out_refuses_to_replace_a_plain_file(tmp_path, monkeypatch, capsys):
    hand_case(tmp_path)
    (tmp_path / "plain").write_text("precious")
    status, _, err = run_cli(monkeypatch, capsys, tmp_path, "run", "c.yaml", "--out", "plain")
    assert status == 2 and len(err) == 1
    assert err[0].startswith("--out: plain: is a file, not a results folder")
    assert (tmp_path / "plain").read_text() == "precious"
    assert siblings(tmp_path) == []


@pytest.mark.parametrize("out", ["/dev/null/x", ".", "/"])
def test_impossible_out_paths_are_one_line_errors(tmp_path, monkeypatch, capsys, out):
    hand_case(tmp_path)
    status, _, err = run_cli(monkeypatch, capsys, tmp_path, "run", "c.yaml", "--out", out)
    assert status == 2
    assert len(err) == 1 and err[0].startswith(f"--out: {out}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.csv", "c.yaml"]


def test_a_rerun_replaces_its_own_results_with_a_plain_mkdir_mode(tmp_path, monkeypatch, capsys):
    hand_case(tmp_path)
    old_umask = os.umask(0o022)
    try:
        for _ in range(2):
            status, out, err = run_cli(monkeypatch, capsys, tmp_path, "run", "c.yaml")
            assert status == 0, err
    finally:
        os.umask(old_umask)
    folder = tmp_path / "out"
    assert folder.stat().st_mode & 0o777 == 0o755
    assert (folder / "manifest.json").is_file() and siblings(tmp_path) == []
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "numpy" not in manifest and manifest["versions"]["numpy"]


def test_atomic_folder_follows_the_umask(tmp_path):
    from backtester.report import AtomicFolder

    old_umask = os.umask(0o027)
    try:
        with AtomicFolder(tmp_path / "res") as folder:
            assert folder.path.stat().st_mode & 0o777 == 0o750
            (folder.path / "manifest.json").write_text("{}")
            folder.commit()
    finally:
        os.umask(old_umask)
    assert (tmp_path / "res").stat().st_mode & 0o777 == 0o750


@pytest.mark.parametrize(("args", "start"), [
    (["--start", "2024-02-01", "--end", "2024-01-05"], "--end: 2024-01-05 is before --start"),
    (["--calendar", "XXXX"], "--calendar: unknown calendar 'XXXX'"),
    (["--start", "soon"], "--start: expected a date like 2024-01-02, got 'soon'"),
    (["--symbols", "0"], "--symbols: expected at least 1 symbol"),
    (["--symbols", "A,,B"], "--symbols: expected a count or comma-separated names"),
    (["--timezone", "Mars/Olympus"], "--timezone: unknown timezone 'Mars/Olympus'"),
])
def test_synth_rejects_bad_flags_in_one_line(tmp_path, monkeypatch, capsys, args, start):
    status, _, err = run_cli(monkeypatch, capsys, tmp_path, "synth", *args,
                             "--end" if "--end" not in args else "--seed", "2024-01-10"
                             if "--end" not in args else "1", "--out", "a.parquet")
    assert status == 2
    assert len(err) == 1 and err[0].startswith(start), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("out", ["/dev/null/a.parquet", "notes", "a.txt"])
def test_synth_refuses_an_out_it_cannot_or_must_not_write(tmp_path, monkeypatch, capsys, out):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "diary.txt").write_text("keep")
    status, _, err = run_cli(monkeypatch, capsys, tmp_path, "synth", "--end", "2024-01-03",
                             "--out", out)
    assert status == 2
    assert len(err) == 1 and err[0].startswith(f"--out: {out}: ")
    assert (tmp_path / "notes" / "diary.txt").read_text() == "keep"


def test_validate_checks_that_the_data_exists(tmp_path, monkeypatch, capsys):
    hand_case(tmp_path, data="nowhere.parquet")
    status, _, err = run_cli(monkeypatch, capsys, tmp_path, "validate", "c.yaml")
    assert status == 2
    assert len(err) == 1 and err[0].startswith(
        "c.yaml: data.path: no such file or folder: nowhere.parquet")
    hand_case(tmp_path)
    status, out, err = run_cli(monkeypatch, capsys, tmp_path, "validate", "c.yaml")
    assert status == 0 and "data: 1 file in bars.csv" in out


def test_rule_error_is_one_line_unless_verbose(tmp_path, monkeypatch, capsys):
    hand_case(tmp_path, when="close > sma(20) +")
    status, _, err = run_cli(monkeypatch, capsys, tmp_path, "run", "c.yaml")
    assert status == 2 and len(err) == 1 and err[0].startswith("c.yaml: alerts[0].when: ")
    status, _, verbose = run_cli(monkeypatch, capsys, tmp_path, "run", "c.yaml", "--verbose")
    assert status == 2 and verbose[0] == err[0]
    assert len(verbose) == 3 and verbose[1].strip() == "close > sma(20) +"
    assert verbose[2].strip() == "^"


@pytest.mark.parametrize(("flags", "line"), [
    (["--n-jobs", "0"], "--n-jobs: expected a non-zero integer (-1 = all cores), got 0"),
    (["--cluster-by", "fortnight"], "--cluster-by: 'fortnight' is not a layout"),
])
def test_bad_flags_are_blamed_on_the_flag_not_the_config(tmp_path, monkeypatch, capsys, flags,
                                                         line):
    hand_case(tmp_path)
    status, _, err = run_cli(monkeypatch, capsys, tmp_path, "run", "c.yaml", *flags)
    assert status == 2
    assert len(err) == 1 and err[0].startswith(line) and "c.yaml" not in err[0]


def test_bad_keyword_arguments_are_blamed_on_the_argument(hand_bars):
    from backtester.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^argument n_jobs: expected a non-zero integer"):
        backtester.run(config("close > 105"), bars=hand_bars, n_jobs=0, write=False)


def test_backend_reason_says_where_the_backend_was_chosen(tmp_path, monkeypatch, capsys,
                                                          hand_bars):
    result = backtester.run(config("close > 105"), bars=hand_bars, write=False)
    assert result.timing["backend_reason"] == "configured"
    result = backtester.run(config("close > 105"), bars=hand_bars, write=False,
                            backend="threading", n_jobs=2)
    assert result.timing["backend_reason"] == "argument"
    hand_case(tmp_path)
    status, _, err = run_cli(monkeypatch, capsys, tmp_path, "run", "c.yaml", "--backend",
                             "threading", "--n-jobs", "2", "--no-compare-sequential")
    assert status == 0, err
    timing = json.loads((tmp_path / "out" / "timing.json").read_text())
    assert timing["backend_reason"] == "command line"


def test_progress_clock_starts_when_the_parallel_run_does(hand_bars):
    from backtester.cli import _Progress

    events = []

    class Recorder:
        def start(self):
            events.append("start")

        def __call__(self, result, total):
            events.append("result")

    backtester.run({**config("close > 105"), "execution": {
        "backend": "threading", "n_jobs": 2, "compare_sequential": True}},
        bars=hand_bars, write=False, progress=Recorder())
    assert events == ["start", "result", "result"]
    bar = _Progress()
    assert bar.began is None
    bar.start()
    assert bar.began is not None


def test_timing_verdict_explains_a_parallel_run_slower_than_sequential():
    from backtester.api import timing_verdict
    from backtester.execution import ExecutionReport

    seq = ExecutionReport("sequential", 1, (), 0.015, 0.0, 0.015, 1)
    par = ExecutionReport("threading", 2, (), 0.030, 0.002, 0.031, 8)
    verdict = timing_verdict(seq, par, 0.015 / 0.032)
    assert verdict.startswith("parallel slower (0.47x): the sequential run took only 0.015 s")
    for words in ("worker start-up 0.002 s", "8 task dispatches", "every 10 ms",
                  "`backtester synth`", "`backtester scale`", "`make bench`"):
        assert words in verdict
    short = timing_verdict(seq, ExecutionReport("threading", 2, (), 0.010, 0.0, 0.02, 2), 1.5)
    assert short.startswith("speedup 1.50x on a sequential run of only 0.015 s")
    seq = ExecutionReport("sequential", 1, (), 4.0, 0.0, 4.0, 1)
    par = ExecutionReport("threading", 2, (), 2.1, 0.1, 4.2, 8)
    assert timing_verdict(seq, par, 4.0 / 2.2) == \
        "parallel 1.82x faster than sequential with 2 workers (efficiency 0.91) on a 4.00 s " \
        "sequential run"


def test_readme_config_is_the_shipped_rsi_config():
    import re

    import yaml

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = re.search(r"## A config\s+```yaml\n(.*?)```", readme, re.S).group(1)
    shipped = yaml.safe_load((root / "configs" / "rsi.yaml").read_text())
    assert yaml.safe_load(block) == shipped
