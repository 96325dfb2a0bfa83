"""Split symbols x date range into independent clusters, each with its warm-up and look-ahead halo.

A `Cluster` is a description, not data: one symbol and row ranges into that symbol's bars.
Its signal range `[start, end)` partitions the symbol's bars across clusters; it reads
`[read_start, read_end)`, which adds the warm-up before (sized by the plan: bars, then whole
sessions, then bars again, which over-reads slightly when both kinds are present but never
under-reads) and the look-ahead after (trade and forward-return horizons).

One symbol per cluster keeps every cluster a contiguous slice of one array; small clusters are
batched into tasks by `execution`, so per-task overhead does not grow with the symbol count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import indicators, trades
from .bars import BarSet, SymbolBars
from .config import ScheduleConfig
from .plan import Plan


@dataclass(frozen=True)
class Cluster:
    """Rows `[start, end)` of `symbol` produce events; rows `[read_start, read_end)` are read."""

    index: int
    symbol: str
    start: int
    end: int
    read_start: int
    read_end: int
    start_ns: int
    end_ns: int               # timestamp of the last signal bar
    data_end: bool            # read_end is the symbol's last bar: horizons may run off the data
    anchors: tuple[tuple[object, float], ...] = field(default=())   # cumulative node -> value
    last_session_complete: bool = True   # the data's last bar closes its session (calendar)

    @property
    def n_bars(self) -> int:
        return self.end - self.start

    @property
    def n_read(self) -> int:
        return self.read_end - self.read_start


@dataclass(frozen=True)
class Layout:
    """The clusters of a run and why this layout was chosen."""

    clusters: tuple[Cluster, ...]
    cluster_by: str
    reason: str


def period_keys(bars: SymbolBars, session_dates: np.ndarray, cluster_by: str) -> np.ndarray:
    """An integer per bar that changes exactly where a new calendar period starts."""
    dates = session_dates[bars.session].astype("datetime64[D]")
    days = dates.astype(np.int64)
    if cluster_by == "day":
        return days
    if cluster_by == "week":
        return (days + 3) // 7          # 1970-01-01 was a Thursday: weeks start on Monday
    months = dates.astype("datetime64[M]").astype(np.int64)
    if cluster_by == "month":
        return months
    if cluster_by == "quarter":
        return months // 3
    if cluster_by == "year":
        return dates.astype("datetime64[Y]").astype(np.int64)
    raise ValueError(f"unknown calendar layout {cluster_by!r}")


def _cuts(n: int, bars: SymbolBars, session_dates: np.ndarray, cluster_by: str,
          size: int | None) -> np.ndarray:
    if n == 0:
        return np.array([0], dtype=np.int64)
    if cluster_by == "bars":
        return np.arange(0, n, size, dtype=np.int64)
    if cluster_by == "count":
        return np.unique(np.linspace(0, n, min(size, n) + 1).astype(np.int64)[:-1])
    keys = period_keys(bars, session_dates, cluster_by)
    return np.concatenate(([0], np.flatnonzero(np.diff(keys)) + 1)).astype(np.int64)


def choose_layout(plan: Plan, barset: BarSet, n_workers: int) -> tuple[str, int | None, str]:
    """`auto`: enough clusters per worker to balance the load, few enough that the re-read
    warm-up stays under ~10% of the bars and per-task overhead stays negligible."""
    total = max(1, barset.n_bars)
    n_symbols = max(1, len(barset.symbols))
    per_symbol = total / n_symbols
    bars_per_session = max(1.0, per_symbol / max(1, len(barset.sessions)))
    warm = plan.warmup_bars * 2 + plan.warmup_sessions * bars_per_session + plan.lookahead_bars
    # Smallest cluster for which the halo is <= 10% of the work.
    min_size = max(2000, int(10 * warm))
    target_clusters = max(1, 4 * n_workers)
    fit = int(per_symbol // min_size)           # clusters per symbol the halo allows
    per_symbol_clusters = max(1, min(fit, -(-target_clusters // n_symbols)))
    made = n_symbols * per_symbol_clusters
    halo = f"the size at which the halo ({int(warm)} bars) costs <= 10%"
    reason = (f"{made} clusters ({n_symbols} symbol{'s' if n_symbols != 1 else ''} x "
              f"{per_symbol_clusters}, "
              f"~{per_symbol / per_symbol_clusters:,.0f} bars each) for {n_workers} "
              f"worker{'s' if n_workers != 1 else ''}: ")
    if made >= target_clusters:
        reason += f"at least the {target_clusters} (4 per worker) that balance the load"
    else:
        reason += f"fewer than the {target_clusters} (4 per worker) that would balance the load"
    if fit < 1:
        reason += f"; no symbol is split, as its clusters would be under {min_size} bars, {halo}"
    elif made < target_clusters:
        reason += (f", because ~{per_symbol:,.0f} bars per symbol allow at most {fit} clusters "
                   f"of >= {min_size} bars, {halo}")
    else:
        reason += f", each >= {min_size} bars, {halo}"
    return "count", per_symbol_clusters, reason


def schedule(plan: Plan, barset: BarSet, layout: ScheduleConfig, n_workers: int = 1) -> Layout:
    """Cut every symbol's bars into clusters and size their halos from `plan`.

    The signal ranges of one symbol's clusters partition its bars, so every bar is evaluated as
    a signal bar exactly once. Cluster indices order clusters by (symbol, time).
    """
    cluster_by, size = layout.cluster_by, layout.size
    reason = f"configured: cluster_by {cluster_by}" + (f" ({size})" if size else "")
    if cluster_by == "auto":
        cluster_by, size, reason = choose_layout(plan, barset, n_workers)
    session_dates = barset.sessions.dates
    settling = _settling_inputs(plan)
    clusters = []
    for symbol in barset.symbols:
        bars = barset.bars[symbol]
        n = len(bars)
        if n == 0:
            continue
        starts = _cuts(n, bars, session_dates, cluster_by, size)
        ends = np.append(starts[1:], n)
        read_starts = _warmup_starts(bars, starts, plan, settling)
        read_ends = _lookahead_ends(bars, ends, plan)
        anchors = _anchors(plan, bars, read_starts)
        # A session cut short by the end of the data must not look like a session close.
        complete = int(bars.timestamp[-1]) + barset.bar_ns >= \
            int(barset.sessions.close_ns[bars.session[-1]])
        for j, (s, e, rs, re_) in enumerate(zip(starts, ends, read_starts, read_ends)):
            clusters.append(Cluster(
                index=len(clusters), symbol=symbol, start=int(s), end=int(e),
                read_start=int(rs), read_end=int(re_), start_ns=int(bars.timestamp[s]),
                end_ns=int(bars.timestamp[e - 1]), data_end=bool(re_ == n),
                anchors=tuple((node, float(values[j])) for node, values in anchors),
                last_session_complete=bool(complete or re_ < n)))
    return Layout(clusters=tuple(clusters), cluster_by=cluster_by, reason=reason)


def _warmup_starts(bars: SymbolBars, starts: np.ndarray, plan: Plan,
                   settling: list[tuple[str, tuple[str, ...]]] | None = None) -> np.ndarray:
    """First row each cluster reads; `settling` is `_settling_inputs(plan)`, passed by
    `schedule` so that the plan is walked once per run, not once per symbol."""
    if settling is None:
        settling = _settling_inputs(plan)
    return indicators.warmup_starts(starts, plan.warmup_bars, plan.warmup_sessions,
                                    bars.session, _informative_bars(bars, settling))


def _settling_inputs(plan: Plan) -> list[tuple[str, tuple[str, ...]]]:
    """The plan's recursive ratios (rsi, atr, adx, ...) whose warm-up counts only informative
    bars, each once, as (indicator, the bar fields it reads); read off the plan once per run."""
    from . import expr

    found: list[tuple[str, tuple[str, ...]]] = []
    for root in getattr(plan, "roots", ()):
        for node in expr.walk(root):
            if not isinstance(node, expr.Ind) or indicators.get(node.name).settles_on is None:
                continue
            fields = list(indicators.get(node.name).inputs)
            if isinstance(node.source, expr.Field):
                fields[0] = node.source.name
            key = (node.name, tuple(fields))
            if key not in found:
                found.append(key)
    return found


def _informative_bars(bars: SymbolBars, settling: list[tuple[str, tuple[str, ...]]]
                      ) -> list[np.ndarray]:
    """Masks of the bars that count towards those warm-ups (flat bars do not), one O(n) pass
    each over this symbol's bar fields."""
    if not settling:
        return []
    from . import expr
    from .cluster import context_arrays

    ctx = expr.Context(context_arrays(bars, None))
    return [indicators.informative_bars(name, *(ctx.field(f) for f in fields))
            for name, fields in settling]


