"""Data quality: what is odd in bars that passed validation, counted per symbol.

Validation (`bars.py`) refuses bars that break a rule; this module counts what is legal but
worth knowing before trusting a backtest, and can fill gaps. `assess(barset)` returns a
`DataQuality` (``quality.json`` and a section of ``summary.md`` in a run's outputs,
`RunResult.quality`); `fill_gaps(barset)` returns the bars with every gap filled. Everything is
a function of its arguments (no I/O); the per-bar work is in `_nb` kernels, one pass each.

The rules, per symbol:

* **gap**: two consecutive bars of one session more than one bar interval apart; its
  ``missing_bars`` are the bar slots strictly between them (``prev + k * bar_ns``) that lie in
  the session and outside its break. Bars missing before a session's first bar or after its
  last are not gaps (a late open or an early stop looks the same as a quiet symbol).
* **flat stretch** (a halt): a run of at least `FLAT_MIN_BARS` consecutive bars of one session
  with open = high = low = close, the same price throughout, and zero volume.
* **outlier**: a bar whose log return from the previous bar of the same session (any previous
  bar for bars of a day or longer) exceeds `OUTLIER_K` times the robust scale
  ``1.4826 * median(|r|)`` of the previous `OUTLIER_WINDOW` such returns of the symbol (a
  rolling median absolute deviation about zero; the bar itself is not in its window). No bar
  is an outlier before `OUTLIER_MIN_RETURNS` returns are known or while the scale is zero.
* **holiday bar**: a bar on a date that is no session of the exchange calendar. Under
  ``calendar: none`` there are none by construction (the sessions are the bars' dates); under
  an exchange calendar loading refuses them (``on_holiday_bars: error``) or drops them
  (``drop``, counted here as ``holiday_bars_dropped``).

For example::

    quality = assess(load_bars("data/sample/bars_1min.parquet", timezone="America/New_York"))
    quality.symbols["SYNA"].flat_stretches   # 3: the sample's trading halts
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numba import njit

from .bars import BarSet, SymbolBars
from .errors import DataError

__all__ = ["DataQuality", "SymbolQuality", "assess", "check_no_gaps", "fill_gaps", "markdown"]

FLAT_MIN_BARS = 5
OUTLIER_K = 10.0
OUTLIER_WINDOW = 100
OUTLIER_MIN_RETURNS = 20
MAX_FILLED_BARS = 10_000_000
MAX_FILL_FACTOR = 50
_MAD_TO_SIGMA = 1.4826   # median |x| of a normal variable is 0.6745 sigma
_SESSION_BAR_NS = 20 * 3_600_000_000_000   # `bars._SESSION_BAR_NS`: one bar per session

RULES = {
    "gap": "consecutive bars of one session more than one bar interval apart; missing_bars "
           "counts the bar slots between them that lie in the session",
    "flat_stretch": f"at least {FLAT_MIN_BARS} consecutive bars of one session with "
                    "open = high = low = close at one price and zero volume",
    "outlier": f"|log return| from the previous bar of the session above {OUTLIER_K:g} x "
               f"{_MAD_TO_SIGMA} x median |log return| of the symbol's previous "
               f"{OUTLIER_WINDOW} returns (at least {OUTLIER_MIN_RETURNS} known, scale > 0)",
    "holiday_bar": "a bar on a date that is no session of the exchange calendar "
                   "(none under calendar: none; dropped with data.on_holiday_bars: drop)",
}


@dataclass(frozen=True)
class SymbolQuality:
    """Counts for one symbol (see the module docstring for each rule)."""

    bars: int
    gaps: int
    missing_bars: int
    filled_bars: int
    flat_stretches: int
    flat_bars: int
    outliers: int
    holiday_bars_dropped: int
    first_gap: str | None = None   # local open of the first missing bar, ISO


@dataclass(frozen=True)
class DataQuality:
    """Per-symbol `SymbolQuality`, in symbol order, with the rules that produced them."""

    symbols: Mapping[str, SymbolQuality]
    bar_ns: int
    on_gaps: str = "keep"

    def totals(self) -> dict[str, int]:
        """Each count summed over the symbols."""
        return {f.name: sum(getattr(q, f.name) for q in self.symbols.values())
                for f in fields(SymbolQuality) if f.type in ("int", int)}

    def to_dict(self) -> dict[str, Any]:
        """``quality.json``'s content."""
        return {
            "rules": {**RULES, "bar_interval_seconds": self.bar_ns / 1e9,
                      "on_gaps": self.on_gaps},
            "totals": self.totals(),
            "symbols": {name: {f.name: getattr(q, f.name) for f in fields(SymbolQuality)}
                        for name, q in self.symbols.items()},
        }


