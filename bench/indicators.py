"""Indicator benchmark: ns per bar for every registered indicator on one core, next to TA-Lib
called directly where it has the indicator; our own kernels alone; inputs with frequent NaNs;
the first-call cost of our numba kernels in a fresh process and a fresh loky worker (numba
cache cold and warm); and the speedup of a batch of indicators on two threads over one.

Indicators are called as the rule evaluator calls them: bar fields flagged `known_finite` (bars
are validated on load, so they are not scanned), and for bbands only the bands TA-Lib returns
(percent_b and bandwidth are computed when a rule asks for them; their kernels have own rows).

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


def as_evaluated(name: str, bars: dict[str, np.ndarray]):
    """`compute(name, ...)` as `expr` calls it for a rule on bar fields."""
    spec = indicators.get(name)
    arrays = [bars[f] for f in spec.inputs]
    outputs = {"outputs": [spec.outputs[0]]} if spec.derived else {}
    return lambda: indicators.compute(name, *arrays, known_finite=True, **outputs)


def per_indicator(bars, repeat: int) -> list[str]:
    n = len(bars["close"])
    rows = ["| indicator | kernel | ours ns/bar | TA-Lib direct ns/bar | ratio |",
            "| --- | --- | ---: | ---: | ---: |"]
    for name in sorted(indicators.REGISTRY):
        spec = indicators.get(name)
        ours = best_of(as_evaluated(name, bars), repeat) / n * 1e9
        direct = talib_direct(name, bars)
        mine = getattr(spec.kernel, "own_kernels", ())
        talib_functions = getattr(spec.kernel, "talib_functions", ())
        kernel = ("TA-Lib + ours" if mine else "TA-Lib") if talib_functions else "ours (numba)"
        if direct is None:
            rows.append(f"| {name} | {kernel} | {ours:.2f} | | |")
        else:
            theirs = best_of(direct, repeat) / n * 1e9
            rows.append(f"| {name} | {kernel} | {ours:.2f} | {theirs:.2f} | "
                        f"{ours / theirs:.2f} |")
    return rows


def own_kernel_rows(bars, repeat: int) -> list[str]:
    """Our numba kernels alone, on inputs as the indicators pass them."""
    n = len(bars["close"])
    c, v = bars["close"], bars["volume"]
    upper, middle, lower = talib.BBANDS(c, 20, 2, 2, 0)
    mean, std = talib.SMA(c, 20), talib.STDDEV(c, 20, 1.0)
    rsi = talib.RSI(c, 14)
    highest, lowest = talib.MAX(rsi, 14), talib.MIN(rsi, 14)
    s, m = bars["session"], bars["minute_of_day"]
    calls = [
        ("session_vwap_1d_nb", lambda: indicators.session_vwap_1d_nb(bars["hlc3"], v, s)),
        ("relative_volume_1d_nb (10 sessions)",
         lambda: indicators.relative_volume_1d_nb(v, s, m, 10)),
        ("percent_b_1d_nb (bbands.percent_b)", lambda: indicators.percent_b_1d_nb(c, upper, lower)),
        ("bandwidth_1d_nb (bbands.bandwidth)",
         lambda: indicators.bandwidth_1d_nb(upper, middle, lower)),
        ("zscore_1d_nb", lambda: indicators.zscore_1d_nb(c, mean, std, np.empty_like(c))),
        ("stochastic_of_1d_nb (stochrsi)",
         lambda: indicators.stochastic_of_1d_nb(rsi, highest, lowest, 1e-6)),
        ("finite scan of one input (`_all_finite_nb`)", lambda: indicators._all_finite_nb(c)),
    ]
    rows = ["| kernel | ns/bar |", "| --- | ---: |"]
    for label, call in calls:
        rows.append(f"| {label} | {best_of(call, repeat) / n * 1e9:.2f} |")
    return rows


def gapped_rows(bars, repeat: int) -> list[str]:
    """A derived source with a NaN every 7th bar: runs of 6 finite bars."""
    n = len(bars["close"])
    gapped = bars["close"].copy()
    gapped[::7] = np.nan
    cases = [("sma(x, 20)", "sma", {"period": 20}, "runs within the lookback: no call"),
             ("highest(x, 5)", "highest", {"period": 5}, "stateless window: one call"),
             ("momentum(x, 3)", "momentum", {"period": 3}, "stateless window: one call"),
             ("sma(x, 5)", "sma", {"period": 5}, "one TA-Lib call per run")]
    rows = ["| call on x with a NaN every 7th bar | ns/bar | path |", "| --- | ---: | --- |"]
    for label, name, params, path in cases:
        call = lambda: indicators.compute(name, gapped, **params)  # noqa: B023, E731
        rows.append(f"| {label} | {best_of(call, min(repeat, 2)) / n * 1e9:.1f} | {path} |")
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
            as_evaluated(name, bars)()

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
        "## Our kernels alone", "", *own_kernel_rows(bars, args.repeat), "",
        "## Inputs with frequent NaNs", "", *gapped_rows(bars, args.repeat), "",
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
