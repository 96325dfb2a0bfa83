"""Benchmark the trade kernels: 10,000 signals with 60-bar horizons over 1,000,000 bars.

Run: ``python bench/trades.py [--bars N] [--signals N] [--repeat N] [--keep-cache]``.
By default numba's cache goes to a fresh temporary folder, so the first call shows the full
compile cost; ``--keep-cache`` uses the package's cache (what a second run of a user sees).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--signals", type=int, default=10_000)
    parser.add_argument("--max-bars", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep-cache", action="store_true")
    args = parser.parse_args()
    if not args.keep_cache:
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-trades-numba-")

    import numpy as np  # after NUMBA_CACHE_DIR is set

    from backtester.trades import (
        Horizon,
        Level,
        TradeSpec,
        forward_returns,
        select_non_overlapping,
        simulate,
    )

    rng = np.random.default_rng(0)
    n = args.bars
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.0005, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.0005, n)))
    timestamp = np.arange(n, dtype=np.int64) * 60_000_000_000
    session = (np.arange(n) // 390).astype(np.int32)
    atr = {14: np.full(n, 0.1)}
    signal_idx = np.sort(rng.choice(n - args.max_bars - 2, args.signals, replace=False))
    bars = {"timestamp": timestamp, "open": open_, "high": high, "low": low, "close": close,
            "session": session}
    specs = {
        "bracket (tp 1%, sl 0.5%)": TradeSpec(
            take_profit=Level("percent", 0.01), stop_loss=Level("percent", 0.005),
            max_bars=args.max_bars),
        "time only (worst case: every bar)": TradeSpec(max_bars=args.max_bars),
        "atr bracket + trail + session": TradeSpec(
            take_profit=Level("atr", 20.0), stop_loss=Level("atr", 10.0),
            trailing_stop=Level("percent", 0.01), trail_after=Level("percent", 0.002),
            max_bars=args.max_bars, session_close=True),
    }
    horizons = (Horizon("5", bars=5), Horizon("15", bars=15), Horizon("60", bars=60),
                Horizon("30min", duration_ns=30 * 60_000_000_000), Horizon("eod", eod=True))

    def timed(fn):
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result

    print(f"python {sys.version.split()[0]}, {n:,} bars, {args.signals:,} signals, "
          f"max_bars {args.max_bars}, best of {args.repeat}")
    first = True
    for name, spec in specs.items():
        call = lambda spec=spec: simulate(spec, signal_idx, **bars, atr=atr, data_end=True)  # noqa: E731
        cold, result = timed(call)
        best = min(timed(call)[0] for _ in range(args.repeat))
        label = ("first call (cache load)" if args.keep_cache else "first call (compile)") if first else "first call"
        print(f"simulate  {name:36s} {label}: {cold * 1e3:8.1f} ms   "
              f"steady: {best * 1e3:7.2f} ms   ({len(result['exit_idx']):,} trades)")
        first = False
    call = lambda: forward_returns(horizons, signal_idx, **{k: bars[k] for k in (  # noqa: E731
        "timestamp", "close", "high", "low", "session")}, data_end=True)
    cold, _ = timed(call)
    best = min(timed(call)[0] for _ in range(args.repeat))
    print(f"forward_returns 5 horizons (5,15,60,30min,eod)   first call (compile): "
          f"{cold * 1e3:8.1f} ms   steady: {best * 1e3:7.2f} ms")
    result = simulate(specs["bracket (tp 1%, sl 0.5%)"], signal_idx, **bars, data_end=True)
    signal_time, exit_time = timestamp[result["signal_idx"]], timestamp[result["exit_idx"]]
    call = lambda: select_non_overlapping(signal_time, exit_time)  # noqa: E731
    cold, taken = timed(call)
    best = min(timed(call)[0] for _ in range(args.repeat))
    print(f"select_non_overlapping                          first call (compile): "
          f"{cold * 1e3:8.1f} ms   steady: {best * 1e3:7.2f} ms   ({int(taken.sum()):,} taken)")


if __name__ == "__main__":
    main()
