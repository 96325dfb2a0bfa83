"""Evaluate one cluster: indicators, rule masks, candidate alerts and their outcomes.

`run_cluster(plan, cluster, bars, sessions)` is a pure function of its arguments: it reads no
files, touches no globals and returns plain numpy arrays, so it gives the same bits in a thread,
a process or on another machine. `bars` is the cluster's slice `[read_start, read_end)` of the
symbol's bars.

Candidates are every bar in the signal range where the rule is true and the alert's time
filters allow it; cooldowns, once-per-day and rearming are resolved later in the merge, because
they depend on what happened in earlier clusters. Each candidate also gets its forward returns
and (when the alert has a `trade:` block) its trade simulated as if it were taken.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from . import expr, fused, trades
from .bars import SymbolBars
from .plan import AlertPlan, Plan
from .schedule import Cluster
from .sessions import SessionTable, local_wall_ns

MINUTE_NS = 60 * 10**9


@dataclass(frozen=True)
class AlertEvents:
    """Candidate events of one alert in one cluster (rows are absolute rows of the symbol)."""

    alert: int
    row: np.ndarray                      # int64
    timestamp: np.ndarray                # int64 UTC ns
    session: np.ndarray                  # int64 session index (for once_per_day)
    values: dict[str, np.ndarray]        # close and the rule's indicator values at the signal bar
    forward: dict[str, np.ndarray]
    trades: dict[str, np.ndarray] | None  # entry/exit rows absolute, times in ns
    rearm_runs: np.ndarray               # (k, 2) int64: first/last timestamp of each run of bars
                                         # in the signal range where the rearm rule is true


@dataclass(frozen=True)
class ClusterResult:
    cluster: Cluster
    events: tuple[AlertEvents, ...]
    seconds: float
    n_bars: int


def context_arrays(bars: SymbolBars, sessions: SessionTable | None) -> dict[str, np.ndarray]:
    """The named input arrays of the rule language for `bars` (views, no copies of OHLCV)."""
    arrays = {"open": bars.open, "high": bars.high, "low": bars.low, "close": bars.close,
              "volume": bars.volume, "timestamp": bars.timestamp,
              "session": bars.session.astype(np.int64)}
    if sessions is not None:
        arrays["minute_of_day"] = minute_of_day(bars.timestamp, bars.session, sessions)
        arrays["session_open"] = sessions.open_ns[bars.session]
        arrays["session_close"] = sessions.close_ns[bars.session]
    return arrays


def minute_of_day(timestamp: np.ndarray, session: np.ndarray, sessions: SessionTable) -> np.ndarray:
    """Exchange-local minutes since midnight of each bar's open time.

    Uses the session table's per-session UTC offsets; only bars of a session that spans a DST
    change (24-hour sessions with `calendar: none`) are converted one by one.
    """
    if len(timestamp) == 0:
        return np.zeros(0, dtype=np.int64)
    at_open, at_close = sessions.utc_offsets_ns
    local_ns = timestamp + at_open[session]
    changed = at_open[session] != at_close[session]
    if changed.any():
        local_ns[changed] = local_wall_ns(timestamp[changed], sessions.timezone)
    return (local_ns // MINUTE_NS) % 1440


def time_filter(alert: AlertPlan, arrays: dict[str, np.ndarray], sessions: SessionTable) -> np.ndarray:
    """Bars where the alert's time rules allow it to fire (between, days, skip_first/last, dates)."""
    cfg = alert.config
    n = len(arrays["close"])
    allowed = np.ones(n, dtype=bool)
    if cfg.between:
        minute = arrays["minute_of_day"]
        inside = np.zeros(n, dtype=bool)
        for start, end in cfg.between:
            inside |= (minute >= start) & (minute < end)
        allowed &= inside
    session = arrays["session"]
    if cfg.days or cfg.exclude_dates:
        dates = sessions.dates[session].astype("datetime64[D]")
        if cfg.days:
            weekday = (dates.astype(np.int64) + 3) % 7
            allowed &= np.isin(weekday, cfg.days)
        if cfg.exclude_dates:
            allowed &= ~np.isin(dates, np.array(cfg.exclude_dates, dtype="datetime64[D]"))
    ts = arrays["timestamp"]
    if cfg.skip_first:
        allowed &= ts >= sessions.open_ns[session] + cfg.skip_first * MINUTE_NS
    if cfg.skip_last:
        allowed &= ts < sessions.close_ns[session] - cfg.skip_last * MINUTE_NS
    return allowed


EVALUATORS = ("fused", "interpreter")
DEFAULT_EVALUATOR = "fused"
"""What `run_cluster` uses unless told: the compiled program (`fused`) or the reference
interpreter (`interpreter`, for benchmarks and tests; results are identical)."""


