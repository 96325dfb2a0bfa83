"""The command line: `backtester run | validate | synth | docs | regress | compare`.

Bad input (config, rule, data, a flag) prints one line on stderr,
`file: field: what is wrong (hint)`, and exits with status 2: no traceback, no output folder.
The rule with a caret under the offending column follows that line only on a terminal or with
`--verbose`, so scripts reading stderr always get exactly one line.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .errors import BacktestError, ClusterError, OutputError, Terminated, WorkerLost

EXIT_BAD_INPUT = 2


class _Progress:
    """A one-line progress bar over clusters on a terminal; silent otherwise.

    Its clock starts at `start()`, which the run calls just before it submits the first
    cluster, so loading data and the sequential comparison run do not skew bars/s and ETA.
    """

    def __init__(self, stream=None):
        self.stream = stream = sys.stderr if stream is None else stream
        self.enabled = stream.isatty()
        self.done = self.bars = 0
        self.began: float | None = None

    def start(self) -> None:
        self.began = time.perf_counter()

    def __call__(self, result, total: int) -> None:
        if not self.enabled:
            return
        if self.began is None:   # a caller that never said when work began
            self.began = time.perf_counter()
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

    def phase(self, name: str, detail: str = "") -> _Phase:
        """A context for one serial phase after the clusters (merging, statistics, writing)."""
        return _Phase(self.stream, self.enabled, name, detail)


NOTICE_SECONDS = 1.0   # a phase that runs longer than this is announced on stderr


class _Phase:
    """Announces a phase of the run on stderr once it has run for `NOTICE_SECONDS`: one line
    (``backtester: statistics (283,800 alerts, 283,795 trades)...``), completed in place with
    its duration on a terminal. Quick phases print nothing."""

    def __init__(self, stream, tty: bool, name: str, detail: str):
        self.stream, self.tty = stream, tty
        self.text = f"backtester: {name}" + (f" ({detail})" if detail else "") + "..."
        self.shown = False
        self.lock = threading.Lock()
        self.timer = threading.Timer(NOTICE_SECONDS, self._show)
        self.timer.daemon = True

    def _show(self) -> None:
        with self.lock:
            self.shown = True
            self.stream.write(self.text + ("" if self.tty else "\n"))
            self.stream.flush()

    def __enter__(self) -> _Phase:
        self.began = time.perf_counter()
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.cancel()
        with self.lock:
            if self.shown and self.tty:
                self.stream.write(f" {time.perf_counter() - self.began:.1f}s\n")
                self.stream.flush()


def _run(args: argparse.Namespace) -> int:
    from .api import run

    result = run(args.config, backend=args.backend, n_jobs=args.n_jobs, out=args.out,
                 compare_sequential=args.compare_sequential, cluster_by=args.cluster_by,
                 address=args.address, progress=_Progress(), overrides_from="command line")
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
        if t.get("verdict"):
            rows.append(("verdict", t["verdict"]))
    rows.append(("outputs", str(result.output_dir)))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if t.get("identical") is False:
        print("error: parallel and sequential results differ", file=sys.stderr)
        return 1
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .bars import check_source
    from .config import load_config
    from .errors import ConfigError
    from .plan import compile_plan

    cfg = load_config(args.config)
    plan = compile_plan(cfg)
    if not os.path.exists(cfg.data.path):
        raise ConfigError(cfg.source, "data.path", f"no such file or folder: {cfg.data.path}",
                          "run from the folder the path is relative to, or fix the path")
    files = check_source(cfg.data.path)
    print(f"{cfg.source}: ok ({len(cfg.alerts)} alert{'s' * (len(cfg.alerts) != 1)}, "
          f"data: {len(files)} file{'s' * (len(files) != 1)} in {cfg.data.path})")
    print(plan.describe())
    return 0


def _synth(args: argparse.Namespace) -> int:
    from . import synth

    symbols, start, end = _synth_arguments(args)
    try:
        frame = synth.generate(symbols, start, end, seed=args.seed, calendar=args.calendar,
                               timezone=args.timezone)
    except ValueError as exc:
        flag = "--calendar" if str(exc).startswith("unknown calendar") else "--start/--end"
        raise BacktestError(f"{flag}: {exc}") from None
    try:
        synth.write(frame, args.out)
    except OSError as exc:
        raise BacktestError(f"--out: {args.out}: cannot write: {exc.strerror or exc}") from None
    print(f"wrote {len(frame):,} bars of {frame['symbol'].nunique()} symbols to {args.out}")
    return 0


def _synth_arguments(args: argparse.Namespace) -> tuple[list[str] | int, dt.date, dt.date]:
    """`synth`'s flags checked before any work: symbols, dates, time zone and `--out`."""
    from .sessions import check_timezone

    text = (args.symbols or "").strip()
    if text.isdigit():
        symbols: list[str] | int = int(text)
        if symbols < 1:
            raise BacktestError(f"--symbols: expected at least 1 symbol, got {text}")
    else:
        symbols = [name.strip() for name in text.split(",")]
        if not text or not all(symbols):
            raise BacktestError(f"--symbols: expected a count or comma-separated names, got "
                                f"{args.symbols!r}")
        if len(set(symbols)) != len(symbols):
            raise BacktestError(f"--symbols: names must be unique, got {args.symbols!r}")
    dates = []
    for flag, value in (("--start", args.start), ("--end", args.end)):
        try:
            dates.append(dt.date.fromisoformat(value))
        except ValueError:
            raise BacktestError(f"{flag}: expected a date like 2024-01-02, got {value!r}") \
                from None
    start, end = dates
    if end < start:
        raise BacktestError(f"--end: {end} is before --start {start} (swap them?)")
    try:
        check_timezone(args.timezone)
    except ValueError as exc:
        raise BacktestError(f"--timezone: {exc}") from None
    _check_synth_out(args.out)
    return symbols, start, end