def assess(barset: BarSet, *, on_gaps: str = "keep") -> DataQuality:
    """Count gaps, flat stretches, outliers and dropped holiday bars of every symbol.

    `on_gaps` is only recorded (``fill_gaps`` does the filling; `filled_bars` equals
    `missing_bars` when it is ``"fill"``). Costs a few passes over the bars (a few ms per
    million bars once the kernels are compiled).
    """
    table = barset.sessions
    break_start, break_end = _breaks(table)
    dropped = getattr(barset, "holiday_bars_dropped", None) or {}
    one_per_session = barset.bar_ns >= _SESSION_BAR_NS
    result = {}
    for name, bars in barset.bars.items():
        gaps, missing, first = _gaps_nb(bars.timestamp, bars.session, barset.bar_ns,
                                        break_start, break_end)
        stretches, flat = _flat_stretches_nb(bars.open, bars.high, bars.low, bars.close,
                                             bars.volume, bars.session, FLAT_MIN_BARS)
        outliers = _outliers_nb(bars.close, bars.session, one_per_session, OUTLIER_K,
                                OUTLIER_WINDOW, OUTLIER_MIN_RETURNS)
        result[name] = SymbolQuality(
            bars=len(bars), gaps=int(gaps), missing_bars=int(missing),
            filled_bars=int(missing) if on_gaps == "fill" else 0,
            flat_stretches=int(stretches), flat_bars=int(flat), outliers=int(outliers),
            holiday_bars_dropped=int(dropped.get(name, 0)),
            first_gap=_local_iso(first, barset.timezone) if first >= 0 else None,
        )
    return DataQuality(result, barset.bar_ns, on_gaps)


def check_no_gaps(quality: DataQuality, source: str) -> None:
    """Raise `DataError` naming the first symbol with a gap and its first missing bar
    (``data.on_gaps: error``)."""
    for name, q in quality.symbols.items():
        if q.gaps:
            raise DataError(source, f"{name} misses {q.missing_bars:,} bar(s) in {q.gaps:,} "
                            f"gap(s) inside sessions, the first at {q.first_gap} (fill them "
                            "with data.on_gaps: fill, or keep them with on_gaps: keep)")


def fill_gaps(barset: BarSet, source: str = "<bars>") -> BarSet:
    """`barset` with each gap's missing bars added: flat bars (open = high = low = close = the
    previous bar's close) with zero volume, at the missing bar slots of the session (outside
    its break). A symbol without gaps is returned as is (the same arrays).

    Raises `DataError` (naming `source`) rather than add more than `MAX_FILLED_BARS` bars and
    more than `MAX_FILL_FACTOR` times the bars there are: a bar interval that is wrong by orders
    of magnitude would otherwise exhaust memory."""
    added = sum(int(_gaps_nb(b.timestamp, b.session, barset.bar_ns, *_breaks(barset.sessions))[1])
                for b in barset.bars.values())
    if added > MAX_FILLED_BARS and added > MAX_FILL_FACTOR * barset.n_bars:
        raise DataError(source, f"filling the gaps would add {added:,} bars to "
                        f"{barset.n_bars:,} at a bar interval of {barset.bar_ns / 1e9:g} s "
                        "(check the timestamps, or use data.on_gaps: keep)")
    table = barset.sessions
    break_start, break_end = _breaks(table)
    filled = {}
    for name, bars in barset.bars.items():
        _, missing, _ = _gaps_nb(bars.timestamp, bars.session, barset.bar_ns, break_start,
                                 break_end)
        if missing == 0:
            filled[name] = bars
            continue
        n = len(bars) + int(missing)
        out = [np.empty(n, np.int64)] + [np.empty(n, np.float64) for _ in range(5)] + \
              [np.empty(n, np.int32)]
        _fill_nb(bars.timestamp, bars.open, bars.high, bars.low, bars.close, bars.volume,
                 bars.session, barset.bar_ns, break_start, break_end, *out)
        filled[name] = SymbolBars(name, *out)
    return BarSet(filled, table, barset.timezone, barset.bar_ns, barset.files,
                  **_extra_fields(barset))


