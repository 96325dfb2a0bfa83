"""Custom indicators: registered in the user's code, usable in rules on every backend."""

import numpy as np
import pandas as pd
import pytest
from numba import njit

import backtester
from backtester import indicators
from backtester.bars import from_frame
from backtester.indicators import Indicator, Param, register


@njit(cache=False, nogil=True)
def range_mean_1d_nb(high, low, period):
    """Mean of `high - low` over the last `period` bars; NaN before the first full window."""
    out = np.full(len(high), np.nan)
    for i in range(period - 1, len(high)):
        out[i] = (high[i - period + 1:i + 1] - low[i - period + 1:i + 1]).mean()
    return out


def range_mean(high, low, period):
    return range_mean_1d_nb(high, low, int(period))


@pytest.fixture
def range_mean_registered():
    """`range_mean(period)` registered as a user's script would, and removed afterwards."""
    register(Indicator(name="range_mean", kernel=range_mean, inputs=("high", "low"),
                       params=(Param("period", int, 2, 1),), lookback=lambda period: period - 1,
                       warmup=lambda period: period - 1, stateless_window=True,
                       summary="Mean bar range."))
    yield
    indicators.REGISTRY.pop("range_mean")
    indicators._INSTALLED_NAMES.discard("range_mean")


def day_bars(day: str, wide: int) -> pd.DataFrame:
    """390 one-minute XNYS bars with a range of 1.0, except 4.0 at bar `wide`."""
    stamps = pd.date_range(f"{day} 09:30", periods=390, freq="1min", tz="America/New_York")
    spread = np.ones(390)
    spread[wide] = 4.0
    return pd.DataFrame({"timestamp": stamps, "symbol": "HAND", "open": 100.0,
                         "high": 100.0 + spread / 2, "low": 100.0 - spread / 2, "close": 100.0,
                         "volume": 100.0})


BARS = from_frame(pd.concat([day_bars("2024-03-04", 10), day_bars("2024-03-05", 200)]),
                  timezone="America/New_York")
CONFIG = {"name": "custom", "data": {"path": "<frame>"},
          "alerts": [{"name": "wide", "when": "range_mean(2) > 2"}],
          "schedule": {"cluster_by": "day"}}
# Ranges 1, 4, 1 give two-bar means 2.5 at the wide bar and the one after: 09:40 and 09:41 on
# the first day, bar 200 (12:50) and 12:51 on the second.
EXPECTED = ["2024-03-04 09:40", "2024-03-04 09:41", "2024-03-05 12:50", "2024-03-05 12:51"]


def fired(result) -> list[str]:
    return [t.strftime("%Y-%m-%d %H:%M") for t in result.alerts["timestamp"]]


@pytest.mark.parametrize("backend", ["sequential", "threading", "loky", "multiprocessing"])
def test_indicator_registered_in_the_script_runs_on_every_backend(range_mean_registered,
                                                                  backend):
    result = backtester.run(CONFIG, backend=backend, n_jobs=2, bars=BARS, write=False)
    assert fired(result) == EXPECTED
    assert result.alerts["range_mean(2)"].tolist() == [2.5] * 4


def test_indicator_registered_in_the_script_reaches_dask_workers(range_mean_registered):
    pytest.importorskip("distributed")
    result = backtester.run(CONFIG, backend="dask", n_jobs=2, bars=BARS, write=False)
    assert fired(result) == EXPECTED


def test_plan_carries_only_the_custom_indicators_it_uses(range_mean_registered):
    from backtester.config import load_config
    from backtester.plan import compile_plan

    assert compile_plan(load_config({**CONFIG, "alerts": [{"name": "a", "when": "rsi(14) < 30"}]}
                                    )).custom_indicators == b""
    payload = compile_plan(load_config(CONFIG)).custom_indicators
    import pickle

    (shipped,) = pickle.loads(payload)
    assert shipped.name == "range_mean" and shipped.lookback(period=3) == 2


def test_install_registers_a_shipped_indicator_and_refuses_a_built_in(range_mean_registered,
                                                                      monkeypatch):
    payload = indicators.ship(indicators.custom(["range_mean", "rsi"]))
    indicators.REGISTRY.pop("range_mean")
    monkeypatch.setattr(indicators, "_INSTALLED", b"")   # as in a fresh worker process
    indicators.install(payload)
    high, low = np.array([101.0, 102.0, 101.0]), np.array([99.0, 98.0, 99.0])
    # ranges 2, 4, 2 -> two-bar means NaN, 3, 3
    np.testing.assert_array_equal(indicators.compute("range_mean", high, low, period=2),
                                  [np.nan, 3.0, 3.0])
    fake_rsi = Indicator(name="rsi", kernel=range_mean, inputs=("high", "low"), params=(),
                         lookback=lambda: 0, warmup=lambda: 0)
    payload = indicators.ship([fake_rsi])
    monkeypatch.setattr(indicators, "_INSTALLED", b"")
    with pytest.raises(ValueError, match="'rsi' is built in"):
        indicators.install(payload)


def test_registering_a_name_twice_is_an_error(range_mean_registered):
    with pytest.raises(ValueError, match="'range_mean' is already registered"):
        register(indicators.get("range_mean"))


def test_documented_example_runs_as_a_script_on_loky(monkeypatch, tmp_path):
    import re
    import runpy
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "indicators.md").read_text()
    script = tmp_path / "wide.py"
    script.write_text(re.search(r"## Custom indicators.*?```python\n(.*?)```", text, re.S).group(1))
    monkeypatch.chdir(root)
    try:
        namespace = runpy.run_path(str(script), run_name="__main__")
    finally:
        indicators.REGISTRY.pop("range_mean", None)
    alerts = namespace["result"].alerts
    assert len(alerts) > 0 and (alerts["range_mean(20)"] > 0.25).all()