def run_cluster(plan: Plan, cluster: Cluster, bars: SymbolBars, sessions: SessionTable,
                evaluator: str | None = None) -> ClusterResult:
    """Candidate events of every alert in `cluster`; `bars` is its `[read_start, read_end)` slice.

    The plan's compiled program (`fused`) computes every rule, time filter and candidate row in
    one GIL-free call after the indicators; `evaluator="interpreter"` runs the reference instead.
    """
    if (evaluator or DEFAULT_EVALUATOR) == "interpreter" or plan.program is None:
        return run_cluster_reference(plan, cluster, bars, sessions)
    began = time.perf_counter()
    program, filters = plan.program, plan.filters
    session = bars.session.astype(np.int64)
    arrays = {"open": bars.open, "high": bars.high, "low": bars.low, "close": bars.close,
              "volume": bars.volume, "timestamp": bars.timestamp, "session": session}
    ctx = expr.Context(arrays, anchors=dict(cluster.anchors) if cluster.anchors else None,
                       lazy=_lazy_arrays(bars, session, sessions))
    table = fused.session_arrays(filters, sessions)
    minute = None
    if table[4] and filters.uses_minute_of_day:   # a session spans a DST change
        minute = ctx.array("minute_of_day")
    lo, hi = cluster.start - cluster.read_start, cluster.end - cluster.read_start
    values, rows, offsets = fused.run(program, ctx, filters=filters, table=table, lo=lo, hi=hi,
                                      minute_of_day=minute)
    events = _tail_events(plan, _tail(plan), values, rows, offsets, bars, session, cluster)
    return ClusterResult(cluster=cluster, events=events,
                         seconds=time.perf_counter() - began, n_bars=cluster.n_bars)


@dataclass(frozen=True, eq=False)
class _Tail:
    """A plan's per-alert outputs as kernel inputs (built once per plan, see `_tail`): the slots
    of the reported columns, the forward horizons and the trade specs."""

    column_slots: np.ndarray                  # int64, every alert's reported columns in order
    column_offsets: np.ndarray                # alert j's columns: [offsets[j], offsets[j + 1])
    h_alert: np.ndarray
    h_kind: np.ndarray
    h_value: np.ndarray
    h_offsets: np.ndarray                     # alert j's horizons: [offsets[j], offsets[j + 1])
    labels: tuple[str, ...]                   # per horizon
    per_alert: tuple[tuple, ...]              # per alert: column indices, horizon indices with
                                              # their four column names, trade index or -1
    t_alert: np.ndarray
    t_index: np.ndarray                       # per alert: its row in the trade arrays, or -1
    t_flags: np.ndarray
    t_max_bars: np.ndarray
    t_costs: np.ndarray
    level_kind: np.ndarray
    level_value: np.ndarray
    level_slot: np.ndarray
    exit_slot: np.ndarray


_TAILS: dict[int, tuple[Plan, _Tail]] = {}
_TAILS_LOCK = threading.Lock()


def _tail(plan: Plan) -> _Tail:
    """The `_Tail` of `plan`, built on first use in each process and kept (a few plans)."""
    hit = _TAILS.get(id(plan))
    if hit is not None and hit[0] is plan:
        return hit[1]
    slot = plan.program.slot
    column_slots, column_offsets = [], [0]
    h_alert, h_kind, h_value, h_offsets, labels = [], [], [], [0], []
    t_alert, t_index, flags, max_bars, costs = [], [], [], [], []
    kinds, level_values, level_slots, exit_slots = [], [], [], []
    for j, alert in enumerate(plan.alerts):
        column_slots += [slot(node) for _, node in alert.columns]
        column_offsets.append(len(column_slots))
        horizons = alert.config.forward or ()
        kind, value = trades.horizon_codes(horizons)
        h_alert += [j] * len(horizons)
        h_kind += kind.tolist()
        h_value += value.tolist()
        labels += [h.label for h in horizons]
        h_offsets.append(len(h_alert))
        spec = alert.config.trade
        if spec is None:
            t_index.append(-1)
            continue
        t_index.append(len(t_alert))
        t_alert.append(j)
        atr = dict(alert.atr)
        kind, value, where = trades.level_codes(spec, lambda period, atr=atr: slot(atr[period]))
        kinds.append(kind)
        level_values.append(value)
        level_slots.append(where)
        flag, most, cost = trades.trade_codes(spec, alert.exit_rule is not None)
        flags.append(flag)
        max_bars.append(most)
        costs.append(cost)
        exit_slots.append(slot(alert.exit_rule) if flags[-1][6] else -1)
    levels = len(trades.LEVEL_FIELDS)
    tail = _Tail(
        column_slots=np.array(column_slots, dtype=np.int64),
        column_offsets=np.array(column_offsets, dtype=np.int64),
        h_alert=np.array(h_alert, dtype=np.int64), h_kind=np.array(h_kind, dtype=np.int64),
        h_value=np.array(h_value, dtype=np.int64), h_offsets=np.array(h_offsets, dtype=np.int64),
        labels=tuple(labels), t_alert=np.array(t_alert, dtype=np.int64),
        t_index=np.array(t_index, dtype=np.int64),
        t_flags=np.array(flags, dtype=np.bool_).reshape(-1, 7),
        t_max_bars=np.array(max_bars, dtype=np.int64),
        t_costs=np.array(costs, dtype=np.float64).reshape(-1, 4),
        level_kind=np.array(kinds, dtype=np.int64).reshape(-1, levels),
        level_value=np.array(level_values, dtype=np.float64).reshape(-1, levels),
        level_slot=np.array(level_slots, dtype=np.int64).reshape(-1, levels),
        exit_slot=np.array(exit_slots, dtype=np.int64),
        per_alert=tuple(
            (tuple(range(column_offsets[j], column_offsets[j + 1])),
             tuple((h, tuple(f"{kind}_{labels[h]}" for kind in ("ret", "mfe", "mae", "complete")))
                   for h in range(h_offsets[j], h_offsets[j + 1])),
             t_index[j]) for j in range(len(plan.alerts))))
    with _TAILS_LOCK:
        if len(_TAILS) >= 16:
            _TAILS.pop(next(iter(_TAILS)))
        _TAILS[id(plan)] = (plan, tail)
    return tail


