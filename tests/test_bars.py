"""Bar loading: round trips through every layout, and one DataError per broken rule."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtester import bars, synth
from backtester.errors import DataError

NEW_YORK = "America/New_York"
MINUTE_NS = 60_000_000_000


@pytest.fixture(scope="module")
def week() -> pd.DataFrame:
    """Two symbols, 2024-07-01..2024-07-05: includes the 07-03 half-day and the 07-04 holiday."""
    return synth.generate(["SYNA", "SYNB"], "2024-07-01", "2024-07-05")


def _small_rows() -> list[dict]:
    """Six good bars, two symbols interleaved by time (naive New York times)."""
    rows = []
    for minute in range(3):
        for symbol, price in (("AAA", 10.0), ("BBB", 20.0)):
            rows.append({
                "timestamp": f"2024-07-02 09:3{minute}:00", "symbol": symbol,
                "open": price, "high": price + 0.5, "low": price - 0.5, "close": price + 0.1,
                "volume": 100,
            })
    return rows


def _write_csv(tmp_path: Path, rows: list[dict], name: str = "bars.csv") -> Path:
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _assert_matches_frame(barset: bars.BarSet, frame: pd.DataFrame) -> None:
    assert barset.symbols == tuple(sorted(frame["symbol"].astype(str).unique()))
    assert barset.n_bars == len(frame)
    assert barset.bar_ns == MINUTE_NS
    for symbol, rows in frame.groupby("symbol", observed=True):
        got = barset.bars[symbol]
        expected_ns = pd.DatetimeIndex(rows["timestamp"]).as_unit("ns").asi8
        np.testing.assert_array_equal(got.timestamp, expected_ns)
        for column in ("open", "high", "low", "close", "volume"):
            values = getattr(got, column)
            assert values.dtype == np.float64 and values.flags.c_contiguous
            np.testing.assert_array_equal(values, rows[column].to_numpy(dtype=np.float64))
        assert got.session.dtype == np.int32
        starts = barset.sessions.open_ns[got.session]
        ends = barset.sessions.close_ns[got.session]
        assert ((starts <= got.timestamp) & (got.timestamp < ends)).all()


# Round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bars.parquet", "bars.csv", "per_symbol"])
def test_written_bars_load_back_identically(tmp_path, week, name):
    path = tmp_path / name
    synth.write(week, path)
    barset = bars.load_bars(path, timezone=NEW_YORK)
    _assert_matches_frame(barset, week)
    assert barset.sessions.dates.astype(str).tolist() == [
        "2024-07-01", "2024-07-02", "2024-07-03", "2024-07-05",
    ]
    assert all(file.rows > 0 and len(file.sha256) == 64 for file in barset.files)


def test_per_symbol_folder_names_symbols_by_file_stem(tmp_path, week):
    synth.write(week, tmp_path / "per_symbol")
    assert sorted(p.name for p in (tmp_path / "per_symbol").iterdir()) == [
        "SYNA.parquet", "SYNB.parquet",
    ]
    barset = bars.load_bars(tmp_path / "per_symbol", timezone=NEW_YORK, symbols=["SYNB"])
    assert barset.symbols == ("SYNB",)
    assert len(barset.files) == 2


def test_from_frame_matches_load_bars(tmp_path, week):
    synth.write(week, tmp_path / "bars.parquet")
    loaded = bars.load_bars(tmp_path / "bars.parquet", timezone=NEW_YORK)
    framed = bars.from_frame(week, timezone=NEW_YORK)
    _assert_matches_frame(framed, week)
    np.testing.assert_array_equal(framed.sessions.open_ns, loaded.sessions.open_ns)


def test_column_names_are_case_insensitive_and_datetime_is_a_timestamp_alias(tmp_path):
    frame = pd.DataFrame(_small_rows()).rename(columns=lambda c: c.upper())
    frame = frame.rename(columns={"TIMESTAMP": "DateTime"})
    frame.to_csv(tmp_path / "bars.csv", index=False)
    barset = bars.load_bars(tmp_path / "bars.csv", timezone=NEW_YORK)
    assert barset.symbols == ("AAA", "BBB") and barset.n_bars == 6


def test_naive_and_utc_offset_timestamps_give_the_same_instants(tmp_path):
    naive = _small_rows()
    aware = [dict(row) for row in naive]
    for row in aware:  # 09:30 New York in July is 13:30 UTC
        local = pd.Timestamp(row["timestamp"], tz=NEW_YORK)
        row["timestamp"] = local.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    from_naive = bars.load_bars(_write_csv(tmp_path, naive, "naive.csv"), timezone=NEW_YORK)
    from_aware = bars.load_bars(_write_csv(tmp_path, aware, "aware.csv"), timezone=NEW_YORK)
    for symbol in ("AAA", "BBB"):
        np.testing.assert_array_equal(from_naive.bars[symbol].timestamp,
                                      from_aware.bars[symbol].timestamp)
    first = pd.Timestamp(int(from_naive.bars["AAA"].timestamp[0]), tz="UTC")
    assert first == pd.Timestamp("2024-07-02 13:30", tz="UTC")


def test_tz_aware_parquet_in_another_zone_is_converted(tmp_path, week):
    frame = week.assign(timestamp=week["timestamp"].dt.tz_convert("Asia/Tokyo"))
    synth.write(frame, tmp_path / "tokyo.parquet")
    _assert_matches_frame(bars.load_bars(tmp_path / "tokyo.parquet", timezone=NEW_YORK), week)


def test_bar_stamp_close_shifts_stamps_back_to_the_open(tmp_path, week):
    stamped_at_close = week.assign(timestamp=week["timestamp"] + pd.Timedelta(minutes=1))
    synth.write(stamped_at_close, tmp_path / "close.parquet")
    barset = bars.load_bars(tmp_path / "close.parquet", timezone=NEW_YORK, bar_stamp="close")
    _assert_matches_frame(barset, week)


def test_close_stamped_file_read_as_open_suggests_bar_stamp_close(tmp_path, week):
    stamped_at_close = week.assign(timestamp=week["timestamp"] + pd.Timedelta(minutes=1))
    synth.write(stamped_at_close, tmp_path / "close.parquet")
    with pytest.raises(DataError, match="bar_stamp: close") as caught:
        bars.load_bars(tmp_path / "close.parquet", timezone=NEW_YORK)
    assert "outside every XNYS session" in str(caught.value)


def test_symbols_start_and_end_select_bars_and_trim_sessions(tmp_path, week):
    synth.write(week, tmp_path / "bars.parquet")
    barset = bars.load_bars(
        tmp_path / "bars.parquet", timezone=NEW_YORK, symbols=["SYNB"],
        start=datetime.date(2024, 7, 2), end=datetime.date(2024, 7, 3),
    )
    assert barset.symbols == ("SYNB",)
    assert barset.sessions.dates.astype(str).tolist() == ["2024-07-02", "2024-07-03"]
    syn_b = barset.bars["SYNB"]
    assert len(syn_b) == 390 + 210  # a full day and the half-day to 13:00
    last = pd.Timestamp(int(syn_b.timestamp[-1]), tz="UTC").tz_convert(NEW_YORK)
    assert last == pd.Timestamp("2024-07-03 12:59", tz=NEW_YORK)
    assert syn_b.session.tolist() == [0] * 390 + [1] * 210


def test_start_end_filter_works_for_csv_too(tmp_path, week):
    synth.write(week, tmp_path / "bars.csv")
    barset = bars.load_bars(tmp_path / "bars.csv", timezone=NEW_YORK,
                            start=datetime.date(2024, 7, 5))
    assert barset.sessions.dates.astype(str).tolist() == ["2024-07-05"]
    assert barset.n_bars == 2 * 390


def test_calendar_none_accepts_bars_outside_exchange_hours(tmp_path):
    rows = _small_rows()
    for row in rows:
        row["timestamp"] = row["timestamp"].replace("09:3", "20:3")
    barset = bars.load_bars(_write_csv(tmp_path, rows), timezone=NEW_YORK, calendar="none")
    assert barset.sessions.calendar == "none"
    assert len(barset.sessions) == 1 and barset.bar_ns == MINUTE_NS
    assert barset.sessions.close_ns[0] - barset.sessions.open_ns[0] == 3 * MINUTE_NS


def test_slice_returns_views_without_copies(week):
    syn_a = bars.from_frame(week, timezone=NEW_YORK).bars["SYNA"]
    part = syn_a.slice(10, 20)
    assert len(part) == 10
    assert np.shares_memory(part.close, syn_a.close)
    np.testing.assert_array_equal(part.timestamp, syn_a.timestamp[10:20])


# Validation: each rule names the file, the 1-based row and the column -------------------------


def _broken(rows: list[dict], index: int, **changes) -> list[dict]:
    rows = [dict(row) for row in rows]
    rows[index].update(changes)
    return rows


BROKEN_CASES = {
    "non-numeric": (_broken(_small_rows(), 3, open="abc"), 4, "open", "'abc' is not a number"),
    "missing close": (_broken(_small_rows(), 2, close=None), 3, "close", "must be finite"),
    "infinite high": (_broken(_small_rows(), 4, high=float("inf")), 5, "high", "must be finite"),
    "high below body": (_broken(_small_rows(), 1, high=19.0), 2, "high",
                        r"high 19 is below max\(open, close\) 20.1"),
    "low above body": (_broken(_small_rows(), 5, low=20.05), 6, "low",
                       r"low 20.05 is above min\(open, close\) 20"),
    "non-positive": (_broken(_small_rows(), 2, open=0.0, high=0.0, low=0.0, close=0.0), 3,
                     "open", "price 0 is not positive"),
    "negative volume": (_broken(_small_rows(), 3, volume=-5), 4, "volume", "volume is -5 "),
    "missing volume": (_broken(_small_rows(), 0, volume=None), 1, "volume", "volume is nan "),
    "unsorted": (_broken(_small_rows(), 4, timestamp="2024-07-02 09:30:30"), 5, "timestamp",
                 r"AAA is not after the previous bar at row 3 \(sort"),
    "duplicate": (_broken(_small_rows(), 3, timestamp="2024-07-02 09:30:00"), 4, "timestamp",
                  "duplicate timestamp 2024-07-02 09:30:00-04:00 for BBB \\(also at row 2\\)"),
    "outside session": (_broken(_small_rows(), 0, timestamp="2024-07-02 08:00:00"), 1,
                        "timestamp", "outside every XNYS session .*use calendar: none"),
    "unparseable time": (_broken(_small_rows(), 2, timestamp="yesterday"), 3, "timestamp",
                         "cannot parse timestamp 'yesterday'"),
    "missing symbol": (_broken(_small_rows(), 1, symbol=None), 2, "symbol", "missing symbol"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_CASES))
def test_each_broken_rule_names_file_row_and_column(tmp_path, case):
    rows, row, column, rule = BROKEN_CASES[case]
    path = _write_csv(tmp_path, rows)
    with pytest.raises(DataError, match=rule) as caught:
        bars.load_bars(path, timezone=NEW_YORK)
    error = caught.value
    assert (error.path, error.row, error.column) == (str(path), row, column)
    assert str(error).startswith(f"{path}: row {row}, column '{column}': ")


@pytest.mark.parametrize("case", ["high below body", "duplicate", "non-numeric"])
def test_broken_rows_in_a_frame_are_reported_by_position(case):
    rows, row, column, rule = BROKEN_CASES[case]
    with pytest.raises(DataError, match=rule) as caught:
        bars.from_frame(pd.DataFrame(rows), timezone=NEW_YORK, source="my_frame")
    assert (caught.value.path, caught.value.row, caught.value.column) == ("my_frame", row, column)


def test_earliest_broken_row_is_reported_first(tmp_path):
    rows = _broken(_broken(_small_rows(), 4, volume=-1), 2, high=1.0)
    with pytest.raises(DataError) as caught:
        bars.load_bars(_write_csv(tmp_path, rows), timezone=NEW_YORK)
    assert (caught.value.row, caught.value.column) == (3, "high")


def test_row_numbers_count_file_rows_when_symbols_are_selected(tmp_path):
    rows = _broken(_small_rows(), 5, low=25.0)  # the third BBB bar, sixth row of the file
    frame = pd.DataFrame(rows)
    for name in ("bars.csv", "bars.parquet"):
        path = tmp_path / name
        frame.to_csv(path, index=False) if name.endswith("csv") else frame.to_parquet(path)
        with pytest.raises(DataError) as caught:
            bars.load_bars(path, timezone=NEW_YORK, symbols=["BBB"])
        assert (caught.value.row, caught.value.column) == (6, "low"), name
        bars.load_bars(path, timezone=NEW_YORK, symbols=["AAA"])  # AAA alone is clean


def test_a_bad_value_deep_in_a_csv_is_still_located(tmp_path, week):
    frame = week.copy()
    frame["open"] = frame["open"].astype(object)
    frame.loc[len(frame) - 2, "open"] = "n/a?"
    path = tmp_path / "deep.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="'n/a\\?' is not a number") as caught:
        bars.load_bars(path, timezone=NEW_YORK)
    assert (caught.value.row, caught.value.column) == (len(frame) - 1, "open")


def test_missing_required_column_is_named(tmp_path):
    path = tmp_path / "bars.csv"
    pd.DataFrame(_small_rows()).drop(columns="volume").to_csv(path, index=False)
    with pytest.raises(DataError, match="missing required column.*volume") as caught:
        bars.load_bars(path, timezone=NEW_YORK)
    assert caught.value.column == "volume"


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [("2024-11-03 01:30:00", "is ambiguous"), ("2024-03-10 02:30:00", "does not exist")],
)
def test_dst_ambiguous_or_missing_naive_time_is_named(tmp_path, timestamp, reason):
    rows = _small_rows()[:1]
    rows[0]["timestamp"] = timestamp
    path = _write_csv(tmp_path, rows)
    with pytest.raises(DataError, match=reason) as caught:
        bars.load_bars(path, timezone=NEW_YORK, calendar="none")
    assert (caught.value.row, caught.value.column) == (1, "timestamp")


def test_unknown_suffix_missing_file_and_corrupt_parquet(tmp_path):
    text = tmp_path / "bars.txt"
    text.write_text("timestamp,open\n")
    with pytest.raises(DataError, match="unknown file type '.txt'"):
        bars.load_bars(text, timezone=NEW_YORK)
    with pytest.raises(DataError, match="no such file"):
        bars.load_bars(tmp_path / "absent.parquet", timezone=NEW_YORK)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read Parquet file") as caught:
        bars.load_bars(corrupt, timezone=NEW_YORK)
    assert caught.value.path == str(corrupt)


def test_requested_symbol_not_in_source_lists_the_available_ones(tmp_path):
    path = _write_csv(tmp_path, _small_rows())
    with pytest.raises(DataError, match=r"symbol\(s\) ZZZ not in the source \(available: AAA, BBB"):
        bars.load_bars(path, timezone=NEW_YORK, symbols=["AAA", "ZZZ"])


def test_empty_selection_after_date_filter_is_an_error(tmp_path):
    path = _write_csv(tmp_path, _small_rows())
    with pytest.raises(DataError, match="no bars between 2024-08-01 and the end"):
        bars.load_bars(path, timezone=NEW_YORK, start=datetime.date(2024, 8, 1))


def test_bad_arguments_are_value_errors(tmp_path):
    path = _write_csv(tmp_path, _small_rows())
    with pytest.raises(ValueError, match="bar_stamp"):
        bars.load_bars(path, timezone=NEW_YORK, bar_stamp="middle")
    with pytest.raises(ValueError, match="unknown calendar"):
        bars.load_bars(path, timezone=NEW_YORK, calendar="NOPE")
    with pytest.raises(ValueError, match="unknown timezone"):
        bars.load_bars(path, timezone="New York")


def test_date_filter_that_leaves_no_rows_in_parquet_is_not_a_missing_symbol(tmp_path, week):
    synth.write(week, tmp_path / "bars.parquet")
    with pytest.raises(DataError, match="no bars between 2025-01-02 and the end"):
        bars.load_bars(tmp_path / "bars.parquet", timezone=NEW_YORK, symbols=["SYNA"],
                       start=datetime.date(2025, 1, 2))


def test_header_only_file_has_no_bars(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("timestamp,symbol,open,high,low,close,volume\n")
    with pytest.raises(DataError, match="no bars"):
        bars.load_bars(path, timezone=NEW_YORK)


def test_a_ragged_csv_row_is_named_by_row_and_line(tmp_path):
    path = _write_csv(tmp_path, _small_rows())
    lines = path.read_text().splitlines()
    lines.insert(3, "")                         # a blank line: not a row, still a line
    lines[5] = lines[5].rsplit(",", 1)[0]      # the fourth data row loses its volume
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as caught:
        bars.load_bars(path, timezone=NEW_YORK)
    assert str(caught.value) == f"{path}: row 4: 6 fields where the header has 7 (line 6 of the file)"
    assert caught.value.row == 4


def test_check_source_lists_files_without_reading_bars(tmp_path, week):
    path = tmp_path / "bars.parquet"
    week.to_parquet(path)
    assert bars.check_source(path) == [str(path)]
    with pytest.raises(DataError, match="no such file or folder"):
        bars.check_source(tmp_path / "missing.parquet")


# from_frame converts the usual dtypes without Arrow; the Arrow path is the reference.

def _via_arrow(monkeypatch, frame: pd.DataFrame, **kwargs):
    with monkeypatch.context() as patched:
        patched.setattr(bars, "_part_from_frame", lambda *args: None)
        return _outcome(frame, **kwargs)


def _outcome(frame: pd.DataFrame, **kwargs):
    """Every array of the BarSet and its provenance, or the error's text."""
    try:
        barset = bars.from_frame(frame, timezone=NEW_YORK, **kwargs)
    except DataError as exc:
        return str(exc)
    arrays = {name: [getattr(b, name) for b in barset.bars.values()] for name in
              ("timestamp", "open", "high", "low", "close", "volume", "session")}
    return (barset.symbols, barset.bar_ns, barset.files, barset.sessions.open_ns.tolist(),
            {name: [a.tolist() for a in listed] for name, listed in arrays.items()})


