"""Benchmark the rule language: 10 alerts sharing 5 indicators over 1,000,000 synthetic 1-minute
bars of one symbol, on one core.

Three figures, each the best of `--repeat` runs after one warm-up run (numba kernels compiled or
loaded from the cache, TA-Lib loaded):

- **rule graph**: `expr.evaluate(plan.roots, ctx)` alone (the reference interpreter): the 5
  indicators (each computed once) and every rule function and comparison of the 10 alerts, on
  the whole series; and the same graph as the plan's compiled program (`fused.run`);
- **cluster**: `cluster.run_cluster` on one cluster holding every bar: the rule graph plus the
  context arrays (local time of day), the time filters, candidate extraction and 3 forward-return
  horizons per candidate;
- **end to end**: `backtester.run(..., backend="sequential", write=False)` on one cluster: the
  above plus planning, scheduling, the merge (cooldowns, once-per-day, rearm) and statistics;
  once more without forward horizons, whose bootstrap statistics (`stats.py`) dominate it.

Usage: ``python bench/rules.py [--bars 1000000] [--repeat 5]``. Prints a Markdown report and
writes it to bench/out/rules.md. Goal (issue 5): the rules of 10 alerts evaluate 1M bars in well
under a second on one core.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # one core: before numpy and numba are imported

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import backtester  # noqa: E402
from backtester import api, cluster, expr, fused, synth  # noqa: E402
from backtester.bars import from_frame  # noqa: E402

NY = "America/New_York"

# 5 indicators (rsi(14), sma(50), ema(20), atr(14), bbands(20, 2)), shared by 10 alerts that also
# exercise the rule functions, session functions and time filters.
ALERTS = [
    {"name": "oversold", "when": "rsi(14) < 30", "cooldown": "30min"},
    {"name": "trend_up", "when": "crosses_above(close, sma(50)) and rsi(14) > 50",
     "between": ["09:45", "15:30"]},
    {"name": "trend_down", "when": "crosses_below(close, sma(50)) and rsi(14) > 60"},
    {"name": "lower_band", "when": "close < bbands(20, 2).lower and rsi(14) < 35",
     "once_per_day": True},
    {"name": "upper_band", "when": "close > bbands(20, 2).upper and held(close > ema(20), 5)",
     "skip_first": 15, "skip_last": 15},
    {"name": "golden", "when": "crosses_above(ema(20), sma(50))", "rearm_when": "rsi(14) < 45"},
    {"name": "pullback", "when": "bars_since(crosses_above(close, ema(20))) <= 3 and "
                                 "atr(14) > 0.05 and falling(close, 2)"},
    {"name": "opening_drive", "when": "close > day_open + atr(14) and minutes_since_open >= 30 "
                                      "and high >= day_high_so_far", "days": ["mon", "tue", "wed"]},
    {"name": "reclaim", "when": "close > value_when(crosses_below(close, sma(50)), high) and "
                                "within(rsi(14) < 30, 30)"},
    {"name": "late_fade", "when": "20 < rsi(14) < 30 and close < prev_day_close and "
                                  "minutes_to_close <= 60 and count(close < open, 10) >= 7"},
]


def bench_config(forward: bool = True) -> dict:
    horizons = {"forward": [5, 15, 60]} if forward else {}
    return {"name": "bench-rules", "data": {"path": "<frame>", "timezone": NY},
            "alerts": [dict(a, **horizons) for a in ALERTS],
            "schedule": {"cluster_by": {"count": 1}},
            "execution": {"backend": "sequential", "compare_sequential": False}}


def make_bars(n_bars: int):
    """One synthetic symbol on the XNYS calendar, cut to exactly `n_bars` bars."""
    years = n_bars / (252 * 390) + 0.5
    start = datetime.date(2010, 1, 4)
    end = start + datetime.timedelta(days=int(years * 366) + 10)
    frame = synth.generate(["BENCH"], start, end, seed=11).iloc[:n_bars]
    if len(frame) < n_bars:
        raise SystemExit(f"synthetic data gave {len(frame)} bars, fewer than {n_bars}")
    return from_frame(frame, timezone=NY)


def best_of(repeat: int, run) -> float:
    run()  # warm-up: kernels compiled or loaded, caches filled
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    began = time.perf_counter()
    barset = make_bars(args.bars)
    made = time.perf_counter() - began
    config = bench_config()
    prep = api.prepare(config, bars=barset, backend="sequential")
    plan, layout = prep.plan, prep.layout
    assert len(layout.clusters) == 1, layout
    whole = layout.clusters[0]
    symbol_bars = barset.bars[whole.symbol].slice(whole.read_start, whole.read_end)
    arrays = cluster.context_arrays(symbol_bars, barset.sessions)
    n = len(symbol_bars)

    nodes = {node for root in plan.roots for node in expr.walk(root)}
    indicator_nodes = {expr.Ind(i.name, i.source, i.params, None)
                       for i in nodes if isinstance(i, expr.Ind)}
    functions = sorted({f.name for f in nodes if isinstance(f, expr.Func)})

    graph = best_of(args.repeat, lambda: expr.evaluate(plan.roots, expr.Context(arrays)))
    compiled = best_of(args.repeat, lambda: fused.run(plan.program, expr.Context(arrays)))
    one_cluster = best_of(args.repeat, lambda: cluster.run_cluster(
        plan, whole, symbol_bars, barset.sessions))
    reference = best_of(args.repeat, lambda: cluster.run_cluster_reference(
        plan, whole, symbol_bars, barset.sessions))
    result = None

    def end_to_end():
        nonlocal result
        result = backtester.run(config, backend="sequential", write=False, bars=barset)

    total = best_of(args.repeat, end_to_end)
    bare = bench_config(forward=False)
    no_forward = best_of(args.repeat, lambda: backtester.run(
        bare, backend="sequential", write=False, bars=barset))
    fired = result.alerts.groupby("alert", observed=True).size().to_dict()

    def row(what, seconds):
        return f"| {what} | {seconds:.3f} | {seconds / n * 1e9:.1f} |"

    lines = [
        "# Rule benchmark",
        "",
        f"{n:,} one-minute bars of one synthetic symbol ({len(np.unique(arrays['session'])):,} "
        f"XNYS sessions), one cluster, one core; best of {args.repeat} after a warm-up run. "
        f"numpy {np.__version__}, Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load:.2f} at the start (others' work inflates "
        "the figures).",
        "",
        f"10 alerts, {len(indicator_nodes)} distinct indicators "
        f"({', '.join(sorted(str(i) for i in indicator_nodes))}), {len(nodes)} distinct graph "
        f"nodes in all; rule functions used: {', '.join(functions)}. Cluster warm-up: "
        f"{plan.warmup_bars} bars + {plan.warmup_sessions} sessions.",
        "",
        "| what | seconds | ns/bar |",
        "| --- | ---: | ---: |",
        row("rule graph, reference interpreter (`expr.evaluate`, 10 alerts)", graph),
        row("rule graph, compiled (`fused.run`: indicators + one kernel call)", compiled),
        row("one cluster (`run_cluster`: + time filters, candidates, 3 forward horizons)",
            one_cluster),
        row("one cluster on the interpreter (`run_cluster_reference`)", reference),
        row("end to end (`backtester.run`, sequential, no output files)", total),
        row("end to end without forward horizons (no bootstrap statistics)", no_forward),
        "",
        f"Goal: the rule graph well under 1 s for 1M bars: "
        f"{'met' if compiled < 1.0 and n >= 1_000_000 else 'NOT met'} ({compiled:.3f} s "
        f"compiled, {graph:.3f} s on the interpreter, for {n:,} bars).",
        "",
        "Alerts fired (after cooldown, once-per-day and rearm): "
        + ", ".join(f"{name} {count:,}" for name, count in fired.items()) + ".",
        "",
        f"(Synthetic data generated and validated in {made:.1f} s, not counted.)",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "rules.md").write_text(report)


if __name__ == "__main__":
    main()