_TRADE_COLUMNS = ("signal_idx", "entry_idx", "entry_price", "exit_idx", "exit_price", "reason",
                  "bars_held", "gross_return", "net_return", "mfe", "mae", "both_touched")


def _tail_events(plan: Plan, tail: _Tail, values: np.ndarray, rows: np.ndarray,
                 offsets: np.ndarray, bars: SymbolBars, session: np.ndarray,
                 cluster: Cluster) -> tuple[AlertEvents, ...]:
    """Every alert's events from the compiled program's candidate `rows` (alert j's:
    `rows[offsets[j]:offsets[j + 1]]`): the gathers, every forward horizon and every trade in
    one GIL-free kernel call each; Python only slices the flat results per alert."""
    offset = cluster.read_start
    data_end, complete_session = cluster.data_end, cluster.last_session_complete
    ret = mfe = mae = complete = h_starts = None
    if len(tail.h_alert):
        ret, mfe, mae, complete, h_starts = trades.forward_many_nb(
            rows, offsets, tail.h_alert, tail.h_kind, tail.h_value, bars.timestamp, session,
            bars.close, bars.high, bars.low, complete_session)
        if not data_end and not complete.all():
            h = int(np.searchsorted(h_starts, np.argmin(complete), side="right")) - 1
            raise ValueError(f"forward_returns: the slice ends before horizon "
                             f"{tail.labels[h]!r} although data_end=False")
    columns = t_starts = None
    if len(tail.t_alert):
        columns, t_starts, uncovered = trades.simulate_many_nb(
            rows, offsets, tail.t_alert, tail.t_flags, tail.t_max_bars, tail.t_costs,
            tail.level_kind, tail.level_value, tail.level_slot, tail.exit_slot, values,
            bars.open, bars.high, bars.low, bars.close, session, data_end, complete_session,
            offset)
        if uncovered >= 0:
            raise ValueError(f"simulate: the slice ends before the horizon of the trade "
                             f"signalled at bar {uncovered} although data_end=False "
                             f"(look-ahead halo too short)")
    close_at = bars.close[rows]
    timestamp_at = bars.timestamp[rows]
    session_at = session[rows]
    row_at = rows + offset
    gathered = values[tail.column_slots[:, None], rows] if len(tail.column_slots) else None
    lo, hi = cluster.start - cluster.read_start, cluster.end - cluster.read_start
    # Python ints from here on: slicing with NumPy scalars costs several times more.
    bounds = offsets.tolist()
    h_bounds = h_starts.tolist() if h_starts is not None else ()
    t_bounds = t_starts.tolist() if t_starts is not None else ()
    events = []
    for j, alert in enumerate(plan.alerts):
        a, b = bounds[j], bounds[j + 1]
        column_rows, horizons, t = tail.per_alert[j]
        named = {"close": close_at[a:b]}
        for c, (name, _) in zip(column_rows, alert.columns):
            named[name] = gathered[c, a:b]
        forward = {}
        for h, (r_name, f_name, a_name, c_name) in horizons:
            s, e = h_bounds[h], h_bounds[h + 1]
            forward[r_name] = ret[s:e]
            forward[f_name] = mfe[s:e]
            forward[a_name] = mae[s:e]
            forward[c_name] = complete[s:e]
        simulated = None
        if t >= 0:
            s, e = t_bounds[t], t_bounds[t + 1]
            simulated = {name: column[s:e] for name, column in zip(_TRADE_COLUMNS, columns)}
        rearm_runs = _NO_RUNS
        if alert.rearm is not None:
            rearm = values[plan.program.slot(alert.rearm)]
            rearm_runs = _true_runs(expr.is_true(rearm[lo:hi]), bars.timestamp[lo:hi])
        events.append(AlertEvents(alert=alert.index, row=row_at[a:b], timestamp=timestamp_at[a:b],
                                  session=session_at[a:b], values=named, forward=forward,
                                  trades=simulated, rearm_runs=rearm_runs))
    return tuple(events)


