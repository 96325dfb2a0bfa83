"""Every case of the bad-input corpus (tests/bad_inputs.py) through the command line: exit 2,
exactly its one expected line on stderr, no traceback, nothing created or changed; a few of
them again in a real subprocess, where stdout, stderr and the exit status are the process's."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from backtester import api
from backtester.cli import main
from backtester.errors import BacktestError

sys.path.insert(0, str(Path(__file__).parent))
from bad_inputs import API_CASES, BARS, CASES, Case, config_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def lay_out(case: Case, folder: Path) -> None:
    (folder / "bars.csv").write_text(BARS, encoding="utf-8")
    (folder / "c.yaml").write_text(case.config, encoding="utf-8")
    for name, content in case.files.items():
        target = folder / name
        if callable(content):
            content(str(target))
        elif isinstance(content, bytes):
            target.write_bytes(content)
        elif isinstance(content, str):
            target.write_text(content, encoding="utf-8")


def snapshot(folder: Path) -> dict[str, object]:
    """Every path under `folder` (hidden ones too) with a regular file's bytes; a folder that
    cannot be listed counts by its name alone."""
    seen: dict[str, object] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            mode = path.lstat().st_mode
            seen[str(path.relative_to(folder))] = path.read_bytes() if stat.S_ISREG(mode) else mode
    return seen


def restore_permissions(folder: Path) -> None:
    for root, dirs, _ in os.walk(folder):
        for name in dirs:
            Path(root, name).chmod(0o755)
    for path in folder.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)


def run_in_process(case: Case, capsys) -> tuple[int, str]:
    try:
        status = main(list(case.args))
    except SystemExit as exc:   # what argparse did before its errors became one line
        status = exc.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "case"
    folder.mkdir()
    lay_out(case, folder)
    monkeypatch.chdir(folder)
    before = snapshot(folder)
    try:
        status, err = run_in_process(case, capsys)
        after = snapshot(folder)
    finally:
        restore_permissions(folder)
    assert "Traceback" not in err
    assert err.splitlines() == [case.expect], err
    assert status == 2
    assert after == before


@pytest.mark.parametrize("arguments, expect", [c[1:] for c in API_CASES],
                         ids=[c[0] for c in API_CASES])
def test_a_bad_api_argument_raises_one_line_and_changes_nothing(arguments, expect, tmp_path,
                                                                 monkeypatch):
    lay_out(Case("api", expect, config_text()), tmp_path)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    arguments = {"config": "c.yaml", **arguments}
    with pytest.raises(BacktestError) as caught:
        api.run(arguments.pop("config"), **arguments)
    assert str(caught.value) == expect
    assert snapshot(tmp_path) == before


def test_the_corpus_has_a_hundred_cases_with_unique_ids_and_messages():
    assert len(CASES) >= 100
    assert len({c.id for c in CASES} | {c[0] for c in API_CASES}) == len(CASES) + len(API_CASES)
    assert all(c.expect and "\n" not in c.expect for c in CASES)


SPOT_CHECKS = ["yaml_unclosed_flow", "alert_unknown_key", "rule_hash_in_quoted_rule",
               "data_gzip_named_csv", "data_first_line_64k", "flag_n_jobs_text"]


@pytest.mark.parametrize("case_id", SPOT_CHECKS)
def test_bad_input_in_a_real_process_prints_only_its_line(case_id, tmp_path):
    case = next(c for c in CASES if c.id == case_id)
    lay_out(case, tmp_path)
    before = snapshot(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "backtester", *case.args], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=300)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", case.expect + "\n")
    assert snapshot(tmp_path) == before
