"""The scaling report: Amdahl fit, Markdown and SVG rendering, and `scale()` on a small set."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest

import backtester
from backtester import synth
from backtester.bars import from_frame
from backtester.errors import ConfigError
from backtester.scaling import (
    ScalingPoint,
    ScalingReport,
    amdahl_fit,
    amdahl_speedup,
    parse_backends,
    parse_jobs,
    render_markdown,
    render_svg,
    run_scale_command,
    scale,
)

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.2, 0.5, 1.0])
def test_amdahl_fit_recovers_a_known_serial_fraction(fraction):
    n = [1, 2, 4, 8, 16]
    assert amdahl_fit(n, amdahl_speedup(fraction, n)) == pytest.approx(fraction, abs=1e-6)


def test_amdahl_fit_with_noise_and_edge_cases():
    rng = np.random.default_rng(3)
    n = np.array([2, 4, 8, 16, 32])
    noisy = amdahl_speedup(0.1, n) * (1 + rng.normal(0, 0.01, n.size))
    assert amdahl_fit(n, noisy) == pytest.approx(0.1, abs=0.01)
    assert amdahl_fit([1, 1], [1.0, 0.98]) is None          # no information about s
    assert amdahl_fit([2], [2.3]) == 0.0                    # super-linear: clamped to 0
    assert amdahl_fit([2], [0.5]) == 1.0                    # slower than serial: clamped to 1
    assert amdahl_fit([2], [1.5]) == pytest.approx(1 / 3)    # 1 / (s + (1 - s) / 2) = 1.5
    with pytest.raises(ValueError):
        amdahl_fit([1, 2], [1.0])


def report_of(speedups: dict[str, list[tuple[int, float]]]) -> ScalingReport:
    seq = ScalingPoint("sequential", 1, wall_seconds=10.0, startup_seconds=0.0, cpu_seconds=10.0,
                       n_tasks=40, identical=True, bars=1_000_000)
    points = tuple(
        ScalingPoint(backend, n, wall_seconds=10.0 / s - 0.1, startup_seconds=0.1,
                     cpu_seconds=10.0, n_tasks=8, identical=True, speedup=s,
                     speedup_steady=10.0 / (10.0 / s - 0.1), bars=1_000_000)
        for backend, pairs in speedups.items() for n, s in pairs)
    return ScalingReport(name="t<&>", bars=1_000_000, symbols=5, clusters=40, layout="count",
                         layout_reason="test", sequential=seq, points=points)


def test_render_svg_is_valid_xml_with_one_polyline_per_backend():
    report = report_of({"threading": [(1, 0.98), (2, 1.9), (4, 3.4)],
                        "loky": [(1, 0.95), (2, 1.8), (4, 3.1)],
                        "multiprocessing": [(2, 1.7)]})
    root = ET.fromstring(render_svg(report))
    assert root.tag == f"{SVG}svg"
    polylines = root.findall(f".//{SVG}polyline")
    assert sorted(p.get("data-backend") for p in polylines) == \
        ["loky", "multiprocessing", "threading"]
    for line in polylines:
        coords = [tuple(map(float, xy.split(","))) for xy in line.get("points").split()]
        assert coords and all(np.isfinite(c).all() for c in coords)
    fits = root.findall(f".//{SVG}path[@class='amdahl']")
    assert len(fits) == 3
    assert root.findall(f".//{SVG}path[@class='ideal']")


def test_render_svg_with_a_single_setting_and_markdown_table():
    report = report_of({"threading": [(1, 1.0)]})
    ET.fromstring(render_svg(report))     # no n_jobs > 1: no fit, still a valid chart
    text = render_markdown(report_of({"threading": [(2, 1.9)], "loky": [(2, 1.8)]}))
    assert "| threading | 2 | 8 |" in text and "| loky | 2 | 8 |" in text
    assert "| sequential | 1 | 40 |" in text
    assert "1.90x" in text and "identical results on every setting: **true**" in text
    assert "| threading | 0.053 |" in text   # 1.9 = 1 / (s + (1 - s) / 2) -> s = 1/19


def test_parse_command_arguments():
    assert parse_backends("threading, loky,threading") == ["threading", "loky"]
    assert parse_jobs("1,2,4,-1") == [1, 2, 4, -1]
    with pytest.raises(ConfigError, match="--backends"):
        parse_backends("threads")
    with pytest.raises(ConfigError, match="--jobs"):
        parse_jobs("1,two")
    with pytest.raises(ConfigError, match="--jobs"):
        parse_jobs("0")


@pytest.fixture(scope="module")
def small_bars():
    frame = synth.generate(2, "2024-03-01", "2024-03-29", seed=5)
    return from_frame(frame, timezone="America/New_York")


def small_config(tmp_path=None):
    return {"name": "scale-test", "data": {"path": "<frame>"},
            "alerts": [{"name": "dip", "when": "crosses_below(rsi(14), 35) and close < vwap",
                        "cooldown": "10min", "forward": [5],
                        "trade": {"side": "long", "take_profit": "0.5%", "stop_loss": "0.3%",
                                  "max_bars": 30}},
                       {"name": "trend", "when": "crosses_above(ema(9), sma(30))"}],
            "schedule": {"cluster_by": "week"},
            "execution": {"backend": "sequential"},
            "output": {"dir": str(tmp_path / "results") if tmp_path else "results/scale-test"}}


def test_scale_reports_identical_results_for_sequential_and_threading(small_bars):
    report = scale(small_config(), ["sequential", "threading"], [1, 2], bars=small_bars)
    assert report.bars == small_bars.n_bars and report.clusters >= 8
    settings = [(p.backend, p.n_jobs) for p in report.points]
    assert settings == [("sequential", 1), ("threading", 1), ("threading", 2)]
    assert report.identical and all(p.identical for p in report.points)
    for p in report.points:
        assert p.wall_seconds > 0 and p.speedup > 0 and p.speedup_steady > 0
    assert report.for_backend("threading")[1].n_tasks <= report.clusters


def test_run_scale_command_writes_the_report_atomically(small_bars, tmp_path, monkeypatch,
                                                          capsys):
    import backtester.scaling as scaling

    real = scaling.scale
    monkeypatch.setattr(scaling, "scale", lambda *a, **k: real(*a, bars=small_bars, **k))
    out = tmp_path / "scaling"
    status = run_scale_command(small_config(tmp_path), "threading", "1,2", str(out))
    assert status == 0
    assert sorted(p.name for p in out.iterdir()) == [".backtester-results.json", "scaling.json",
                                                     "scaling.md", "scaling.svg"]
    ET.parse(out / "scaling.svg")
    printed = capsys.readouterr().out
    assert "| threading | 2 |" in printed and "scaling.md" in printed
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp folder left


@pytest.mark.parametrize(("symbols", "alert", "expected"), [
    (4, "rsi(14) < 30", "8 clusters (4 symbols x 2, ~8,190 bars each) for 2 workers: at least the "
     "8 (4 per worker) that balance the load, each >= 7740 bars"),
    (4, "close < ema(2000)", "4 clusters (4 symbols x 1, ~16,380 bars each) for 2 workers: fewer "
     "than the 8 (4 per worker) that would balance the load; no symbol is split, as its clusters "
     "would be under"),
    (1, "rsi(14) < 30", "2 clusters (1 symbol x 2, ~8,190 bars each) for 2 workers: fewer "
     "than the 8 (4 per worker) that would balance the load, because ~16,380 bars per symbol "
     "allow at most 2 clusters of >= 7740 bars"),
])
def test_auto_layout_says_what_it_made_and_why(symbols, alert, expected):
    frame = synth.generate(synth.symbol_names(symbols), "2024-03-01", "2024-04-30", seed=5)
    prep = backtester.prepare({"name": "auto", "data": {"path": "<frame>"},
                               "alerts": [{"name": "a", "when": alert}],
                               "schedule": {"cluster_by": "auto"},
                               "execution": {"backend": "loky", "n_jobs": 2}},
                              bars=from_frame(frame, timezone="America/New_York"))
    assert prep.layout.reason.startswith(expected), prep.layout.reason
    assert prep.layout.reason.startswith(f"{len(prep.layout.clusters)} clusters")
