"""The command line: `backtester run | validate | synth | docs | regress | compare`.

Bad input (config, rule, data) prints one line on stderr, `file: field: what is wrong (hint)`,
and exits with status 2: no traceback, no output folder.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from .errors import BacktestError, ClusterError, WorkerLost

EXIT_BAD_INPUT = 2


class _Progress:
    """A one-line progress bar over clusters on a terminal; silent otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.enabled = stream.isatty()
        self.done = self.bars = 0
        self.began = time.perf_counter()

    def __call__(self, result, total: int) -> None:
        if not self.enabled:
            return
        self.done += 1
        self.bars += result.n_bars
        elapsed = time.perf_counter() - self.began
        rate = self.bars / elapsed if elapsed > 0 else 0.0
        eta = elapsed / self.done * (total - self.done)
        width = 30
        filled = int(width * self.done / total)
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{total} "
                          f"clusters  {rate:,.0f} bars/s  ETA {eta:4.1f}s ")
        if self.done == total:
            self.stream.write("\n")
        self.stream.flush()


def _run(args: argparse.Namespace) -> int:
    from .api import run

    result = run(args.config, backend=args.backend, n_jobs=args.n_jobs, out=args.out,
                 compare_sequential=args.compare_sequential, cluster_by=args.cluster_by,
                 progress=_Progress())
    t, s = result.timing, result.summary
    rows = [("config", result.config.source), ("bars", f"{s['bars']:,}"),
            ("symbols", str(len(s["symbols"]))), ("clusters", str(s["clusters"]))]
    rows += [(f"fires: {name}", str(count)) for name, count in s["fires"].items()]
    if len(result.trades):
        rows.append(("trades", str(len(result.trades))))
    par = t["parallel"]
    rows.append(("parallel", f"{par['total_seconds']:.2f}s ({par['backend']}, "
                             f"n_jobs={par['n_jobs']}, start-up {par['startup_seconds']:.2f}s)"))
    if t.get("sequential"):
        rows.append(("sequential", f"{t['sequential']['total_seconds']:.2f}s"))
        rows.append(("speedup", f"{t['speedup']:.2f}x (steady state {t['speedup_steady']:.2f}x)"))
        rows.append(("identical", str(t["identical"]).lower()))
    rows.append(("outputs", str(result.output_dir)))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if t.get("identical") is False:
        print("error: parallel and sequential results differ", file=sys.stderr)
        return 1
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .config import load_config
    from .plan import compile_plan

    cfg = load_config(args.config)
    plan = compile_plan(cfg)
    print(f"{cfg.source}: ok ({len(cfg.alerts)} alert{'s' * (len(cfg.alerts) != 1)})")
    print(plan.describe())
    return 0


def _synth(args: argparse.Namespace) -> int:
    from . import synth

    symbols = args.symbols.split(",") if args.symbols and not args.symbols.isdigit() \
        else int(args.symbols or 5)
    frame = synth.generate(symbols, args.start, args.end, seed=args.seed,
                           calendar=args.calendar, timezone=args.timezone)
    synth.write(frame, args.out)
    print(f"wrote {len(frame):,} bars of {frame['symbol'].nunique()} symbols to {args.out}")
    return 0


def _scale(args: argparse.Namespace) -> int:
    from .scaling import run_scale_command

    return run_scale_command(args.config, args.backends, args.jobs, args.out, repeat=args.repeat)


def _docs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import indicators

    path = Path(args.out)
    path.write_text(indicators.render_docs(), encoding="utf-8")
    print(f"wrote {path}")
    return 0


def _regress(args: argparse.Namespace) -> int:
    from .regress import regress

    return regress(args.configs, args.golden, update=args.update)


def _compare(args: argparse.Namespace) -> int:
    from .regress import compare

    return compare(args.run_a, args.run_b)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backtester", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a backtest config and write its results")
    p.add_argument("config")
    p.add_argument("--backend", choices=["auto", "sequential", "threading", "loky",
                                         "multiprocessing", "dask"])
    p.add_argument("--n-jobs", type=int, dest="n_jobs")
    p.add_argument("--out", help="results folder (default: the config's output.dir)")
    p.add_argument("--cluster-by", dest="cluster_by", help="day, week, month, quarter, year, auto")
    cmp = p.add_mutually_exclusive_group()
    cmp.add_argument("--compare-sequential", dest="compare_sequential", action="store_true",
                     default=None, help="also run sequentially and compare (timing report)")
    cmp.add_argument("--no-compare-sequential", dest="compare_sequential", action="store_false")
    p.set_defaults(func=_run)

    p = sub.add_parser("validate", help="check a config and print its compiled rules")
    p.add_argument("config")
    p.set_defaults(func=_validate)

    p = sub.add_parser("synth", help="generate deterministic synthetic 1-minute bars")
    p.add_argument("--symbols", default="5", help="a count, or comma-separated names")
    p.add_argument("--start", default="2024-01-02")
    p.add_argument("--end", default="2024-07-31")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--calendar", default="XNYS")
    p.add_argument("--timezone", default="America/New_York")
    p.add_argument("--out", required=True, help=".parquet, .csv, or a folder (one file per symbol)")
    p.set_defaults(func=_synth)

    p = sub.add_parser("scale", help="run a config at several backends and n_jobs; table + chart")
    p.add_argument("config")
    p.add_argument("--backends", default="threading,loky", help="comma-separated engines")
    p.add_argument("--jobs", default="1,2", help="comma-separated n_jobs values")
    p.add_argument("--repeat", type=int, default=1, help="best of this many runs per setting")
    p.add_argument("--out", help="folder for scaling.md and scaling.svg")
    p.set_defaults(func=_scale)

    p = sub.add_parser("docs", help="regenerate docs/indicators.md from the registry")
    p.add_argument("--out", default="docs/indicators.md")
    p.set_defaults(func=_docs)

    p = sub.add_parser("regress", help="re-run every config and compare with the golden results")
    p.add_argument("--update", action="store_true",
                   help="rewrite the golden results instead of comparing (review their diff)")
    p.add_argument("--configs", default="configs", help="folder of *.yaml configs")
    p.add_argument("--golden", default="tests/golden", help="folder of golden results")
    p.set_defaults(func=_regress)

    p = sub.add_parser("compare", help="diff the results of two runs (as regress does)")
    p.add_argument("run_a", metavar="RUN_A", help="a results folder")
    p.add_argument("run_b", metavar="RUN_B", help="another results folder")
    p.set_defaults(func=_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BacktestError as exc:
        print(str(exc), file=sys.stderr)
        detail = getattr(exc, "detail", None)
        if detail:
            print(detail, file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ClusterError, WorkerLost) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: no results written", file=sys.stderr)
        return 130
