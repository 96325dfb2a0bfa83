"""The columnar merge and the Arrow writers: what the result frames hold and how files read."""

from __future__ import annotations

import io
import math
import threading
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import backtester
from backtester import cli, report
from backtester.bars import from_frame

TZ = "America/New_York"


def frame_written_by_pandas_and_by_us(frame: pd.DataFrame, tmp_path) -> tuple[str, str]:
    ours = tmp_path / "ours.csv"
    report.write_csv(pa.Table.from_pandas(frame, preserve_index=False), ours)
    return frame.to_csv(index=False), ours.read_text(encoding="utf-8")


def test_csv_matches_pandas_text_for_times_flags_gaps_and_whole_floats(tmp_path):
    frame = pd.DataFrame({
        "timestamp": pd.DatetimeIndex(["2024-01-02 09:31", "2024-07-01 15:59"]).tz_localize(TZ),
        "naive": pd.DatetimeIndex(["2024-01-02 09:31", None]),
        "symbol": ["SYNA", "SYNB"], "close": [93.65, np.nan], "mfe": [0.0, -0.0],
        "bars_held": [1, 60], "both_touched": [True, False], "big": [1e22, 100.0],
        "lowest(low,30)": [14284.433333333332, 0.1],
    })
    expected, ours = frame_written_by_pandas_and_by_us(frame, tmp_path)
    assert ours == expected


def test_csv_times_keep_the_fraction_digits_pandas_would(tmp_path):
    frame = pd.DataFrame({"t": pd.DatetimeIndex(
        ["2024-03-10 01:59:59.5", "2024-03-10 03:00:00"]).tz_localize(TZ)})
    expected, ours = frame_written_by_pandas_and_by_us(frame, tmp_path)
    assert ours == expected


def test_csv_quotes_text_holding_commas_or_quotes_and_reads_back(tmp_path):
    frame = pd.DataFrame({"symbol": ["A,B", 'say "hi"', "plain"], "close": [1.5, 2.0, 3.25]})
    _, ours = frame_written_by_pandas_and_by_us(frame, tmp_path)
    back = pd.read_csv(io.StringIO(ours))
    assert back["symbol"].tolist() == frame["symbol"].tolist()
    assert back["close"].tolist() == frame["close"].tolist()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=1,
                max_size=40))
def test_csv_floats_are_written_as_python_repr_and_read_back_bit_identical(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("floats") / "f.csv"
    frame = pd.DataFrame({"row": np.arange(len(values)),
                          "x": np.array(values, dtype=np.float64)})
    report.write_csv(pa.Table.from_pandas(frame, preserve_index=False), path)
    back = pd.read_csv(path, dtype={"x": np.float64})
    np.testing.assert_array_equal(back["x"].to_numpy(), frame["x"].to_numpy())
    for line, value in zip(path.read_text().splitlines()[1:], values):
        assert line.split(",")[1] == ("" if math.isnan(value) else repr(value))


def busy_bars():
    times = pd.date_range("2024-01-02 09:30", periods=390, freq="min", tz=TZ)
    rng = np.random.default_rng(4)
    frames = []
    for symbol in ("SYNB", "SYNA", "SYNC"):
        close = 100 + np.cumsum(rng.normal(0, 0.05, len(times)))
        frames.append(pd.DataFrame({"timestamp": times, "symbol": symbol, "open": close,
                                    "high": close + 0.05, "low": close - 0.05, "close": close,
                                    "volume": 1000}))
    return from_frame(pd.concat(frames, ignore_index=True), timezone=TZ)


def busy_config(tmp_path):
    return {"name": "busy", "data": {"path": "<frame>"},
            "alerts": [
                {"name": "up", "when": "close > prev(close, 1)", "forward": [5],
                 "trade": {"max_bars": 3, "overlap": "allow"}},
                {"name": "down", "when": "close < prev(close, 1) and rsi(14) < 60",
                 "forward": [5, 15], "trade": {"max_bars": 5}}],
            "schedule": {"cluster_by": {"bars": 97}}, "execution": {"backend": "sequential"},
            "output": {"dir": str(tmp_path / "out")}}


def test_merged_frames_hold_no_python_object_columns(tmp_path):
    result = backtester.run(busy_config(tmp_path), bars=busy_bars(), write=False)
    for frame in (result.alerts, result.forward, result.trades):
        assert len(frame)
        assert "object" not in {str(dtype) for dtype in frame.dtypes}, frame.dtypes
    assert str(result.alerts["symbol"].dtype) == "str"
    keys = result.alerts[["timestamp", "symbol"]]
    assert keys.equals(keys.sort_values(["timestamp", "symbol"], kind="mergesort"))
    # `up` has no 15-bar horizon: its rows are NaN/NA there, not objects.
    up = result.forward[result.forward["alert"] == "up"]
    assert up["ret_15"].isna().all() and up["complete_15"].isna().all()


def test_written_csv_and_parquet_read_back_as_the_result(tmp_path):
    result = backtester.run(busy_config(tmp_path), bars=busy_bars())
    for name, frame in (("alerts", result.alerts), ("trades", result.trades)):
        parquet = pd.read_parquet(result.output_dir / f"{name}.parquet")
        pd.testing.assert_frame_equal(parquet, frame, check_dtype=False)
        csv = pd.read_csv(result.output_dir / f"{name}.csv")
        assert csv.columns.tolist() == frame.columns.tolist()
        for column in frame.columns:
            if frame[column].dtype.kind == "f":
                np.testing.assert_array_equal(csv[column].to_numpy(), frame[column].to_numpy())


def test_a_long_phase_is_announced_on_stderr_and_a_short_one_is_not(monkeypatch):
    stream = io.StringIO()
    progress = cli._Progress(stream)
    monkeypatch.setattr(cli, "NOTICE_SECONDS", 60.0)
    with progress.phase("writing", "3 alerts"):
        pass
    assert stream.getvalue() == ""
    monkeypatch.setattr(cli, "NOTICE_SECONDS", 0.0)
    announced = threading.Event()
    with progress.phase("statistics", "283,800 alerts, 283,795 trades"):
        deadline = time.monotonic() + 30
        while not stream.getvalue() and time.monotonic() < deadline:
            announced.wait(0.01)
    assert stream.getvalue() == "backtester: statistics (283,800 alerts, 283,795 trades)...\n"


@pytest.mark.parametrize("rows", [0])
def test_an_empty_frame_still_gets_its_header(tmp_path, rows):
    report.write_frame(pd.DataFrame(), tmp_path, "alerts", report.ALERT_COLUMNS)
    assert (tmp_path / "alerts.csv").read_text() == ",".join(report.ALERT_COLUMNS) + "\n"
    assert pd.read_parquet(tmp_path / "alerts.parquet").columns.tolist() == report.ALERT_COLUMNS
