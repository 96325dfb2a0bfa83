"""The peers benchmark: one strategy on the same bars, ours vs vectorbt and backtesting.py.

The strategy (issue 11): long when RSI(14) crosses below 30 (previous >= 30, current < 30),
entry at the next bar's open, take profit 1% and stop loss 0.5% measured from the fill, out at
the open after 60 held bars, one position at a time per symbol, no costs. The bars are
`backtester.synth` 1-minute bars (XNYS sessions of 2024, seed 11), as many symbols as it takes
to reach each size (2M and 10M bars by default), held in memory by every contender:

- **ours**: the long-format DataFrame `synth.generate` returns, through the public API:
  `bars.from_frame` (validation, sessions) then `backtester.run(config, bars=..., write=False)`
  with ``backend: sequential``; everything it returns (alerts, trades, statistics, timing
  report) is computed inside the timed section.
- **vectorbt**: one wide DataFrame per price column (symbols as columns), RSI from TA-Lib
  through `IndicatorFactory.from_talib`, `real_crossed_below(30)`, entries shifted one bar and
  filled at the open, `Portfolio.from_signals` with ``sl_stop``/``tp_stop`` from the fill
  price (``stop_entry_price="fillprice"``); vectorbt has no time limit in `from_signals`, so
  two small `adjust_sl_func_nb`/`adjust_tp_func_nb` kernels set both stops to 0 once 60 bars
  are held, which exits at that bar's open. Its stops first act on the bar after the entry
  bar, so ours runs with ``stops_on_entry_bar: false``.
- **backtesting.py**: one `Backtest` per symbol; the strategy computes TA-Lib's RSI with
  `Strategy.I`, tests the cross in `next()`, buys at market (next open), sets the bracket from
  ``trade.entry_price`` in the `next()` after the fill and closes the trade after 60 held bars
  (the convention `tests/test_peer_backtesting.py` proves equal to ours trade by trade).
  At ~15k bars/s it would need 11 minutes per run at 10M bars, so it gets the first symbols
  up to about `--backtesting-bars` (300k) bars: its rate is per `Backtest`, one per symbol,
  so it does not depend on how many it is given, and its trades are compared on those.

Each contender is timed in the same process, on one core (the process is pinned to one CPU,
`--cores` to change it), indicator time included, best of `--repeat`, after one untimed call
on a small slice that compiles or loads its kernels. The same is done with a tz-aware index
(`America/New_York`) instead of naive exchange-local timestamps. Trades are compared by
(symbol, entry time, exit time): the report says how many each found and how many agree.

A peer that is not installed is reported as missing, with the command that installs it
(``pip install -e '.[bench]'``), and the rest still runs.

Usage::

    python bench/peers.py                       # 2M and 10M bars, naive and tz-aware, best of 3
    python bench/peers.py --bars 2000000 --repeat 5
    python bench/peers.py --quick               # smoke test: 2 symbols x 2 weeks, 1 repetition
    python bench/peers.py --phases              # ours only: where the time goes, phase by phase

``--phases`` wraps each step `bars.from_frame` and `backtester.run` take (through their
modules' globals) with a wall and a CPU clock, and writes ``bench/out/peers-phases.md``.

Outputs: the Markdown report on stdout and in ``bench/out/peers.md``, raw figures in
``bench/out/peers.json``; generated bars are cached in ``bench/out/peers-data/``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

os.environ.setdefault("TQDM_DISABLE", "1")  # backtesting.py's progress bars

import backtester  # noqa: E402
from backtester import bars as bars_module  # noqa: E402
from backtester import synth  # noqa: E402

OUT = BENCH / "out"
TIMEZONE = "America/New_York"
CALENDAR = "XNYS"
SEED = 11
RSI_PERIOD, RSI_LEVEL = 14, 30.0
TAKE_PROFIT, STOP_LOSS, MAX_BARS = 0.01, 0.005, 60
YEAR = ("2024-01-02", "2024-12-31")
QUICK = ("2024-03-04", "2024-03-15")

CONFIG = {
    "name": "peers-rsi-bracket",
    "data": {"path": "<in memory>", "timezone": TIMEZONE, "calendar": CALENDAR},
    "alerts": [{
        "name": "rsi_dip",
        "when": f"crosses_below(rsi({RSI_PERIOD}), {RSI_LEVEL:g})",
        "trade": {"side": "long", "take_profit": f"{TAKE_PROFIT:.0%}",
                  "stop_loss": f"{STOP_LOSS:.1%}", "max_bars": MAX_BARS,
                  "stops_on_entry_bar": False},
    }],
    "execution": {"backend": "sequential", "n_jobs": 1, "compare_sequential": False},
}

PEERS = {"vectorbt": "vectorbt", "backtesting.py": "backtesting"}
INSTALL = "pip install -e '.[bench]'  (or: pip install vectorbt backtesting)"


# --------------------------------------------------------------------------------------------
# Data


def bars_frame(n_bars: int, quick: bool) -> pd.DataFrame:
    """Long-format synthetic bars with at least `n_bars` rows (whole symbols), cached on disk."""
    start, end = QUICK if quick else YEAR
    per_symbol = len(synth.generate(1, start, end, seed=SEED))
    n_symbols = max(1, math.ceil(n_bars / per_symbol))
    folder = OUT / "peers-data"
    path = folder / f"bars-{n_symbols}x-{start}-{end}-seed{SEED}.parquet"
    if path.exists():
        frame = pd.read_parquet(path)
    else:
        frame = synth.generate(n_symbols, start, end, seed=SEED, timezone=TIMEZONE)
        synth.write(frame, path)
    frame["timestamp"] = frame["timestamp"].dt.tz_convert(TIMEZONE)
    return frame


def naive(frame: pd.DataFrame) -> pd.DataFrame:
    """The same bars with naive exchange-local timestamps (how most vendors ship minute bars)."""
    out = frame.copy()
    out["timestamp"] = out["timestamp"].dt.tz_localize(None)
    return out


def wide(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Open/high/low/close as time x symbol frames (every synthetic symbol shares the index)."""
    symbols = list(frame["symbol"].cat.categories)
    n = len(frame) // len(symbols)
    index = pd.DatetimeIndex(frame["timestamp"].iloc[:n], name="timestamp")
    return {name: pd.DataFrame(frame[name].to_numpy().reshape(len(symbols), n).T.copy(),
                               index=index, columns=pd.Index(symbols, name="symbol"))
            for name in ("open", "high", "low", "close")}


