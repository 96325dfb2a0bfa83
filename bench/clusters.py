"""Per-cluster overhead and thread scaling of small clusters: many weeks of few symbols.

Data: deterministic synthetic 1-minute bars (`backtester.synth`, in memory), `--symbols`
symbols x `--days` sessions, cut into one cluster per symbol and week (`cluster_by: week`,
~2k bars each). Config: 4 alerts (the RSI bracket strategy of the peers' benchmark, and the
rules of configs/rsi.yaml, configs/macd_trend.yaml and configs/bracket.yaml's short).

Figures, each the best of `--repeat` after a warm-up pass (with `--compare`, the two
evaluators' runs interleaved, so that other jobs' load hits both alike):

- **small clusters**: `cluster.run_cluster` on every week cluster, one thread;
- **one cluster per symbol**: the same bars as one cluster per symbol (the same indicator,
  rule and trade work, almost no per-cluster cost);
- **overhead per cluster**: what the week clusters cost beyond the same bars read as one
  cluster per symbol: (small - one per symbol x read bars of the weeks / read bars of the
  symbols) / number of week clusters. Each week cluster re-reads a warm-up halo (ema(200)
  settling: ~3k bars for ~2k signal bars), which is compute, not overhead, so the one-cluster
  time is scaled by the bars each layout reads;
- **CPU per cluster / CPU overhead per cluster**: the same two figures from the thread's CPU
  time (`time.thread_time`) instead of wall time: on a shared machine wall time also counts
  the time a thread waited for a core, which swamps an overhead of tens of microseconds;
- **threads**: the week clusters run on a pool of 1 and of 2 threads (one shared list of
  clusters, taken in order), and the speedup of 2 over 1;
- **evaluator**: the same on the reference interpreter (`--evaluator interpreter`) when asked
  for with `--compare`.

Usage: ``python bench/clusters.py [--symbols 60] [--days 250] [--repeat 3] [--compare]``.
Prints a Markdown report and writes bench/out/clusters.md. Goals (issue 11): tens of
microseconds of overhead per cluster; 2 threads faster than 1 (>= 1.85x).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backtester import api, cluster  # noqa: E402
from backtester.bars import from_frame  # noqa: E402
from backtester.synth import generate  # noqa: E402

NY = "America/New_York"
ALERTS = [
    {"name": "rsi_bracket", "when": "crosses_below(rsi(14), 30)",
     "trade": {"side": "long", "take_profit": "1%", "stop_loss": "0.5%", "max_bars": 60}},
    {"name": "oversold_open", "when": "rsi(14) < 30 and close < bbands(20, 2).lower",
     "between": ["09:30", "10:30"], "cooldown": "30min", "forward": [5, 15, 60]},
    {"name": "macd_cross_up", "when": "crosses_above(macd(12, 26, 9).macd, macd(12, 26, 9).signal)"
     " and close > ema(200) and close > vwap", "skip_first": "15min", "skip_last": "15min",
     "forward": [15, 60]},
    {"name": "atr_breakdown_short",
     "when": "close < prev(lowest(low, 30), 1) and volume > 2 * volume_sma(30)",
     "between": ["10:00", "15:30"],
     "trade": {"side": "short", "take_profit": "2atr", "stop_loss": "1atr", "max_bars": 90}},
]


def config(cluster_by) -> dict:
    return {"name": "bench-clusters", "data": {"path": "<frame>", "timezone": NY},
            "alerts": ALERTS, "schedule": {"cluster_by": cluster_by},
            "execution": {"backend": "sequential", "compare_sequential": False}}


def make_bars(n_symbols: int, days: int):
    start = datetime.date(2023, 1, 3)
    end = start + datetime.timedelta(days=int(days * 365 / 252) + 1)
    frame = generate(n_symbols, start, end, seed=11)
    return from_frame(frame, timezone=NY)


def work(prep):
    bars = prep.bars
    return [(c, bars.bars[c.symbol].slice(c.read_start, c.read_end))
            for c in prep.layout.clusters]


def run_all(plan, items, sessions) -> None:
    for c, b in items:
        cluster.run_cluster(plan, c, b, sessions)


def run_threads(plan, items, sessions, n_threads: int) -> None:
    it = iter(items)
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                item = next(it, None)
            if item is None:
                return
            cluster.run_cluster(plan, item[0], item[1], sessions)

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def timed(run) -> tuple[float, float]:
    """Wall seconds and this thread's CPU seconds of `run()` (CPU time does not count the
    time the thread waited for a core, so it stays comparable on a loaded machine)."""
    began, cpu = time.perf_counter(), time.thread_time()
    run()
    return time.perf_counter() - began, time.thread_time() - cpu


def measure(evaluators: list[str], weeks, whole, repeat: int) -> list[dict]:
    """Every figure of every evaluator, interleaved (evaluator by evaluator within each
    repetition, best of `repeat`), so that load from other jobs hits them alike."""
    plan, sessions = weeks.plan, weeks.bars.sessions
    small_items, whole_items = work(weeks), work(whole)
    runs = {"small": lambda: run_all(plan, small_items, sessions),
            "big": lambda: run_all(whole.plan, whole_items, sessions),
            "one": lambda: run_threads(plan, small_items, sessions, 1),
            "two": lambda: run_threads(plan, small_items, sessions, 2)}
    best = {e: dict.fromkeys(runs, float("inf")) for e in evaluators}
    cpu = {e: dict.fromkeys(("small", "big"), float("inf")) for e in evaluators}
    for evaluator in evaluators:   # warm-up: kernels compiled or loaded
        cluster.DEFAULT_EVALUATOR = evaluator
        runs["small"]()
    for _ in range(repeat):
        for key, run in runs.items():
            for evaluator in evaluators:
                cluster.DEFAULT_EVALUATOR = evaluator
                wall, used = timed(run)
                best[evaluator][key] = min(best[evaluator][key], wall)
                if key in cpu[evaluator]:
                    cpu[evaluator][key] = min(cpu[evaluator][key], used)
    cluster.DEFAULT_EVALUATOR = "fused"
    n_bars = sum(c.n_bars for c, _ in small_items)
    read_small = sum(c.n_read for c, _ in small_items)
    read_big = sum(c.n_read for c, _ in whole_items)
    rows = []
    for evaluator, t in best.items():
        compute = t["big"] * read_small / read_big
        c = cpu[evaluator]
        rows.append({"evaluator": evaluator, "clusters": len(small_items), "bars": n_bars,
                     "cpu_per_cluster_us": c["small"] / len(small_items) * 1e6,
                     "cpu_overhead_us": (c["small"] - c["big"] * read_small / read_big)
                     / len(small_items) * 1e6,
                     "read": read_small, "small": t["small"], "big": t["big"],
                     "overhead_us": (t["small"] - compute) / len(small_items) * 1e6,
                     "per_cluster_us": t["small"] / len(small_items) * 1e6, "one": t["one"],
                     "two": t["two"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=60)
    parser.add_argument("--days", type=int, default=250)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare", action="store_true",
                        help="also measure the reference interpreter")
    parser.add_argument("--quick", action="store_true", help="4 symbols x 60 days, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.symbols, args.days, args.repeat = 4, 60, 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    barset = make_bars(args.symbols, args.days)
    weeks = api.prepare(config("week"), bars=barset, backend="sequential")
    whole = api.prepare(config({"count": args.symbols}), bars=barset, backend="sequential")
    rows = measure(["fused", "interpreter"] if args.compare else ["fused"], weeks, whole,
                   args.repeat)
    first = rows[0]
    lines = [
        "# Small clusters: per-cluster overhead and threads",
        "",
        f"{args.symbols} synthetic symbols x {args.days} days of 1-minute bars "
        f"({first['bars']:,} signal bars), {first['clusters']:,} week clusters "
        f"(~{first['bars'] // first['clusters']:,} bars each, {first['read']:,} bars read with "
        f"their warm-up halos), 4 alerts; best of {args.repeat} "
        f"after a warm-up. Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load:.2f} at the start.",
        "",
        "| evaluator | week clusters s | one cluster per symbol s | per cluster us | "
        "overhead per cluster us | bars/s (weeks, 1 thread) | 1 thread s | 2 threads s | "
        "2-thread speedup | CPU per cluster us | CPU overhead per cluster us |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['evaluator']} | {r['small']:.3f} | {r['big']:.3f} | {r['per_cluster_us']:.0f} | "
            f"{r['overhead_us']:.0f} | {r['bars'] / r['small'] / 1e6:.2f}M | {r['one']:.3f} | "
            f"{r['two']:.3f} | {r['one'] / r['two']:.2f}x | {r['cpu_per_cluster_us']:.0f} | "
            f"{r['cpu_overhead_us']:.0f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "clusters.md").write_text(report)


if __name__ == "__main__":
    main()