def _lookahead_ends(bars: SymbolBars, ends: np.ndarray, plan: Plan) -> np.ndarray:
    """One past the last row each cluster reads: `plan.lookahead_bars` after its signal range,
    then, for duration horizons, up to the first bar opening after the last signal bar's time
    plus the longest duration (exact for irregular bars, where a bar count is no upper bound),
    then to the end of that session when the plan needs one."""
    n = len(bars)
    last = np.minimum(ends + plan.lookahead_bars, n)
    duration = max((trades.lookahead_ns(a.config.forward) for a in plan.alerts), default=0)
    if duration > 0:
        horizon_end = bars.timestamp[ends - 1] + duration
        after = np.searchsorted(bars.timestamp, horizon_end, side="right")
        last = np.maximum(last, np.minimum(after + 1, n))
    if plan.lookahead_session:
        last = np.searchsorted(bars.session, bars.session[last - 1], side="right")
    return np.minimum(last, n).astype(np.int64)


def _anchors(plan: Plan, bars: SymbolBars, read_starts: np.ndarray):
    """Values of cumulative indicators at each cluster's first read bar, from one O(n) pass
    over the symbol in the parent (the scan that makes them split-invariant)."""
    if not plan.cumulative:
        return []
    from . import expr
    from .cluster import context_arrays

    ctx = expr.Context(context_arrays(bars, None))
    values = expr.evaluate(plan.cumulative, ctx)
    return [(node, values[node][read_starts]) for node in plan.cumulative]
