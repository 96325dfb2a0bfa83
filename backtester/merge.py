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
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
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
    """One `Merged` from cluster results in any order (they are re-ordered by cluster index).

    Columnar end to end: events stay NumPy arrays per (alert, symbol), names stay integer codes
    until the end, the final order is one `np.lexsort` over integer keys, and the text columns
    (``symbol``, ``alert``, ``reason``) become Arrow-backed strings without a Python object per
    row.
    """
    ordered = sorted(results, key=lambda r: r.cluster.index)
    symbol_names = sorted(barset.symbols)
    symbol_code = {name: code for code, name in enumerate(symbol_names)}
    alert_names = [alert.name for alert in plan.alerts]
    alerts, forward, trades = _Columns(), _Columns(), _Columns()
    candidates = 0
    suppressed: dict[str, int] = {}
    for alert in plan.alerts:
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
            n_fired = int(fired.sum())
            dropped += int(len(row) - n_fired)
            codes = (symbol_code[symbol], alert.index)
            fired_ts = ts[fired]
            alerts.add(fired_ts, *codes, {"timestamp": fired_ts, **{
                name: _concat([e.values[name] for e in events])[fired]
                for name in events[0].values}})
            if cfg.forward:
                forward.add(fired_ts, *codes, {"timestamp": fired_ts, **{
                    name: _concat([e.forward[name] for e in events])[fired]
                    for name in events[0].forward}})
            if cfg.trade is not None:
                columns = _trade_columns(events, row[fired], barset.bars[symbol].timestamp,
                                         cfg.trade.overlap)
                trades.add(columns["entry_time"], *codes, columns)
        suppressed[alert.name] = dropped
    names = {"symbol": symbol_names, "alert": alert_names}
    tz = barset.timezone
    return Merged(alerts=alerts.frame(("timestamp", "symbol", "alert"), names, tz),
                  forward=forward.frame(("timestamp", "symbol", "alert"), names, tz),
                  trades=trades.frame(("alert", "symbol"), names, tz),
                  candidates=candidates, suppressed=suppressed)


_TIME_COLUMNS = ("timestamp", "signal_time", "entry_time", "exit_time")
_TEXT_CODES = {"reason": trades_mod.REASONS}


class _Columns:
    """Events of one kind gathered as column arrays per (alert, symbol), made into one frame
    ordered by (time, symbol, alert order): a total order that no cluster layout changes."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, int, int, dict[str, np.ndarray]]] = []

    def add(self, order_time: np.ndarray, symbol: int, alert: int,
            columns: dict[str, np.ndarray]) -> None:
        if len(order_time):
            self.parts.append((order_time, symbol, alert, columns))

    def frame(self, leading: Sequence[str], names: dict[str, Sequence[str]], tz: str
              ) -> pd.DataFrame:
        """`leading` columns first (``symbol`` and ``alert`` from their codes, a time column
        from the parts), then every other column in order of first appearance; a column that
        some parts lack is NaN there (nullable boolean for flags)."""
        if not self.parts:
            return pd.DataFrame()
        sizes = [len(t) for t, _, _, _ in self.parts]
        time_key = np.concatenate([t for t, _, _, _ in self.parts])
        codes = {"symbol": np.repeat([s for _, s, _, _ in self.parts], sizes).astype(np.int32),
                 "alert": np.repeat([a for _, _, a, _ in self.parts], sizes).astype(np.int32)}
        # np.lexsort is stable: ties keep the gathering order (alert, then symbol, then time).
        order = np.lexsort((codes["alert"], codes["symbol"], time_key))
        keys: dict[str, None] = dict.fromkeys(k for k in leading if k not in codes)
        for _, _, _, columns in self.parts:
            keys.update(dict.fromkeys(columns))
        out: dict[str, Any] = {}
        for key in dict.fromkeys([*leading, *keys]):
            if key in codes:
                out[key] = _text(codes[key][order], names[key])
                continue
            values = _gather([columns.get(key) for _, _, _, columns in self.parts], sizes)
            values = values[order]
            if key in _TIME_COLUMNS:
                out[key] = pd.DatetimeIndex(values.astype("datetime64[ns]"),
                                            tz="UTC").tz_convert(tz)
            elif key in _TEXT_CODES:
                out[key] = _text(values, _TEXT_CODES[key])
            else:
                out[key] = values
        return pd.DataFrame(out)


def _gather(parts: list[np.ndarray | None], sizes: list[int]):
    """One array from per-part arrays, NaN (or NA for flags) where a part lacks the column."""
    present = [p for p in parts if p is not None]
    if len(present) == len(parts):
        return np.concatenate(parts)
    kind = present[0].dtype
    if kind == np.bool_:
        values = np.concatenate([p if p is not None else np.zeros(n, np.bool_)
                                 for p, n in zip(parts, sizes)])
        missing = np.concatenate([np.full(n, p is None) for p, n in zip(parts, sizes)])
        return pd.arrays.BooleanArray(values, missing)
    return np.concatenate([p.astype(np.float64) if p is not None else np.full(n, np.nan)
                           for p, n in zip(parts, sizes)])


_STRING = pd.StringDtype("pyarrow", na_value=np.nan)


def _text(codes: np.ndarray, names: Sequence[str]) -> pd.api.extensions.ExtensionArray:
    """Strings ``names[codes]`` as pandas' Arrow-backed string dtype, built by Arrow from the
    integer codes (no Python object per row)."""
    dictionary = pa.array(list(names), pa.large_string())
    decoded = pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)),
                                             dictionary).dictionary_decode()
    return pd.array(decoded, dtype=_STRING)


def _trade_columns(events, fired_rows: np.ndarray, ts: np.ndarray, overlap: str
                   ) -> dict[str, np.ndarray]:
    # Trades are matched to fires by signal row: a signal that cannot enter (next-open entry on
    # the data's last bar) has no trade, so positions do not line up with the candidates.
    keys = events[0].trades.keys()
    cols = {k: _concat([e.trades[k] for e in events]) for k in keys}
    keep = np.isin(cols["signal_idx"], fired_rows)
    cols = {k: v[keep] for k, v in cols.items()}
    signal_time = ts[cols["signal_idx"]]
    exit_time = ts[cols["exit_idx"]]
    if overlap == "skip":
        take = trades_mod.select_non_overlapping(signal_time, exit_time)
        cols = {k: v[take] for k, v in cols.items()}
        signal_time, exit_time = signal_time[take], exit_time[take]
    return {
        "signal_time": signal_time,
        "entry_time": ts[cols["entry_idx"]], "entry_price": cols["entry_price"],
        "exit_time": exit_time, "exit_price": cols["exit_price"],
        "reason": cols["reason"].astype(np.int64),
        "bars_held": cols["bars_held"].astype(np.int64),
        "return": cols["net_return"], "gross_return": cols["gross_return"],
        "mfe": cols["mfe"], "mae": cols["mae"], "both_touched": cols["both_touched"].astype(bool),
    }