def per_symbol(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One backtesting.py-style frame (Open, High, Low, Close, Volume; DatetimeIndex) per symbol."""
    out = {}
    for symbol, rows in frame.groupby("symbol", observed=True, sort=True):
        out[str(symbol)] = pd.DataFrame({
            "Open": rows["open"].to_numpy(), "High": rows["high"].to_numpy(),
            "Low": rows["low"].to_numpy(), "Close": rows["close"].to_numpy(),
            "Volume": rows["volume"].to_numpy(dtype=float),
        }, index=pd.DatetimeIndex(rows["timestamp"]))
    return out


def slow_peer_input(frame: pd.DataFrame, max_bars: int) -> dict[str, pd.DataFrame]:
    """backtesting.py's input: the first symbols, whole, up to about `max_bars` bars (at least
    one symbol; 0: all). It runs at ~15k bars/s, so 10M bars would take 11 minutes per run;
    its rate does not depend on how many symbols it is given (one `Backtest` each)."""
    data = per_symbol(frame)
    if max_bars <= 0:
        return data
    kept, total = {}, 0
    for symbol, df in data.items():
        if kept and total + len(df) > max_bars:
            break
        kept[symbol] = df
        total += len(df)
    return kept


def head(frame: pd.DataFrame, n_symbols: int, n_bars: int) -> pd.DataFrame:
    """The first `n_bars` bars of the first `n_symbols` symbols: the untimed warm-up input."""
    keep = frame["symbol"].cat.codes < n_symbols
    part = frame[keep.to_numpy()]
    part = part.groupby("symbol", observed=True, sort=True).head(n_bars).reset_index(drop=True)
    part["symbol"] = part["symbol"].cat.remove_unused_categories()
    return part


# --------------------------------------------------------------------------------------------
# Contenders: each takes its own input and returns the trades as (symbol, entry, exit) stamps.

Trades = pd.DataFrame   # columns symbol, entry_time, exit_time (UTC ns), closed (bool)


def run_ours(frame: pd.DataFrame) -> Trades:
    barset = bars_module.from_frame(frame, timezone=TIMEZONE, calendar=CALENDAR)
    result = backtester.run(CONFIG, bars=barset, write=False)
    trades = result.trades
    return pd.DataFrame({
        "symbol": trades["symbol"].astype(str).to_numpy(),
        "entry_time": _utc_ns(trades["entry_time"]),
        "exit_time": _utc_ns(trades["exit_time"]),
        "closed": (trades["reason"] != "end_of_data").to_numpy(),
    })


def _utc_ns(values) -> np.ndarray:
    index = pd.DatetimeIndex(values)
    if index.tz is None:
        index = index.tz_localize(TIMEZONE)
    return index.tz_convert("UTC").as_unit("ns").asi8


def vectorbt_runner() -> Callable[[dict[str, pd.DataFrame]], Trades]:
    import vectorbt as vbt
    from numba import njit

    rsi_factory = vbt.IndicatorFactory.from_talib("RSI")

    @njit(cache=True)
    def time_exit_sl_nb(c, max_bars):
        # Both stops at 0 from the fill: whichever side of the fill the bar opens on, one of
        # them is gapped through and fills at the open, as a market exit at that open would.
        if c.init_i >= 0 and c.i - c.init_i >= max_bars:
            return 0.0, False
        return c.curr_stop, c.curr_trail

    @njit(cache=True)
    def time_exit_tp_nb(c, max_bars):
        if c.init_i >= 0 and c.i - c.init_i >= max_bars:
            return 0.0
        return c.curr_stop

    def run(data: dict[str, pd.DataFrame]) -> Trades:
        close = data["close"]
        signal = rsi_factory.run(close, timeperiod=RSI_PERIOD).real_crossed_below(RSI_LEVEL)
        entries = signal.vbt.fshift(1, fill_value=False)
        portfolio = vbt.Portfolio.from_signals(
            close, entries, price=data["open"], open=data["open"], high=data["high"],
            low=data["low"], size=1.0, init_cash=np.inf, fees=0.0,
            sl_stop=STOP_LOSS, tp_stop=TAKE_PROFIT, stop_entry_price="fillprice",
            adjust_sl_func_nb=time_exit_sl_nb, adjust_sl_args=(MAX_BARS,),
            adjust_tp_func_nb=time_exit_tp_nb, adjust_tp_args=(MAX_BARS,), freq="1min",
        )
        records = portfolio.trades.values
        stamps = _utc_ns(close.index)
        return pd.DataFrame({
            "symbol": np.asarray(close.columns, dtype=object)[records["col"]],
            "entry_time": stamps[records["entry_idx"]],
            "exit_time": stamps[records["exit_idx"]],
            "closed": records["status"] == 1,
        })

    return run


def backtesting_strategy(size: float = 1):
    """The strategy as a backtesting.py `Strategy` subclass buying `size` (shares if >= 1, else
    that fraction of the equity)."""
    import talib
    from backtesting import Strategy

    class RsiBracket(Strategy):
        def init(self):
            self.rsi = self.I(talib.RSI, self.data.Close, RSI_PERIOD, name="rsi", plot=False)

        def next(self):
            for trade in self.trades:
                if trade.sl is None:   # the bar after the fill: bracket from the fill price
                    trade.sl = trade.entry_price * (1 - STOP_LOSS)
                    trade.tp = trade.entry_price * (1 + TAKE_PROFIT)
                if len(self.data) - trade.entry_bar >= MAX_BARS:
                    trade.close()
            if (not self.position and not self.orders and self.rsi[-2] >= RSI_LEVEL
                    and self.rsi[-1] < RSI_LEVEL):
                self.buy(size=size)

    return RsiBracket


def backtesting_runner() -> Callable[[dict[str, pd.DataFrame]], Trades]:
    from backtesting import Backtest

    strategy = backtesting_strategy()

    def run(data: dict[str, pd.DataFrame]) -> Trades:
        parts = []
        for symbol, df in data.items():
            test = Backtest(df, strategy, cash=1e12, commission=0, trade_on_close=False,
                            exclusive_orders=False, finalize_trades=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stats = test.run()
            trades = stats["_trades"]
            parts.append(pd.DataFrame({
                "symbol": symbol, "entry_time": _utc_ns(trades["EntryTime"]),
                "exit_time": _utc_ns(trades["ExitTime"]), "closed": True,
            }))
        return pd.concat(parts, ignore_index=True)

    return run


def backtesting_stats(df: pd.DataFrame) -> dict[str, float]:
    """backtesting.py's return and drawdown figures for one symbol (for comparing statistics)."""
    from backtesting import Backtest

    test = Backtest(df, backtesting_strategy(0.9999), cash=1e9, commission=0, trade_on_close=False,
                    exclusive_orders=False, finalize_trades=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = test.run()
    trades = stats["_trades"]
    compounded = float(np.prod(1 + trades["ReturnPct"].to_numpy()) - 1) if len(trades) else 0.0
    return {"trades": int(len(trades)), "return_pct_of_equity": float(stats["Return [%]"]),
            "max_drawdown_pct_of_equity": float(stats["Max. Drawdown [%]"]),
            "win_rate_pct": float(stats["Win Rate [%]"]),
            "trade_returns_compounded_pct": 100 * compounded,
            "avg_trade_pct": float(stats["Avg. Trade [%]"])}


# --------------------------------------------------------------------------------------------
# Where our time goes

# (module, function, label): the steps of `run_ours`, as `bars.from_frame` and `api.run` call
# them through their modules' globals. Indented labels are parts of the one above.
PHASES = [
    ("bars", "from_frame", "bars.from_frame"),
    ("bars", "_part_from_frame", "  columns to arrays (+ localize naive stamps)"),
    ("bars", "_frame_digest", "  provenance SHA-256"),
    ("bars", "_check_values", "  value checks"),
    ("bars", "_check_order", "  order checks"),
    ("bars", "_bar_interval", "  bar interval"),
    ("bars", "_sessions_for", "  session table + locate"),
    ("api", "prepare", "api.prepare"),
    ("api", "load_config", "  config"),
    ("api", "compile_plan", "  plan"),
    ("api", "schedule", "  schedule (cluster layout, halos)"),
    ("api", "run_task", "warm-up cluster (kernels loaded)"),
    ("api", "run_clusters", "clusters (indicators, rules, trades)"),
    ("api", "merge", "merge"),
    ("api", "timing_report", "timing report"),
    ("api", "summarise", "summary"),
    ("stats", "compute_stats", "statistics"),
    ("stats", "stats_frame", "statistics frame"),
    ("api", "make_manifest", "manifest"),
]


def phase_profile(frame: pd.DataFrame, repeat: int) -> list[tuple[str, float, float]]:
    """(label, wall s, CPU s) per phase of `run_ours(frame)`, from its fastest of `repeat`
    runs, plus the total; each phase's function is wrapped with two clocks for the duration."""
    from backtester import api, stats

    modules = {"bars": bars_module, "api": api, "stats": stats}
    clocks: dict[str, list[float]] = {}
    originals = []

    def timed(label: str, function: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent = clocks.setdefault(label, [0.0, 0.0])
                spent[0] += time.perf_counter() - wall
                spent[1] += time.process_time() - cpu
        return wrapper

    for module, name, label in PHASES:
        original = getattr(modules[module], name)
        originals.append((modules[module], name, original))
        setattr(modules[module], name, timed(label, original))
    try:
        run_ours(frame)
        best = None
        for _ in range(repeat):
            clocks.clear()
            wall, cpu = time.perf_counter(), time.process_time()
            run_ours(frame)
            total = (time.perf_counter() - wall, time.process_time() - cpu)
            if best is None or total[0] < best[1][0]:
                best = ({label: tuple(v) for label, v in clocks.items()}, total)
    finally:
        for module, name, original in originals:
            setattr(module, name, original)
    phases, total = best
    rows = [(label, *phases.get(label, (0.0, 0.0))) for _, _, label in PHASES]
    top = sum(w for label, w, _ in rows if not label.startswith(" "))
    top_cpu = sum(c for label, _, c in rows if not label.startswith(" "))
    rows.append(("(the rest: glue, result frames)", total[0] - top, total[1] - top_cpu))
    rows.append(("total", *total))
    return rows


def render_phases(results: dict[tuple[int, str], list]) -> str:
    keys = list(results)
    lines = ["# Where ours spends its time (one core, best of the runs)", "",
             "| phase | " + " | ".join(f"{bars:,} {variant} wall s / cpu s"
                                       for bars, variant in keys) + " |",
             "| --- |" + " ---: |" * len(keys)]
    labels = [row[0] for row in results[keys[0]]]
    for i, label in enumerate(labels):
        cells = []
        for key in keys:
            _, wall, cpu = results[key][i]
            total = results[key][-1][1]
            cells.append(f"{wall:.3f} / {cpu:.3f} ({wall / total:.0%})")
        shown = label.replace("  ", "&nbsp;&nbsp;", 1) if label.startswith("  ") else label
        lines.append(f"| {shown} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Timing and comparison


def best_of(function: Callable, argument, repeat: int) -> tuple[float, float, Trades]:
    """Fastest wall time, fastest CPU time (this process, all threads) and the result."""
    best, best_cpu, result = math.inf, math.inf, None
    for _ in range(repeat):
        began, began_cpu = time.perf_counter(), time.process_time()
        result = function(argument)
        best = min(best, time.perf_counter() - began)
        best_cpu = min(best_cpu, time.process_time() - began_cpu)
    return best, best_cpu, result


def agreement(ours: Trades, theirs: Trades) -> tuple[int, int]:
    """(closed trades of `theirs` that ours has too, same symbol, entry and exit; their total)."""
    closed = theirs[theirs["closed"]]
    key = ["symbol", "entry_time", "exit_time"]
    same = closed[key].merge(ours[key], on=key, how="inner")
    return len(same), len(closed)


def available_peers(wanted: list[str]) -> dict[str, str | None]:
    """Peer name -> None when importable, else why not."""
    found = {}
    for name in wanted:
        try:
            importlib.import_module(PEERS[name])
            found[name] = None
        except Exception as exc:  # ImportError, or a broken install
            found[name] = f"{type(exc).__name__}: {exc}"
    return found


def pin_to_cores(n: int) -> str:
    if n <= 0 or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    cpus = sorted(os.sched_getaffinity(0))[:n]
    os.sched_setaffinity(0, cpus)
    return f"pinned to CPU {', '.join(map(str, cpus))}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", default="2000000,10000000",
                        help="comma-separated sizes (bars, rounded up to whole symbols)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--peer-repeat", type=int, default=1,
                        help="repetitions for backtesting.py (slow; its rate barely varies)")
    parser.add_argument("--peers", default=",".join(PEERS), help="which peers to run")
    parser.add_argument("--variants", default="naive,tz-aware", help="timestamp variants")
    parser.add_argument("--backtesting-bars", type=int, default=300_000,
                        help="give backtesting.py only the first symbols, up to about this "
                        "many bars (0: all); its rate and trades are for those symbols")
    parser.add_argument("--cores", type=int, default=1, help="CPUs to pin to (0: no pinning)")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny data, 1 run")
    parser.add_argument("--phases", action="store_true",
                        help="only ours, timed phase by phase (where the time goes)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.bars.split(",") if s.strip()]
    repeat, peer_repeat = args.repeat, args.peer_repeat
    if args.quick:
        sizes, repeat, peer_repeat = [2 * 3900], 1, 1
    wanted = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = set(wanted) - set(PEERS)
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(sorted(unknown))} (one of {', '.join(PEERS)})")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    pinned = pin_to_cores(args.cores)
    if args.phases:
        results = {}
        for size in sizes:
            aware = bars_frame(size, args.quick)
            for variant in variants:
                frame = aware if variant == "tz-aware" else naive(aware)
                run_ours(head(frame, 2, 2000))
                results[(len(frame), variant)] = phase_profile(frame, repeat)
        report = render_phases(results)
        print(f"{pinned}\n\n{report}")
        OUT.mkdir(exist_ok=True)
        (OUT / "peers-phases.md").write_text(report, encoding="utf-8")
        return 0

    missing = available_peers(wanted)
    for name, why in missing.items():
        if why is not None:
            print(f"peer {name} is missing ({why}); install it with: {INSTALL}", flush=True)
    runners: dict[str, Callable] = {}
    if "vectorbt" in missing and missing["vectorbt"] is None:
        runners["vectorbt"] = vectorbt_runner()
    if "backtesting.py" in missing and missing["backtesting.py"] is None:
        runners["backtesting.py"] = backtesting_runner()
    versions = {"backtester": backtester.__version__ if hasattr(backtester, "__version__")
                else "", "numpy": np.__version__, "pandas": pd.__version__}
    for name in runners:
        versions[name] = importlib.import_module(PEERS[name]).__version__

    rows, raw = [], []
    for size in sizes:
        aware = bars_frame(size, args.quick)
        for variant in variants:
            frame = aware if variant == "tz-aware" else naive(aware)
            n_bars = len(frame)
            inputs = {"ours": frame}
            if "vectorbt" in runners:
                inputs["vectorbt"] = wide(frame)
            if "backtesting.py" in runners:
                inputs["backtesting.py"] = slow_peer_input(frame, args.backtesting_bars)
            warm = head(frame, 2, 2000)  # two columns: vectorbt compiles per shape kind
            warm_inputs = {"ours": warm, "vectorbt": wide(warm),
                           "backtesting.py": per_symbol(warm)}
            results = {}
            for name, function in [("ours", run_ours), *runners.items()]:
                function(warm_inputs[name])   # compile / load kernels, untimed
                times = peer_repeat if name == "backtesting.py" else repeat
                seconds, cpu, trades = best_of(function, inputs[name], times)
                results[name] = (seconds, cpu, trades)
                used = sum(len(df) for df in inputs[name].values()) if isinstance(
                    inputs[name], dict) and name == "backtesting.py" else n_bars
                print(f"  {used:,} bars {variant:8s} {name:15s} {seconds:8.3f} s "
                      f"(cpu {cpu:.3f} s) "
                      f"{used / seconds / 1e6:8.2f} M bars/s  {len(trades):,} trades",
                      flush=True)
            ours_seconds, ours_cpu, ours_trades = results["ours"]
            for name, (seconds, cpu, trades) in results.items():
                same, total = agreement(ours_trades, trades)
                symbols = frame["symbol"].nunique() if name != "backtesting.py" else len(
                    inputs[name])
                peer_bars = n_bars if name != "backtesting.py" else sum(
                    len(df) for df in inputs[name].values())
                record = {
                    "bars": peer_bars, "symbols": int(symbols),
                    "variant": variant, "contender": name, "seconds": seconds,
                    "cpu_seconds": cpu,
                    "bars_per_second": peer_bars / seconds,
                    "trades": int(trades["closed"].sum()),
                    "open_at_end": int((~trades["closed"]).sum()),
                    "agree_with_ours": same,
                    "ours_vs": (n_bars / ours_seconds) / (peer_bars / seconds),
                    "ours_vs_cpu": (n_bars / ours_cpu) / (peer_bars / cpu),
                }
                raw.append(record)
                rows.append(record)
        del aware

    stats_note = ""
    if "backtesting.py" in runners:
        sample = per_symbol(naive(bars_frame(sizes[0], args.quick)))
        first = next(iter(sample))
        figures = backtesting_stats(sample[first])
        stats_note = (f"backtesting.py on {first} alone ({len(sample[first]):,} bars, naive index, "
                      f"all-in, 1e9 cash, no costs): " + ", ".join(f"{k} {v:.6g}" for k, v
                                                                in figures.items()))
        raw.append({"backtesting_stats": {"symbol": first, **figures}})

    report = render(rows, missing, pinned, repeat, peer_repeat, versions, stats_note)
    print(report)
    OUT.mkdir(exist_ok=True)
    (OUT / "peers.md").write_text(report, encoding="utf-8")
    (OUT / "peers.json").write_text(json.dumps(raw, indent=2), encoding="utf-8")
    return 0


def render(rows, missing, pinned, repeat, peer_repeat, versions, stats_note) -> str:
    lines = [
        "# Peers: RSI(14) cross below 30, next-open entry, TP 1% / SL 0.5% from the fill, "
        "60-bar limit",
        "",
        f"One process, {pinned}; best of {repeat} (backtesting.py: {peer_repeat}); indicator "
        f"time included; Python {platform.python_version()}, "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".",
        "",
        "| bars | symbols | index | contender | wall s | cpu s | M bars/s (wall) | ours is "
        "(wall; cpu) | trades | open at end | agree with ours |",
        "| ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        faster = "-" if r["contender"] == "ours" else (
            f"{r['ours_vs']:.1f}x; {r['ours_vs_cpu']:.1f}x")
        agree = "-" if r["contender"] == "ours" else f"{r['agree_with_ours']:,} / {r['trades']:,}"
        lines.append(
            f"| {r['bars']:,} | {r['symbols']} | {r['variant']} | {r['contender']} | "
            f"{r['seconds']:.3f} | {r['cpu_seconds']:.3f} | {r['bars_per_second'] / 1e6:.2f} | {faster} | {r['trades']:,} | "
            f"{r['open_at_end']} | {agree} |")
    for name, why in missing.items():
        if why is not None:
            lines.append(f"\n{name}: missing ({why}); install with `{INSTALL}`")
    lines += ["", "`ours is`: our bars/s over the peer's, by wall time and by CPU time (the "
              "process's, all threads; on a shared machine wall time includes waiting for a "
              "core). "
              "`agree with ours`: the peer's closed trades that ours has too (same symbol, "
              "entry and exit bar). `open at end`: trades still open when the data ends (ours "
              "closes them at the last close, backtesting.py drops them, vectorbt leaves them "
              "open)."]
    if stats_note:
        lines += ["", stats_note]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