def _alert_events(alert: AlertPlan, local: np.ndarray, value_of, bars: SymbolBars,
                  cluster: Cluster) -> AlertEvents:
    """`alert`'s events at its candidate rows `local` (int64, relative to `bars`); `value_of`
    gives a node's values."""
    lo, hi = cluster.start - cluster.read_start, cluster.end - cluster.read_start
    offset = cluster.read_start
    timestamp = bars.timestamp
    columns = {"close": bars.close[local]}
    for name, node in alert.columns:
        columns[name] = value_of(node)[local]
    forward = {}
    if alert.config.forward:
        forward = trades.forward_returns(
            alert.config.forward, local, timestamp=timestamp, close=bars.close,
            high=bars.high, low=bars.low, session=bars.session, data_end=cluster.data_end,
            last_session_complete=cluster.last_session_complete)
    simulated = None
    if alert.config.trade is not None:
        exit_signal = None
        if alert.exit_rule is not None:
            exit_signal = expr.is_true(value_of(alert.exit_rule))
        atr = {p: value_of(node) for p, node in alert.atr} or None
        # `local` is sorted int64 inside the slice by construction: skip simulate's checks
        simulated = trades.simulate_sorted(
            alert.config.trade, local, open=bars.open, high=bars.high, low=bars.low,
            close=bars.close, session=bars.session, atr=atr, exit_signal=exit_signal,
            data_end=cluster.data_end, last_session_complete=cluster.last_session_complete)
        simulated = dict(simulated)
        for key in ("signal_idx", "entry_idx", "exit_idx"):
            simulated[key] = np.asarray(simulated[key], dtype=np.int64) + offset
    rearm_runs = _NO_RUNS
    if alert.rearm is not None:
        rearm_runs = _true_runs(expr.is_true(value_of(alert.rearm)[lo:hi]), timestamp[lo:hi])
    return AlertEvents(alert=alert.index, row=local + offset, timestamp=timestamp[local],
                       session=bars.session[local].astype(np.int64), values=columns,
                       forward=forward, trades=simulated, rearm_runs=rearm_runs)


_NO_RUNS = np.zeros((0, 2), dtype=np.int64)
_NO_RUNS.flags.writeable = False


def _lazy_arrays(bars: SymbolBars, session: np.ndarray, sessions: SessionTable) -> dict:
    """Recipes for the context arrays only some rules read (local time, session bounds)."""
    return {"minute_of_day": lambda: minute_of_day(bars.timestamp, bars.session, sessions),
            "session_open": lambda: sessions.open_ns[session],
            "session_close": lambda: sessions.close_ns[session]}


def run_cluster_reference(plan: Plan, cluster: Cluster, bars: SymbolBars,
                          sessions: SessionTable) -> ClusterResult:
    """`run_cluster` on the reference interpreter (`expr.evaluate`) and numpy time filters: the
    test oracle of the compiled path, and the `evaluator="interpreter"` benchmark row."""
    began = time.perf_counter()
    arrays = context_arrays(bars, sessions)
    ctx = expr.Context(arrays, anchors=dict(cluster.anchors))
    values = expr.evaluate(plan.roots, ctx)
    lo, hi = cluster.start - cluster.read_start, cluster.end - cluster.read_start
    events = []
    for alert in plan.alerts:
        mask = expr.is_true(values[alert.rule]) & time_filter(alert, arrays, sessions)
        local = (np.flatnonzero(mask[lo:hi]) + lo).astype(np.int64)
        events.append(_alert_events(alert, local, values.__getitem__, bars, cluster))
    return ClusterResult(cluster=cluster, events=tuple(events),
                         seconds=time.perf_counter() - began, n_bars=cluster.n_bars)


def _true_runs(mask: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
    """(first, last) timestamps of each maximal run of True in `mask`."""
    if not mask.any():
        return np.zeros((0, 2), dtype=np.int64)
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    starts, stops = edges[0::2], edges[1::2] - 1
    return np.stack([timestamp[starts], timestamp[stops]], axis=1).astype(np.int64)
