"""Every shipped config gives the same bytes whatever runs it, and its floats survive CSV.

Each config runs once per backend (sequential, threading, loky with n_jobs=2) on the same
cluster layout; the event files (alerts, forward returns, trades; CSV and Parquet) must be
byte-identical. Timing and manifest files record how a run went and are left out.
"""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import backtester
from backtester import regress
from backtester.api import prepare

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
BACKENDS = (("sequential", 1), ("threading", 2), ("loky", 2))
EVENT_FILES = tuple(f"{stem}.{ext}" for stem in ("alerts", "forward", "trades")
                    for ext in ("csv", "parquet"))


@pytest.fixture(scope="module", params=CONFIGS, ids=lambda path: path.stem)
def shipped(request, tmp_path_factory):
    """(config, its bars, pinned cluster layout, {backend: results folder}) for one config."""
    config = request.param
    old = Path.cwd()
    os.chdir(REPO)  # configs name their data relative to the repository root
    try:
        prep = prepare(config, backend="loky", n_jobs=2)
        # `auto` sizes the layout by worker count; pin the parallel one so all backends run the
        # same clusters (invariant 2 holds for a fixed layout).
        cluster_by = None
        if prep.config.schedule.cluster_by == "auto":
            per_symbol = len(prep.layout.clusters) // max(1, len(prep.bars.symbols))
            cluster_by = {"count": per_symbol}
        root = tmp_path_factory.mktemp(config.stem)
        folders = {}
        for backend, n_jobs in BACKENDS:
            backtester.run(config, backend=backend, n_jobs=n_jobs, compare_sequential=False,
                           cluster_by=cluster_by, bars=prep.bars, out=root / backend)
            folders[backend] = root / backend
    finally:
        os.chdir(old)
    return config, prep.bars, folders


def test_event_files_are_byte_identical_on_every_backend(shipped):
    config, _, folders = shipped
    reference = folders["sequential"]
    present = [name for name in EVENT_FILES if (reference / name).is_file()]
    assert "alerts.csv" in present and "alerts.parquet" in present
    for backend, folder in folders.items():
        assert [n for n in EVENT_FILES if (folder / n).is_file()] == present, backend
        for name in present:
            same = (folder / name).read_bytes() == (reference / name).read_bytes()
            assert same, f"{config.name}: {backend} {name} differs from sequential"


def test_csv_floats_read_back_bit_identical(shipped):
    """Every float column of every event CSV parses back to the Parquet file's exact bits."""
    _, _, folders = shipped
    folder = folders["sequential"]
    for stem in ("alerts", "forward", "trades"):
        if not (folder / f"{stem}.csv").is_file():
            continue
        stored = pd.read_parquet(folder / f"{stem}.parquet")
        text = pd.read_csv(folder / f"{stem}.csv", dtype=str, keep_default_na=False)
        parsed = pd.read_csv(folder / f"{stem}.csv")
        floats = [c for c in stored.columns if stored[c].dtype == np.float64]
        assert stem != "alerts" or len(floats) >= 2
        for column in floats:
            bits = stored[column].to_numpy().view(np.int64)
            exact = np.array([float(v) if v else np.nan for v in text[column]])
            # NaN is written as an empty field and reads back as the canonical NaN.
            nan = np.isnan(stored[column].to_numpy())
            assert np.array_equal(np.isnan(exact), nan), column
            assert np.array_equal(exact.view(np.int64)[~nan], bits[~nan]), f"{stem}.{column}"
            # pandas' own parser agrees, so a user's `read_csv` sees the same numbers.
            assert np.array_equal(parsed[column].to_numpy(np.float64).view(np.int64)[~nan],
                                  bits[~nan]), f"{stem}.{column} through pd.read_csv"


def test_other_cluster_layouts_agree_within_tolerance(shipped, tmp_path):
    """One cluster per day instead of the configured layout: same events, floats to 1e-9."""
    config, bars, folders = shipped
    backtester.run(config, backend="sequential", compare_sequential=False, cluster_by="day",
                   bars=bars, out=tmp_path / "day")
    for name in ("alerts.csv", "forward.csv", "trades.csv"):
        expected = folders["sequential"] / name
        if expected.is_file():
            diff = regress.compare_csv(expected, tmp_path / "day" / name,
                                       labels=("configured", "day"))
            assert diff is None, "\n".join(diff.render(("configured", "day")))
