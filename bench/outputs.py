"""Benchmark the serial tail of a run on many alerts: merge, statistics and writing the outputs.

Run: ``python bench/outputs.py [--symbols N] [--days N] [--bootstrap N] [--repeat N]``.

A deliberately busy rule (`close > open`: about half of all bars fire) with forward returns at
three horizons and a bracket trade on every fire (``overlap: allow``) runs over generated
1-minute XNYS bars, sequentially in this process. The clusters are timed as a whole; then the
merge (`merge.merge`), the statistics (`api.statistics`: the account marked to market at every
bar, bootstrap intervals off unless ``--bootstrap N``) and the writing (`api.write_outputs`: CSV and Parquet of alerts, forward
returns and trades, summary, timing, manifest) are timed one by one, each the best of
``--repeat`` runs. The report gives seconds, events and each phase's share of the run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--days", type=int, default=125, help="calendar days of bars")
    parser.add_argument("--bootstrap", type=int, default=0,
                        help="bootstrap resamples for the forward-return intervals (0: off)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 symbols x 20 days, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.symbols, args.days, args.repeat = 2, 20, 1

    import datetime as dt

    from backtester import api, synth
    from backtester.bars import from_frame
    from backtester.execution import run_clusters
    from backtester.merge import merge

    start = dt.date(2024, 1, 2)
    frame = synth.generate(args.symbols, start, start + dt.timedelta(days=args.days), seed=5)
    barset = from_frame(frame, timezone="America/New_York", calendar="XNYS")
    with tempfile.TemporaryDirectory(prefix="bench-outputs-") as scratch:
        config = {
            "name": "busy", "data": {"path": "<frame>", "calendar": "XNYS"},
            "alerts": [{"name": "up_bar", "when": "close > open", "forward": [15, 60, "eod"],
                        "trade": {"side": "long", "take_profit": "1%", "stop_loss": "0.5%",
                                  "max_bars": 60, "overlap": "allow"}}],
            "schedule": {"cluster_by": "month"}, "execution": {"backend": "sequential"},
            "stats": {"bootstrap": args.bootstrap},
            "output": {"dir": str(Path(scratch) / "busy")},
        }
        prep = api.prepare(config, bars=barset)
        cfg, plan = prep.config, prep.plan
        run_clusters(plan, prep.layout.clusters[:1], barset, backend="sequential", n_jobs=1)
        best: dict[str, float] = {}

        def timed(name, call, *args, **kwargs):
            began = time.perf_counter()
            value = call(*args, **kwargs)
            seconds = time.perf_counter() - began
            best[name] = min(best.get(name, seconds), seconds)
            return value

        for _ in range(args.repeat):
            report = timed("clusters", run_clusters, plan, prep.layout.clusters, barset,
                           backend="sequential", n_jobs=1)
            merged = timed("merge", merge, plan, report.results, barset)
            run_stats, equity = timed("statistics", api.statistics, cfg, barset, merged)
            summary = api.summarise(cfg, plan, barset, prep.layout, merged)
            summary["stats"] = run_stats
            timing = api.timing_report(cfg, prep, report, None, None)
            timed("write", api.write_outputs, cfg, merged, summary, run_stats, timing,
                  {"engine": "bench"}, equity=equity)
    total = sum(best.values())
    lines = [
        "# Serial tail on many alerts (bench/outputs.py)", "",
        f"- bars: {barset.n_bars:,} ({args.symbols} symbols x {args.days} days), alerts "
        f"{len(merged.alerts):,}, trades {len(merged.trades):,}, forward rows "
        f"{len(merged.forward):,}; bootstrap resamples: {args.bootstrap or 'off'}",
        f"- best of {args.repeat}; `python bench/outputs.py --symbols {args.symbols} "
        f"--days {args.days} --bootstrap {args.bootstrap} --repeat {args.repeat}`", "",
        "| phase | seconds | share of these phases |", "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {seconds:.3f} | {seconds / total:.1%} |"
              for name, seconds in best.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "outputs.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
