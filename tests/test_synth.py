"""Synthetic bars: determinism, calendar fidelity, OHLC consistency and the shipped sample."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib

from backtester import bars, sessions, synth

NEW_YORK = "America/New_York"
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "bars_1min.parquet"


@pytest.fixture(scope="module")
def july() -> pd.DataFrame:
    return synth.generate(3, "2024-07-01", "2024-07-12")


def test_symbol_names_are_fictitious_and_stable():
    assert synth.symbol_names(3) == ["SYNA", "SYNB", "SYNC"]
    many = synth.symbol_names(30)
    assert many[:26] == synth.symbol_names(26)
    assert many[25:28] == ["SYNZ", "SYN0027", "SYN0028"]
    assert len(set(many)) == 30


def test_same_seed_gives_the_identical_frame(july):
    again = synth.generate(3, "2024-07-01", "2024-07-12")
    pd.testing.assert_frame_equal(july, again)
    other_seed = synth.generate(3, "2024-07-01", "2024-07-12", seed=8)
    assert not np.array_equal(other_seed["close"].to_numpy(), july["close"].to_numpy())


def test_a_symbol_does_not_depend_on_the_others_generated(july):
    alone = synth.generate(["SYNB"], "2024-07-01", "2024-07-12")
    together = july[july["symbol"] == "SYNB"].reset_index(drop=True)
    columns = ["timestamp", "open", "high", "low", "close", "volume"]
    pd.testing.assert_frame_equal(alone[columns], together[columns])


def test_frame_has_the_promised_columns_and_types(july):
    assert list(july.columns) == ["timestamp", "symbol", "open", "high", "low", "close", "volume"]
    assert str(july["timestamp"].dt.tz) == NEW_YORK
    assert july["volume"].dtype == np.int64
    assert all(july[c].dtype == np.float64 for c in ("open", "high", "low", "close"))
    cents = july[["open", "high", "low", "close"]].to_numpy() * 100
    np.testing.assert_allclose(cents, np.round(cents), atol=1e-6)


def test_bars_lie_only_in_calendar_sessions_and_fill_them(july):
    table = sessions.from_calendar("XNYS", datetime.date(2024, 7, 1),
                                   datetime.date(2024, 7, 12), NEW_YORK)
    stamps = pd.DatetimeIndex(july["timestamp"]).as_unit("ns").asi8
    located = table.locate(stamps)
    assert (located >= 0).all()
    minutes = (table.close_ns - table.open_ns) // synth.BAR_NS
    per_session = np.bincount(located, minlength=len(table))
    np.testing.assert_array_equal(per_session, 3 * minutes)
    days = set(july["timestamp"].dt.date.astype(str))
    assert "2024-07-04" not in days


def test_half_day_closes_at_13_00(july):
    half_day = july[july["timestamp"].dt.date == datetime.date(2024, 7, 3)]
    assert half_day["timestamp"].max() == pd.Timestamp("2024-07-03 12:59", tz=NEW_YORK)
    assert len(half_day) == 3 * 210


def test_high_and_low_bound_every_bar(july):
    body_top = np.maximum(july["open"], july["close"])
    body_bottom = np.minimum(july["open"], july["close"])
    assert (july["high"] >= body_top).all() and (july["low"] <= body_bottom).all()
    assert (july["low"] > 0).all() and (july["volume"] >= 0).all()


@pytest.fixture(scope="module")
def sample_frame() -> pd.DataFrame:
    return pd.read_parquet(SAMPLE)


def test_sample_has_flat_halts_and_oversold_opens(sample_frame):
    flat = (
        (sample_frame["open"] == sample_frame["high"])
        & (sample_frame["high"] == sample_frame["low"])
        & (sample_frame["low"] == sample_frame["close"])
        & (sample_frame["volume"] == 0)
    )
    assert flat.sum() >= 5 * 3 * 5  # three halts of at least 5 bars per symbol
    oversold_opens = 0
    for _, rows in sample_frame.groupby("symbol", observed=True):
        rsi = talib.RSI(rows["close"].to_numpy(), 14)
        at_open = ((rows["timestamp"].dt.hour == 9) & (rows["timestamp"].dt.minute == 30))
        oversold_opens += int((rsi[at_open.to_numpy()] < 30).sum())
    assert oversold_opens > 0


def test_volume_is_u_shaped_over_the_day(sample_frame):
    by_hour = sample_frame.groupby(sample_frame["timestamp"].dt.hour)["volume"].mean()
    assert by_hour[9] > 2 * by_hour[12] and by_hour[15] > 1.5 * by_hour[12]


def test_sample_file_is_what_generate_writes(tmp_path, sample_frame):
    synth.write(synth.generate(), tmp_path / "again.parquet")
    # Same content; the bytes also match under one pyarrow version (its name is in the footer).
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "again.parquet"), sample_frame)


def test_sample_file_loads_cleanly():
    barset = bars.load_bars(SAMPLE, timezone=NEW_YORK)
    assert barset.symbols == ("SYNA", "SYNB", "SYNC", "SYND", "SYNE")
    assert barset.bar_ns == synth.BAR_NS
    dates = barset.sessions.dates.astype(str)
    assert dates[0] == "2024-01-02" and dates[-1] == "2024-07-31"
    assert "2024-07-04" not in dates and "2024-07-03" in dates
    assert barset.n_bars == 5 * int(
        ((barset.sessions.close_ns - barset.sessions.open_ns) // synth.BAR_NS).sum())


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path, july):
    synth.write(july, tmp_path / "bars.parquet")
    synth.write(july, tmp_path / "bars.parquet")  # overwrite in place
    synth.write(july, tmp_path / "folder")
    synth.write(july, tmp_path / "folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.parquet", "folder"]
    with pytest.raises(ValueError, match="cannot write '.xlsx'"):
        synth.write(july, tmp_path / "bars.xlsx")
