"""The front door: defaults a first run meets, command-line flags, and the documented examples."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from backtester.cli import main
from backtester.config import load_config
from backtester.trades import _commission_nb, parse_trade

ROOT = Path(__file__).resolve().parents[1]


def write_case(tmp_path: Path, execution: str = "") -> Path:
    """60 one-minute XNYS bars on 2024-03-04 with a close above 100.5 every 10th bar."""
    closes = np.full(60, 100.0)
    closes[::10] = 101.0
    stamps = pd.date_range("2024-03-04 09:30", periods=60, freq="1min", tz="America/New_York")
    opens = np.concatenate(([100.0], closes[:-1]))
    pd.DataFrame({"timestamp": stamps, "symbol": "HAND", "open": opens,
                  "high": np.maximum(opens, closes), "low": np.minimum(opens, closes),
                  "close": closes, "volume": 100.0}).to_csv(tmp_path / "bars.csv", index=False)
    path = tmp_path / "c.yaml"
    path.write_text("name: hand\ndata: {path: bars.csv}\nalerts:\n"
                    "  - {name: a, when: 'close > 100.5'}\noutput: {dir: out}\n" + execution)
    return path


def run_cli(monkeypatch, capsys, cwd, *args):
    monkeypatch.chdir(cwd)
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.err.splitlines()


def test_without_an_execution_section_the_backend_is_auto():
    cfg = load_config({"name": "x", "data": {"path": "b.csv"},
                       "alerts": [{"name": "a", "when": "close > 1"}]})
    assert cfg.execution.backend == "auto"


def test_sample_sized_run_without_execution_section_starts_no_workers(tmp_path, monkeypatch,
                                                                       capsys):
    write_case(tmp_path)
    status, err = run_cli(monkeypatch, capsys, tmp_path, "run", "c.yaml")
    assert status == 0, err
    timing = json.loads((tmp_path / "out" / "timing.json").read_text())
    assert timing["parallel"]["backend"] == "sequential"
    assert (tmp_path / "out" / "alerts.csv").read_text().count("HAND") == 6


@pytest.mark.parametrize("flag, clusters", [("{bars: 20}", 3), ("{count: 4}", 4), ("day", 1)])
def test_cluster_by_flag_takes_every_layout_the_config_takes(tmp_path, monkeypatch, capsys,
                                                             flag, clusters):
    write_case(tmp_path, "execution: {backend: sequential}\n")
    status, err = run_cli(monkeypatch, capsys, tmp_path, "run", "c.yaml", "--cluster-by", flag)
    assert status == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["clusters"] == clusters     # 60 bars: 20 + 20 + 20; four of 15; one day
    assert (tmp_path / "out" / "alerts.csv").read_text().count("HAND") == 6


@pytest.mark.parametrize("flag, words", [
    ("{bars: 0}", "--cluster-by: expected a positive integer, got 0"),
    ("{weeks: 2}", "--cluster-by: {'weeks': 2} is not a layout"),
    ("{bars: [", "--cluster-by: cannot read '{bars: [' as a layout"),
])
def test_bad_cluster_by_flag_is_one_line_naming_the_flag(tmp_path, monkeypatch, capsys, flag,
                                                         words):
    write_case(tmp_path)
    status, err = run_cli(monkeypatch, capsys, tmp_path, "run", "c.yaml", "--cluster-by", flag)
    assert status == 2 and len(err) == 1 and err[0].startswith(words), err
    assert not (tmp_path / "out").exists()


def test_address_flag_with_another_backend_is_refused(tmp_path, monkeypatch, capsys):
    write_case(tmp_path)
    status, err = run_cli(monkeypatch, capsys, tmp_path, "run", "c.yaml", "--backend", "loky",
                          "--address", "tcp://127.0.0.1:1")
    assert status == 2
    assert err == ["--address: a scheduler address needs the dask backend, not 'loky' (leave the "
                   "backend out or make it dask)"]


def test_address_flag_selects_dask_on_that_scheduler(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.chdir(tmp_path)
    from distributed import LocalCluster

    from backtester.api import prepare

    write_case(tmp_path)
    prep = prepare(tmp_path / "c.yaml", address="tcp://127.0.0.1:8786",
                   overrides_from="command line")
    assert prep.backend == "dask" and prep.config.execution.address == "tcp://127.0.0.1:8786"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        import backtester

        result = backtester.run(tmp_path / "c.yaml", address=cluster.scheduler_address,
                                write=False)
    assert result.timing["parallel"]["backend"] == "dask"
    assert len(result.alerts) == 6


def documented_trade() -> dict:
    text = (ROOT / "docs" / "trades.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
    return yaml.safe_load(block)["alerts"][0]["trade"]


def test_documented_commission_example_sizes_its_trades():
    spec = parse_trade(documented_trade(), "docs/trades.md", "trade")
    assert spec.quantity == 100
    c = spec.commission
    per_fill = _commission_nb(50.0, c.per_share, c.percent, c.minimum, spec.quantity)
    # 100 x (0.005 + 0.0001 x 50) = 1.00, at the 1.00 minimum; two fills over 100 x $50.
    assert per_fill == pytest.approx(1.0)
    assert 2 * per_fill / (50.0 * spec.quantity) == pytest.approx(0.0004)


def test_docs_cite_no_file_outside_the_repository():
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for path in texts:
        for name in re.findall(r"\b([A-Z][A-Z_]+\.md)\b", path.read_text()):
            assert (ROOT / name).exists() or (ROOT / "docs" / name).exists(), \
                f"{path.name} cites {name}, which is not in the repository"
