"""Merge cluster results and resolve the cross-cluster state in one ordered pass.

Clusters emit candidates (every bar where a rule is true and its time filters allow). What a
sequential event loop would then decide, whether a candidate actually fires given the fires
before it (cooldown, once per day, rearm) and whether its trade is taken given the trades
before it (one position at a time), is decided here, per alert and symbol, in time order. The
result is therefore exactly that of one event loop over the whole history, whatever the layout.

Rules of the pass (documented in docs/rules.md):
- cooldown N bars: after a fire at row r, candidates at rows < r + N are dropped;
- cooldown duration D: after a fire at time t, candidates stamped < t + D are dropped;
- once_per_day: at most one fire per session;
- rearm_when: after a fire at t, the next fire needs a bar u with t < u <= its own bar where the
  rearm rule is true;
- overlap skip: a fired alert's trade is taken only when the previous taken trade of that alert
  and symbol exited at or before the signal bar (`trades.select_non_overlapping`).
Dropped candidates do not restart a cooldown: only fires do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit

from . import trades as trades_mod
from .bars import BarSet
from .cluster import ClusterResult
from .plan import Plan

_NONE = np.iinfo(np.int64).min // 4


@dataclass(frozen=True)
class Merged:
    """The run's events as DataFrames, deterministically ordered."""

    alerts: pd.DataFrame
    forward: pd.DataFrame
    trades: pd.DataFrame
    candidates: int            # candidate events before the stateful pass
    suppressed: dict[str, int]  # alert -> candidates dropped by cooldown/once_per_day/rearm


@njit(cache=True, nogil=True)
def resolve_fires_nb(row, timestamp, session, cooldown_bars, cooldown_ns, once_per_day,
                     rearm_first, rearm_last, use_rearm):
    """Which candidates fire, in one pass over candidates sorted by time (see module rules)."""
    n = len(row)
    fired = np.zeros(n, dtype=np.bool_)
    have = False
    last_row = 0
    last_ts = 0
    last_session = -1
    j = 0
    for i in range(n):
        if have:
            if cooldown_bars > 0 and row[i] < last_row + cooldown_bars:
                continue
            if cooldown_ns > 0 and timestamp[i] < last_ts + cooldown_ns:
                continue
            if once_per_day and session[i] == last_session:
                continue
            if use_rearm:
                while j < len(rearm_last) and rearm_last[j] <= last_ts:
                    j += 1
                if j >= len(rearm_last) or rearm_first[j] > timestamp[i]:
                    continue
        fired[i] = True
        have = True
        last_row = row[i]
        last_ts = timestamp[i]
        last_session = session[i]
    return fired


def _concat(parts: Sequence[np.ndarray], dtype=None) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=dtype or np.float64)
    return np.concatenate(parts)


def merge(plan: Plan, results: Sequence[ClusterResult], barset: BarSet) -> Merged:
    """One `Merged` from cluster results in any order (they are re-ordered by cluster index)."""
    ordered = sorted(results, key=lambda r: r.cluster.index)
    tz = barset.timezone
    alert_frames, forward_frames, trade_frames = [], [], []
    candidates = 0
    suppressed: dict[str, int] = {}
    for alert in plan.alerts:
        # Columns per symbol, made into one DataFrame per alert below: building a frame per
        # (alert, symbol) cost more than the merge's own work on runs with many symbols.
        alert_parts, forward_parts, trade_parts = [], [], []
        by_symbol: dict[str, list] = {}
        for result in ordered:
            by_symbol.setdefault(result.cluster.symbol, []).append(result.events[alert.index])
        dropped = 0
        for symbol in barset.symbols:
            events = by_symbol.get(symbol, [])
            if not events:
                continue
            row = _concat([e.row for e in events], np.int64)
            if len(row) == 0:
                continue
            ts = _concat([e.timestamp for e in events], np.int64)
            session = _concat([e.session for e in events], np.int64)
            runs = (np.concatenate([e.rearm_runs for e in events])
                    if alert.rearm is not None else np.zeros((0, 2), np.int64))
            cfg = alert.config
            cooldown_bars = cfg.cooldown.bars or 0 if cfg.cooldown else 0
            cooldown_ns = cfg.cooldown.duration_ns or 0 if cfg.cooldown else 0
            fired = resolve_fires_nb(row, ts, session, cooldown_bars, cooldown_ns,
                                     cfg.once_per_day, runs[:, 0].copy(), runs[:, 1].copy(),
                                     alert.rearm is not None)
            candidates += len(row)
            dropped += int(len(row) - fired.sum())
            n_fired = int(fired.sum())
            labels = {"symbol": np.full(n_fired, symbol, dtype=object),
                      "alert": np.full(n_fired, alert.name, dtype=object)}
            frame = {"timestamp": ts[fired], **labels}
            for name in events[0].values:
                frame[name] = _concat([e.values[name] for e in events])[fired]
            alert_parts.append(frame)
            if cfg.forward:
                fwd = {"timestamp": ts[fired], **labels}
                for name in events[0].forward:
                    fwd[name] = _concat([e.forward[name] for e in events])[fired]
                forward_parts.append(fwd)
            if cfg.trade is not None:
                trade_parts.append(_trade_columns(alert.name, symbol, events, row[fired],
                                                  barset, cfg.trade.overlap))
        suppressed[alert.name] = dropped
        alert_frames.append((alert.index, _frame(alert_parts, tz, ("timestamp",))))
        forward_frames.append((alert.index, _frame(forward_parts, tz, ("timestamp",))))
        trade_frames.append((alert.index, _frame(trade_parts, tz, _TRADE_TIMES)))
    return Merged(alerts=_ordered(alert_frames, ["timestamp", "symbol"]),
                  forward=_ordered(forward_frames, ["timestamp", "symbol"]),
                  trades=_ordered(trade_frames, ["entry_time", "symbol"]),
                  candidates=candidates, suppressed=suppressed)


