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
    for key in ("speedup", "efficiency", "cluster_seconds", "parallel", "sequential"):
        assert key in timing
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
    assert proc.stderr.splitlines()[0] == \
        "c.yaml: alerts[0].when: unknown function 'rsii' at column 1 (did you mean 'rsi'?)"
    assert "Traceback" not in proc.stderr
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