def _check_synth_out(out: str) -> None:
    """`synth` replaces a .parquet/.csv file, or a folder of one Parquet file per symbol; it
    refuses anything else there, and a target it could not create."""
    path = Path(os.path.abspath(out))
    suffix = path.suffix.lower()
    if suffix not in ("", ".parquet", ".pq", ".csv"):
        raise BacktestError(f"--out: {out}: cannot write '{suffix}' files (use .parquet, .csv "
                            f"or a folder path)")
    if path.is_symlink() or (path.exists() and (suffix != "") != path.is_file()):
        raise BacktestError(f"--out: {out}: exists and is not a {'file' if suffix else 'folder'}"
                            f" of bars; refusing to replace it (choose another --out)")
    if suffix == "" and path.is_dir():
        foreign = [name for name in sorted(os.listdir(path))
                   if not name.endswith(".parquet") or not (path / name).is_file()]
        if foreign:
            raise BacktestError(f"--out: {out}: exists and holds more than synthetic bars "
                                f"({', '.join(foreign[:3])}); refusing to replace it "
                                f"(choose another --out)")
    parent = path.parent
    while not parent.exists() and parent.parent != parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BacktestError(f"--out: {out}: {parent} is not a folder")
    if path.parent == path:
        raise BacktestError(f"--out: {out}: not a file or folder name")


def _scale(args: argparse.Namespace) -> int:
    from .scaling import run_scale_command

    return run_scale_command(args.config, args.backends, args.jobs, args.out, repeat=args.repeat)


def _docs(args: argparse.Namespace) -> int:
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


class _FlagError(BacktestError):
    """A bad command line: argparse's complaint, as the one line every bad input gets."""


