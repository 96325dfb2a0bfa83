"""Cost of the data-quality report (`backtester.quality.assess`) and of gap filling per bar.

Synthetic 1-minute XNYS bars (`backtester.synth`, seed 5), one to several million, with one
bar in 50 removed at random so that gaps exist. Times each rule's kernel and the whole
`assess`, best of `--repeat`, after one untimed call that compiles (or loads) the kernels.

Usage: ``python bench/quality.py [--symbols 20] [--days 250] [--repeat 3]``. Prints a Markdown
table and writes bench/out/quality.md. Goal: gaps, flat stretches and fill under 50 ns/bar;
the outlier rule is O(window) a bar (a rolling median of 100 returns), the report's main cost.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def best(repeat: int, call) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--days", type=int, default=250)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import pandas as pd

    from backtester import quality, synth
    from backtester.bars import from_frame

    end = (pd.Timestamp("2023-01-03") + pd.Timedelta(days=int(args.days * 1.45))).date()
    frame = synth.generate(args.symbols, "2023-01-03", end, seed=5)
    keep = np.random.default_rng(5).random(len(frame)) >= 0.02
    bars = from_frame(frame[keep].reset_index(drop=True), timezone="America/New_York")
    n = bars.n_bars
    quality.assess(bars)                               # compile or load the kernels
    quality.fill_gaps(bars)
    breaks = quality._breaks(bars.sessions)
    columns = list(bars.bars.values())
    rows = [
        ("gaps", lambda: [quality._gaps_nb(b.timestamp, b.session, bars.bar_ns, *breaks)
                          for b in columns]),
        ("flat stretches", lambda: [quality._flat_stretches_nb(
            b.open, b.high, b.low, b.close, b.volume, b.session, quality.FLAT_MIN_BARS)
            for b in columns]),
        ("outliers", lambda: [quality._outliers_nb(
            b.close, b.session, False, quality.OUTLIER_K, quality.OUTLIER_WINDOW,
            quality.OUTLIER_MIN_RETURNS) for b in columns]),
        ("assess (all rules)", lambda: quality.assess(bars)),
        ("fill_gaps", lambda: quality.fill_gaps(bars)),
    ]
    totals = quality.assess(bars).totals()
    lines = [f"# Data quality on {n:,} bars ({args.symbols} symbols, {totals['missing_bars']:,} "
             f"missing in {totals['gaps']:,} gaps, {totals['outliers']:,} outliers)", "",
             "| step | seconds | ns/bar |", "| --- | ---: | ---: |"]
    for name, call in rows:
        seconds = best(args.repeat, call)
        lines.append(f"| {name} | {seconds:.4f} | {seconds / n * 1e9:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "quality.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