def markdown(quality: DataQuality) -> str:
    """The ``## Data quality`` section of ``summary.md``: one row per symbol."""
    lines = ["## Data quality", "",
             "| symbol | bars | gaps | missing bars | filled | flat stretches | flat bars "
             "| outliers | holiday bars dropped |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, q in quality.symbols.items():
        lines.append(f"| {name} | {q.bars:,} | {q.gaps:,} | {q.missing_bars:,} | "
                     f"{q.filled_bars:,} | {q.flat_stretches:,} | {q.flat_bars:,} | "
                     f"{q.outliers:,} | {q.holiday_bars_dropped:,} |")
    lines += ["", f"Gaps are missing bars inside a session; flat stretches are runs of "
              f"{FLAT_MIN_BARS}+ zero-volume bars at one price; outliers have a |log return| "
              f"above {OUTLIER_K:g} rolling MADs ({OUTLIER_WINDOW} returns). Details and "
              "rules: quality.json.", ""]
    return "\n".join(lines)


def _breaks(table) -> tuple[np.ndarray, np.ndarray]:
    """Each session's break start and end; both the close where there is none."""
    if table.break_start_ns is None:
        return table.close_ns, table.close_ns
    return table.break_start_ns, table.break_end_ns


def _extra_fields(barset: BarSet) -> dict[str, Any]:
    names = {f.name for f in fields(BarSet)} - {"bars", "sessions", "timezone", "bar_ns",
                                                "files"}
    return {name: getattr(barset, name) for name in names}


def _local_iso(ns: int, timezone: str) -> str:
    import pandas as pd

    return pd.Timestamp(int(ns), tz="UTC").tz_convert(timezone).isoformat()


@njit(cache=True, nogil=True)
def _ceil_div_nb(a, b):
    return -((-a) // b)


@njit(cache=True, nogil=True)
def _missing_nb(previous, following, bar_ns, break_start, break_end):
    """Bar slots ``previous + k * bar_ns`` (k >= 1) before `following` and outside the break
    ``[break_start, break_end)``, counted in O(1) (a bar interval that is wrong by orders of
    magnitude must not turn into a loop over its slots)."""
    last = (following - previous - 1) // bar_ns
    if last <= 0:
        return 0
    missing = last
    if break_end > break_start:
        low = max(1, _ceil_div_nb(break_start - previous, bar_ns))
        high = min(last, _ceil_div_nb(break_end - previous, bar_ns) - 1)
        if high >= low:
            missing -= high - low + 1
    return missing


@njit(cache=True, nogil=True)
def _gaps_nb(timestamp, session, bar_ns, break_start, break_end):
    """(gaps, missing bars, stamp of the first missing bar or -1) of one symbol: slots
    ``prev + k * bar_ns`` strictly before the next bar of the same session, outside its
    break (both bars lie in the session, so every such slot does too)."""
    gaps = 0
    missing = 0
    first = -1
    for i in range(1, len(timestamp)):
        if session[i] != session[i - 1] or timestamp[i] - timestamp[i - 1] <= bar_ns:
            continue
        s = session[i]
        here = _missing_nb(timestamp[i - 1], timestamp[i], bar_ns, break_start[s], break_end[s])
        if here:
            if first < 0:
                first = timestamp[i - 1] + bar_ns
                if break_start[s] <= first < break_end[s]:
                    first = timestamp[i - 1] + bar_ns * _ceil_div_nb(
                        break_end[s] - timestamp[i - 1], bar_ns)
            gaps += 1
            missing += here
    return gaps, missing, first


@njit(cache=True, nogil=True)
def _fill_nb(timestamp, open_, high, low, close, volume, session, bar_ns, break_start,
             break_end, out_t, out_o, out_h, out_l, out_c, out_v, out_s):
    """Copy the bars into the `out_*` arrays, adding a flat zero-volume bar at the previous
    close for every slot `_gaps_nb` counts as missing (jumping over the break)."""
    j = 0
    for i in range(len(timestamp)):
        if i > 0 and session[i] == session[i - 1]:
            s = session[i]
            previous = timestamp[i - 1]
            t = previous + bar_ns
            price = close[i - 1]
            while t < timestamp[i]:
                if break_start[s] <= t < break_end[s]:
                    t = previous + bar_ns * _ceil_div_nb(break_end[s] - previous, bar_ns)
                    continue
                out_t[j] = t
                out_o[j] = price
                out_h[j] = price
                out_l[j] = price
                out_c[j] = price
                out_v[j] = 0.0
                out_s[j] = s
                j += 1
                t += bar_ns
        out_t[j] = timestamp[i]
        out_o[j] = open_[i]
        out_h[j] = high[i]
        out_l[j] = low[i]
        out_c[j] = close[i]
        out_v[j] = volume[i]
        out_s[j] = session[i]
        j += 1


@njit(cache=True, nogil=True)
def _flat_stretches_nb(open_, high, low, close, volume, session, min_bars):
    """(stretches, bars in them): runs of >= `min_bars` bars of one session, each with
    open = high = low = close equal to the run's price and zero volume."""
    stretches = 0
    flat_bars = 0
    run = 0
    for i in range(len(close)):
        flat = (volume[i] == 0.0 and open_[i] == close[i] and high[i] == close[i]
                and low[i] == close[i])
        if flat and run > 0 and session[i] == session[i - 1] and close[i] == close[i - 1]:
            run += 1
        else:
            if run >= min_bars:
                stretches += 1
                flat_bars += run
            run = 1 if flat else 0
    if run >= min_bars:
        stretches += 1
        flat_bars += run
    return stretches, flat_bars


@njit(cache=True, nogil=True)
def _leftmost_nb(sorted_values, value):
    """Index of the first of `sorted_values` not below `value` (``np.searchsorted``)."""
    low, high = 0, len(sorted_values)
    while low < high:
        middle = (low + high) // 2
        if sorted_values[middle] < value:
            low = middle + 1
        else:
            high = middle
    return low


@njit(cache=True, nogil=True)
def _outliers_nb(close, session, one_per_session, k, window, min_returns):
    """Bars whose |log return| exceeds k * 1.4826 * the median |log return| of the previous
    `window` returns (kept sorted: each return replaces the oldest in one pass)."""
    sorted_window = np.empty(window, np.float64)
    ring = np.empty(window, np.float64)
    count = 0
    head = 0
    outliers = 0
    for i in range(1, len(close)):
        if not one_per_session and session[i] != session[i - 1]:
            continue
        r = abs(np.log(close[i] / close[i - 1]))
        if count >= min_returns:
            if count % 2 == 1:
                median = sorted_window[count // 2]
            else:
                median = 0.5 * (sorted_window[count // 2 - 1] + sorted_window[count // 2])
            if median > 0.0 and r > k * 1.4826 * median:
                outliers += 1
        if count == window:
            # Replace the oldest return by this one in place: shift only the values ranked
            # between the two (a third of the window on average, not all of it).
            j = _leftmost_nb(sorted_window, ring[head])
            while j + 1 < count and sorted_window[j + 1] < r:
                sorted_window[j] = sorted_window[j + 1]
                j += 1
            while j > 0 and sorted_window[j - 1] > r:
                sorted_window[j] = sorted_window[j - 1]
                j -= 1
            sorted_window[j] = r
        else:
            j = count
            while j > 0 and sorted_window[j - 1] > r:
                sorted_window[j] = sorted_window[j - 1]
                j -= 1
            sorted_window[j] = r
            count += 1
        ring[head] = r
        head = (head + 1) % window
    return outliers