class _Parser(argparse.ArgumentParser):
    """argparse, whose errors are one line on stderr with exit status 2 (its own print the
    usage block first), raised so that `main` returns the status rather than exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise _FlagError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="backtester", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = _Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true",
                        help="after a bad-input error, also show its context (the rule with a "
                             "caret); shown anyway on a terminal")

    p = sub.add_parser("run", parents=[common],
                       help="run a backtest config and write its results")
    p.add_argument("config")
    p.add_argument("--backend", choices=["auto", "sequential", "threading", "loky",
                                         "multiprocessing", "dask"])
    p.add_argument("--n-jobs", type=int, dest="n_jobs")
    p.add_argument("--out", help="results folder (default: the config's output.dir)")
    p.add_argument("--cluster-by", dest="cluster_by",
                   help="day, week, month, quarter, year, auto, \"{bars: N}\" or \"{count: N}\"")
    p.add_argument("--address", help="a Dask scheduler to run on (tcp://host:8786); implies "
                                     "--backend dask")
    cmp = p.add_mutually_exclusive_group()
    cmp.add_argument("--compare-sequential", dest="compare_sequential", action="store_true",
                     default=None, help="also run sequentially and compare (timing report)")
    cmp.add_argument("--no-compare-sequential", dest="compare_sequential", action="store_false")
    p.set_defaults(func=_run)

    p = sub.add_parser("validate", parents=[common],
                       help="check a config and print its compiled rules")
    p.add_argument("config")
    p.set_defaults(func=_validate)

    p = sub.add_parser("synth", parents=[common],
                       help="generate deterministic synthetic 1-minute bars")
    p.add_argument("--symbols", default="5", help="a count, or comma-separated names")
    p.add_argument("--start", default="2024-01-02")
    p.add_argument("--end", default="2024-07-31")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--calendar", default="XNYS")
    p.add_argument("--timezone", default="America/New_York")
    p.add_argument("--out", required=True, help=".parquet, .csv, or a folder (one file per symbol)")
    p.set_defaults(func=_synth)

    p = sub.add_parser("scale", parents=[common],
                       help="run a config at several backends and n_jobs; table + chart")
    p.add_argument("config")
    p.add_argument("--backends", default="threading,loky", help="comma-separated engines")
    p.add_argument("--jobs", default="1,2", help="comma-separated n_jobs values")
    p.add_argument("--repeat", type=int, default=1, help="best of this many runs per setting")
    p.add_argument("--out", help="folder for scaling.md and scaling.svg")
    p.set_defaults(func=_scale)

    p = sub.add_parser("docs", parents=[common],
                       help="regenerate docs/indicators.md from the registry")
    p.add_argument("--out", default="docs/indicators.md")
    p.set_defaults(func=_docs)

    p = sub.add_parser("regress", parents=[common],
                       help="re-run every config and compare with the golden results")
    p.add_argument("--update", action="store_true",
                   help="rewrite the golden results instead of comparing (review their diff)")
    p.add_argument("--configs", default="configs", help="folder of *.yaml configs")
    p.add_argument("--golden", default="tests/golden", help="folder of golden results")
    p.set_defaults(func=_regress)

    p = sub.add_parser("compare", parents=[common],
                       help="diff the results of two runs (as regress does)")
    p.add_argument("run_a", metavar="RUN_A", help="a results folder")
    p.add_argument("run_b", metavar="RUN_B", help="another results folder")
    p.set_defaults(func=_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except _FlagError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_INPUT
    with _terminate_like_ctrl_c(), _log_lines_to_stderr():
        return _dispatch(args)


@contextlib.contextmanager
def _terminate_like_ctrl_c():
    """SIGTERM raises `Terminated` (a `KeyboardInterrupt`) for the block, so that a run stopped
    by `kill`, a job scheduler or a container's shutdown cleans up exactly as Ctrl-C does:
    workers stopped, temporary files removed, the results folder left as it was. A second
    SIGTERM during that clean-up ends the process at once (its default action). Only the main
    thread can take signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _log_lines_to_stderr():
    """The package's log lines (such as what `sweep_leftovers` removed) as plain lines on
    stderr, unless the application set up logging itself."""
    logger = logging.getLogger("backtester")
    if logger.handlers or logging.getLogger().handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except BacktestError as exc:
        print(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, file=sys.stderr)
        detail = getattr(exc, "detail", None)
        if detail and (getattr(args, "verbose", False) or sys.stderr.isatty()):
            print(detail, file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ClusterError, WorkerLost, OutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Terminated:
        print("terminated: no results written", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("interrupted: no results written", file=sys.stderr)
        return 130