@settings(deadline=None, max_examples=40,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_from_frame_fast_path_equals_the_arrow_path(monkeypatch, week, data):
    frame = week.copy()
    if data.draw(st.booleans(), "shuffle"):
        frame = frame.sample(frac=1.0, random_state=data.draw(st.integers(0, 99))).reset_index(
            drop=True)
    symbol = data.draw(st.sampled_from(["category", "object", "str"]), "symbol dtype")
    frame["symbol"] = frame["symbol"].astype(str).astype(symbol)
    stamps = data.draw(st.sampled_from(["aware", "naive", "naive-us", "utc"]), "timestamps")
    if stamps.startswith("naive"):
        frame["timestamp"] = frame["timestamp"].dt.tz_localize(None)
    if stamps == "naive-us":
        frame["timestamp"] = frame["timestamp"].dt.as_unit("us")
    if stamps == "utc":
        frame["timestamp"] = frame["timestamp"].dt.tz_convert("UTC")
    if data.draw(st.booleans(), "float volume"):
        frame["volume"] = frame["volume"].astype(float)
    broken = data.draw(st.sampled_from([None, "nan", "high", "duplicate", "dst"]), "broken")
    row = data.draw(st.integers(0, len(frame) - 1), "row")
    if broken == "nan":
        frame.loc[row, "close"] = np.nan
    elif broken == "high":
        frame.loc[row, "high"] = frame.loc[row, "low"] / 2
    elif broken == "duplicate":
        frame = pd.concat([frame, frame.iloc[[row]]], ignore_index=True)
    elif broken == "dst" and stamps.startswith("naive"):
        frame.loc[row, "timestamp"] = pd.Timestamp("2024-03-10 02:30")
    kwargs = data.draw(st.sampled_from([{}, {"symbols": ["SYNB"]},
                                        {"symbols": ["SYNB", "SYNA"], "bar_stamp": "close"}]))
    assert _outcome(frame, **kwargs) == _via_arrow(monkeypatch, frame, **kwargs)


def _first_failure_by_masks(open_, high, low, close, volume):
    """The rule order `_check_values` promises, with numpy masks: (row, column) or None."""
    failures = []
    for name, values in zip(("open", "high", "low", "close"), (open_, high, low, close)):
        failures += [(np.flatnonzero(~np.isfinite(values)), name),
                     (np.flatnonzero(values <= 0), name)]
    with np.errstate(invalid="ignore"):
        failures += [(np.flatnonzero(high < np.maximum(open_, close)), "high"),
                     (np.flatnonzero(low > np.minimum(open_, close)), "low"),
                     (np.flatnonzero(~(np.isfinite(volume) & (volume >= 0))), "volume")]
    found = [(int(rows[0]), order, name) for order, (rows, name) in enumerate(failures)
             if len(rows)]
    return min(found)[::2] if found else None


@settings(deadline=None, max_examples=80)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), n_broken=st.integers(0, 4))
def test_value_checks_report_the_earliest_row_and_first_rule(seed, n, n_broken):
    rng = np.random.default_rng(seed)
    close = rng.uniform(10, 11, n)
    open_ = rng.uniform(10, 11, n)
    high = np.maximum(open_, close) + rng.uniform(0, 0.1, n)
    low = np.minimum(open_, close) - rng.uniform(0, 0.1, n)
    volume = rng.integers(0, 100, n).astype(float)
    columns = [open_, high, low, close, volume]
    for _ in range(n_broken):
        column = columns[rng.integers(0, 5)]
        column[rng.integers(0, n)] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -1.0, 5.0, 20.0])
    frame = pd.DataFrame({"timestamp": pd.date_range("2024-07-02 09:30", periods=n,
                                                     freq="min"), "symbol": "AAA",
                          "open": open_, "high": high, "low": low, "close": close,
                          "volume": volume})
    expected = _first_failure_by_masks(*columns)
    if expected is None:
        assert bars.from_frame(frame, timezone=NEW_YORK).n_bars == n
        return
    with pytest.raises(DataError) as caught:
        bars.from_frame(frame, timezone=NEW_YORK)
    assert (caught.value.row, caught.value.column) == (expected[0] + 1, expected[1])


@settings(deadline=None, max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300), daily=st.booleans())
def test_bar_interval_is_the_most_common_gap_within_a_day_smallest_on_ties(seed, n, daily):
    rng = np.random.default_rng(seed)
    codes = np.sort(rng.integers(0, 3, n)).astype(np.int32)
    step = 86_400 * 10**9 if daily else MINUTE_NS
    gaps = rng.choice([1, 1, 2, 5, 600, 1440], n) * step
    stamps = pd.Timestamp("2024-03-08 14:30", tz="UTC").value + np.cumsum(gaps)
    days = bars.sessions_module.local_days(stamps, NEW_YORK)
    same_symbol = codes[1:] == codes[:-1]
    within = np.diff(stamps)[same_symbol & (days[1:] == days[:-1])]
    if len(within) == 0:
        within = np.diff(stamps)[same_symbol]
    if len(within) == 0:
        expected = bars.DEFAULT_BAR_NS
    else:
        values, counts = np.unique(within, return_counts=True)
        expected = int(values[np.argmax(counts)])
    assert bars._bar_interval(codes, stamps.astype(np.int64), NEW_YORK) == expected
