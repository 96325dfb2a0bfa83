"""Indicator benchmark: ns per bar for every registered indicator on one core, next to TA-Lib
called directly where it has the indicator; the first-call cost of our numba kernels in a fresh
process and a fresh loky worker (numba cache cold and warm); and the speedup of a batch of
indicators on two threads over one.

Usage: ``python bench/indicators.py [--bars 1000000] [--repeat 5]``. Prints a Markdown report
and writes it to bench/out/indicators.md. Goals: TA-Lib-backed indicators within 10% of the
direct call, our own kernels under 10 ns per bar, two threads >= 1.8x.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import talib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backtester import indicators  # noqa: E402

BATCH = ["sma", "ema", "rsi", "macd", "bbands", "atr", "stoch", "adx", "cci", "vwap",
         "relative_volume", "zscore"]
OURS = {"vwap", "relative_volume"}  # computed by our kernels alone
FIRST_CALL = """
import time
start = time.perf_counter()
import numpy as np
from backtester import indicators
imported = time.perf_counter()
n = 2000
x = np.linspace(100.0, 101.0, n); v = np.ones(n); s = np.arange(n) // 390; m = 570 + np.arange(n) % 390
indicators.compute("vwap", x, v, s)
indicators.compute("relative_volume", v, s, m)
indicators.compute("bbands", x)
indicators.compute("zscore", x)
indicators.compute("stochrsi", x)
x[5] = np.nan
indicators.compute("sma", x)
done = time.perf_counter()
print(f"{imported - start:.4f} {done - imported:.4f}")
"""


def make_bars(n_bars: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100.0 + np.cumsum(np.round(rng.normal(0.0, 0.05, n_bars), 2))
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) + np.abs(rng.normal(0, 0.03, n_bars))
    low = np.minimum(open_, close) - np.abs(rng.normal(0, 0.03, n_bars))
    volume = rng.integers(1, 5000, n_bars).astype(float)
    bar = np.arange(n_bars)
    return {
        "open": open_, "high": high, "low": low, "close": close, "volume": volume,
        "hl2": (high + low) / 2, "hlc3": (high + low + close) / 3,
        "ohlc4": (open_ + high + low + close) / 4,
        "session": (bar // 390).astype(np.int64),
        "minute_of_day": (570 + bar % 390).astype(np.int64),
    }


def talib_direct(name: str, b: dict[str, np.ndarray]):
    """The same work as `compute(name, ...)` at default parameters, calling TA-Lib directly;
    None where TA-Lib lacks the indicator."""
    c, h, lo, v = b["close"], b["high"], b["low"], b["volume"]
    calls = {
        "sma": lambda: talib.SMA(c, 20), "ema": lambda: talib.EMA(c, 20),
        "wma": lambda: talib.WMA(c, 20), "dema": lambda: talib.DEMA(c, 20),
        "tema": lambda: talib.TEMA(c, 20), "rsi": lambda: talib.RSI(c, 14),
        "macd": lambda: talib.MACD(c, 12, 26, 9), "bbands": lambda: talib.BBANDS(c, 20, 2, 2, 0),
        "atr": lambda: talib.ATR(h, lo, c, 14), "natr": lambda: talib.NATR(h, lo, c, 14),
        "true_range": lambda: talib.TRANGE(h, lo, c),
        "stoch": lambda: talib.STOCH(h, lo, c, 14, 3, 0, 3, 0),
        "stochrsi": lambda: talib.STOCHRSI(c, 14, 14, 3, 0),
        "williams_r": lambda: talib.WILLR(h, lo, c, 14), "cci": lambda: talib.CCI(h, lo, c, 20),
        "adx": lambda: (talib.ADX(h, lo, c, 14), talib.PLUS_DI(h, lo, c, 14),
                        talib.MINUS_DI(h, lo, c, 14)),
        "mfi": lambda: talib.MFI(h, lo, c, v, 14), "obv": lambda: talib.OBV(c, v),
        "roc": lambda: talib.ROC(c, 10), "momentum": lambda: talib.MOM(c, 10),
        "stddev": lambda: talib.STDDEV(c, 20, 1.0),
        "zscore": lambda: (talib.SMA(c, 20), talib.STDDEV(c, 20, 1.0)),
        "highest": lambda: talib.MAX(h, 20), "lowest": lambda: talib.MIN(lo, 20),
        "typical_price": lambda: talib.TYPPRICE(h, lo, c),
        "volume_sma": lambda: talib.SMA(v, 20),
    }
    return calls.get(name)


def best_of(call, repeat: int) -> float:
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def per_indicator(bars, repeat: int) -> list[str]:
    n = len(bars["close"])
    rows = ["| indicator | kernel | ours ns/bar | TA-Lib direct ns/bar | ratio |",
            "| --- | --- | ---: | ---: | ---: |"]
    for name in sorted(indicators.REGISTRY):
        spec = indicators.get(name)
        arrays = [bars[f] for f in spec.inputs]
        ours = best_of(lambda: indicators.compute(name, *arrays), repeat) / n * 1e9  # noqa: B023
        direct = talib_direct(name, bars)
        kernel = "ours (numba)" if name in OURS else (
            "TA-Lib + ours" if name in ("bbands", "zscore", "stochrsi") else "TA-Lib")
        if direct is None:
            rows.append(f"| {name} | {kernel} | {ours:.2f} | | |")
        else:
            theirs = best_of(direct, repeat) / n * 1e9
            rows.append(f"| {name} | {kernel} | {ours:.2f} | {theirs:.2f} | "
                        f"{ours / theirs:.2f} |")
    return rows


def first_call_rows() -> list[str]:
    rows = ["| where | numba cache | import s | first calls s |", "| --- | --- | ---: | ---: |"]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
        for label in ("cold", "warm"):
            out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.split()
            rows.append(f"| fresh process | {label} | {float(out[0]):.3f} | {float(out[1]):.3f} |")
    try:
        from joblib.externals.loky import ProcessPoolExecutor
    except ImportError:  # pragma: no cover - joblib is a dependency
        return rows
    with ProcessPoolExecutor(max_workers=1) as pool:  # a fresh worker, not the reusable one
        out = pool.submit(_first_call_in_worker, str(ROOT)).result().split()
    rows.append(f"| fresh loky worker | as installed | {float(out[0]):.3f} | "
                f"{float(out[1]):.3f} |")
    return rows


def _first_call_in_worker(root: str) -> str:
    import io
    from contextlib import redirect_stdout

    sys.path.insert(0, root)
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        exec(FIRST_CALL, {})
    return buffer.getvalue()


def thread_rows(n_bars: int, repeat: int) -> list[str]:
    series = [make_bars(n_bars, seed) for seed in (1, 2)]

    def batch(bars):
        for name in BATCH:
            indicators.compute(name, *(bars[f] for f in indicators.get(name).inputs))

    def one_thread():
        for bars in series:
            batch(bars)

    def two_threads():
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(batch, series))

    sequential = best_of(one_thread, repeat)
    parallel = best_of(two_threads, repeat)
    return ["| batch | 1 thread s | 2 threads s | speedup |", "| --- | ---: | ---: | ---: |",
            f"| {len(BATCH)} indicators x 2 series of {n_bars:,} bars | {sequential:.3f} | "
            f"{parallel:.3f} | {sequential / parallel:.2f}x |"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "indicators.md"))
    args = parser.parse_args(argv)
    bars = make_bars(args.bars, 0)
    lines = [
        "# Indicator benchmark", "",
        f"{args.bars:,} bars, best of {args.repeat}; {indicators.talib_version()}; numpy "
        f"{np.__version__}; Python {platform.python_version()}; {platform.processor() or ''} "
        f"{os.cpu_count()} CPUs.", "",
        "## One core", "", *per_indicator(bars, args.repeat), "",
        "## First call of our numba kernels (import, then vwap, relative_volume, bbands, "
        "zscore, stochrsi, a gapped sma on 2,000 bars)", "", *first_call_rows(), "",
        "## Threads", "", *thread_rows(args.bars, args.repeat), "",
    ]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