_TRADE_TIMES = ("signal_time", "entry_time", "exit_time")


def _frame(parts: list[dict[str, np.ndarray]], tz: str, time_columns: Sequence[str]
           ) -> pd.DataFrame:
    """One DataFrame from same-keyed column dicts; `time_columns` hold UTC epoch ns and
    become tz-aware timestamps in `tz`."""
    if not parts:
        return pd.DataFrame()
    columns = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    for key in time_columns:
        columns[key] = pd.DatetimeIndex(columns[key].astype("datetime64[ns]"),
                                        tz="UTC").tz_convert(tz)
    return pd.DataFrame(columns)


def _trade_columns(name: str, symbol: str, events, fired_rows: np.ndarray, barset: BarSet,
                   overlap: str) -> dict[str, np.ndarray]:
    # Trades are matched to fires by signal row: a signal that cannot enter (next-open entry on
    # the data's last bar) has no trade, so positions do not line up with the candidates.
    keys = events[0].trades.keys()
    cols = {k: _concat([e.trades[k] for e in events]) for k in keys}
    keep = np.isin(cols["signal_idx"], fired_rows)
    cols = {k: v[keep] for k, v in cols.items()}
    ts = barset.bars[symbol].timestamp
    signal_time = ts[cols["signal_idx"]]
    exit_time = ts[cols["exit_idx"]]
    if overlap == "skip":
        take = trades_mod.select_non_overlapping(signal_time, exit_time)
        cols = {k: v[take] for k, v in cols.items()}
        signal_time, exit_time = signal_time[take], exit_time[take]
    reasons = np.asarray(trades_mod.REASONS, dtype=object)
    n = len(signal_time)
    return {
        "alert": np.full(n, name, dtype=object), "symbol": np.full(n, symbol, dtype=object),
        "signal_time": signal_time,
        "entry_time": ts[cols["entry_idx"]], "entry_price": cols["entry_price"],
        "exit_time": exit_time, "exit_price": cols["exit_price"],
        "reason": reasons[cols["reason"].astype(np.int64)],
        "bars_held": cols["bars_held"].astype(np.int64),
        "return": cols["net_return"], "gross_return": cols["gross_return"],
        "mfe": cols["mfe"], "mae": cols["mae"], "both_touched": cols["both_touched"].astype(bool),
    }


def _ordered(frames: list[tuple[int, pd.DataFrame]], keys: list[str]) -> pd.DataFrame:
    """Concatenate and sort by `keys`, then alert order: a total, layout-independent order."""
    frames = [(i, f) for i, f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    out = pd.concat([f.assign(_alert_order=i) for i, f in frames], ignore_index=True)
    out = out.sort_values([*keys, "_alert_order"], kind="mergesort").drop(columns="_alert_order")
    return out.reset_index(drop=True)
