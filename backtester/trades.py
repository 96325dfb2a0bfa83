"""What happened after an alert: trade specs, the bracket-exit kernel, forward returns and the
one-position-at-a-time pass.

Read top-down: the typed specs (`Level`, `Commission`, `TradeSpec`, `Horizon`) and their parsers
(`parse_trade`, `parse_forward`), the halo the pipeline must read (`lookahead`), the public
array functions (`simulate`, `forward_returns`, `select_non_overlapping`), then the compiled
kernels (`*_nb`), which take and return NumPy arrays only.

Why every trade needs a finite horizon
--------------------------------------
Each candidate signal is simulated on its own, inside the cluster that emitted it, from the
signal bar up to its horizon; the cluster reads a look-ahead halo past its signal range that
`lookahead` sizes. A trade with a bounded horizon (`max_bars`, `session_close`) therefore comes out
bit-for-bit the same whatever the cluster layout. A trade bounded only by `exit_when` or a trailing
stop could stay open for the rest of the data, which no finite halo covers, so `parse_trade`
rejects it with a `ConfigError` instead of silently truncating it at a cluster edge. (The
alternative, simulating such trades in the merge from masks shipped by every cluster, would move
the hot loop out of the parallel part and ship whole-data masks; we chose the bounded design.)

"One position at a time" is not decided here: every signal gets a trade as if it were taken, and
`select_non_overlapping` keeps, in one ordered pass, the trades an event-by-event simulation
would have taken. Because each candidate's outcome does not depend on the others, this equals the
sequential result.

Simulation conventions (all prices are the bar's own OHLC)
----------------------------------------------------------
docs/trades.md tells the same for users, and compares them with backtesting.py's and vectorbt's.

- Entry: `next_open` fills at the open of the bar after the signal bar (the *entry bar*);
  `close` fills at the signal bar's close and the trade is exposed from the next bar on
  (`stops_on_entry_bar` then has nothing to act on). Slippage moves every fill adversely.
- Levels: take profit and stop loss are measured from the fill (`bracket_from: fill`, default) or
  from the signal bar's close (`bracket_from: signal_close`, backtesting.py's `buy(sl=, tp=)`).
  Percent levels are ``base * (1 +/- v)``, ATR levels ``base +/- v * atr[signal bar]``, absolute
  levels ``base +/- v``. A level whose ATR is NaN (warm-up) never triggers.
- Held bars: the bars whose price path the open position is exposed to; with `next_open` the
  first one is the entry bar, with `close` the bar after the signal bar (the signal bar's close
  is the fill, so the position sees none of that bar). `max_bars` counts held bars, so both
  entries hold the same bars and a time exit leaves at the same open (``signal + max_bars + 1``);
  with `next_open` this is "the entry bar counted". On each held bar, in this order:
  1. exits decided before the bar, at its open: the time exit (``max_bars`` held bars already
     done; it wins over any level touched later in the bar), then `exit_when` true at the
     previous held bar's close (reason ``signal``). The rule is read at the close of every
     held bar, the first at the close of the first held bar: a flag at the close where the
     trade is entered (`entry: close`'s signal bar, or the signal bar of `next_open`) is not
     acted on, as in backtesting.py's event loop (the position opens after that bar's
     decision); vectorbt would call it a conflict and, by default, skip the entry instead.
     Write ``when: A and not B`` to keep out of such trades;
  2. gaps: a bar opening at or beyond the stop fills at the open (``sl_gap``, or ``trail`` when
     the trailing stop is the tighter stop), one opening at or beyond the target fills at the
     open (``tp_gap``);
  3. touches: low/high reaching the stop or target fills at the level; when one bar touches
     both, the stop is taken (conservative) and ``both_touched`` is set;
  4. session close: with `session_close`, the close of the session's last bar
     (``session_close``);
  5. the trailing stop's reference moves to the bar's favourable extreme (high for longs),
     after the bar's exits were checked: a new high cannot stop the trade out in the bar that
     made it, because the order of high and low inside a bar is unknown. An armed trail takes
     effect from the next bar. `trail_after` arms it once the favourable extreme has moved that
     far from the bracket base; the reference starts at the bracket base.
  With ``stops_on_entry_bar: false`` steps 2-3 are skipped on the entry bar (vectorbt's
  convention); with ``true`` (default) the entry bar's own high/low can trigger, as in
  backtesting.py.
- A trade still open at the last bar of the data exits at its close (``end_of_data``), when the
  caller says the slice ends the data; otherwise the halo must cover the horizon and a
  shortfall is a ``ValueError`` (a pipeline bug, never silent).
- `bars_held` counts held bars up to the exit; an exit at a bar's open does not count that bar,
  an exit inside a bar or at its close does. A time exit therefore has ``bars_held == max_bars``.
- MFE/MAE are the most favourable and most adverse price seen while held, as fractions of the
  entry fill (``mfe >= 0 >= mae``, signed so that adverse is negative for either side). Fully held
  bars contribute their high and low; the exit bar contributes the exit price (its whole range
  for exits at the close), since where the rest of that bar traded relative to the exit is
  unknown.
- Returns: ``gross = side * (exit - entry) / entry`` on slipped fills; ``net`` also subtracts the
  commission of both fills, ``max(minimum, quantity * (per_share + percent * price))`` each,
  relative to ``entry * quantity``.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from backtester.durations import DURATION_EXAMPLE, parse_duration_ns
from backtester.errors import ConfigError

__all__ = [
    "REASONS",
    "Commission",
    "Horizon",
    "Level",
    "TradeSpec",
    "forward_returns",
    "lookahead",
    "lookahead_ns",
    "parse_forward",
    "parse_trade",
    "select_non_overlapping",
    "simulate",
]

REASONS: tuple[str, ...] = (
    "tp", "sl", "tp_gap", "sl_gap", "trail", "signal", "time", "session_close", "end_of_data",
)
"""Exit reasons; `simulate` returns ``reason`` as an int8 index into this tuple."""

_TP, _SL, _TP_GAP, _SL_GAP, _TRAIL, _SIGNAL, _TIME, _SESSION_CLOSE, _END_OF_DATA = range(9)
_NOT_COVERED = -1  # the slice ended before the trade's horizon although data_end was False


@dataclass(frozen=True)
class Level:
    """A price distance: ``percent`` (0.01 for 1%), ``atr`` (2.0 for 2 x ATR(`atr_period`) at the
    signal bar) or ``price`` (an absolute offset, 0.5 for 50 cents)."""

    kind: str
    value: float
    atr_period: int = 14


@dataclass(frozen=True)
class Commission:
    """Per fill: ``max(minimum, quantity * (per_share + percent * price))``; `percent` is a
    fraction (0.001 for 0.1%)."""

    per_share: float = 0.0
    percent: float = 0.0
    minimum: float = 0.0


@dataclass(frozen=True)
class TradeSpec:
    """One alert's bracket trade, as parsed from its `trade:` block (see the module docstring for
    the simulation conventions). `quantity` (shares per trade) only matters for per-share
    commission minimums."""

    side: str = "long"
    entry: str = "next_open"
    take_profit: Level | None = None
    stop_loss: Level | None = None
    trailing_stop: Level | None = None
    trail_after: Level | None = None
    exit_when: str | None = None
    max_bars: int | None = None
    session_close: bool = False
    commission: Commission = Commission()
    slippage: Level | None = None
    bracket_from: str = "fill"
    stops_on_entry_bar: bool = True
    overlap: str = "skip"
    quantity: float = 1.0

    @property
    def atr_periods(self) -> tuple[int, ...]:
        """ATR periods the pipeline must evaluate for this spec's ATR-kind levels, sorted."""
        levels = (self.take_profit, self.stop_loss, self.trailing_stop, self.trail_after,
                  self.slippage)
        return tuple(sorted({lv.atr_period for lv in levels if lv is not None and lv.kind == "atr"}))


@dataclass(frozen=True)
class Horizon:
    """A forward-return horizon: `bars` after the signal bar, a wall-clock `duration_ns` after
    the signal bar's open time (the last bar opening at or before it), or the end of the
    signal's session (`eod`). `label` names the output columns (``ret_{label}``)."""

    label: str
    bars: int | None = None
    duration_ns: int | None = None
    eod: bool = False


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------

_TRADE_KEYS = (
    "side", "entry", "take_profit", "stop_loss", "trailing_stop", "trail_after", "exit_when",
    "max_bars", "session_close", "commission", "slippage", "bracket_from", "stops_on_entry_bar",
    "overlap", "quantity",
)
_CHOICES = {
    "side": ("long", "short"),
    "entry": ("next_open", "close"),
    "bracket_from": ("fill", "signal_close"),
    "overlap": ("skip", "allow"),
}
_LEVEL_HINT = "write 1% (percent), 2atr or atr(20)*2 (ATR multiple), or a number (price offset)"
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_PERCENT_RE = re.compile(rf"^{_NUMBER}\s*%$")
_ATR_RES = (
    re.compile(rf"^{_NUMBER}\s*\*?\s*atr(?:\s*\(\s*(\d+)\s*\))?$"),          # 2atr, 2 * atr(20)
    re.compile(rf"^atr(?:\s*\(\s*(\d+)\s*\))?\s*\*\s*{_NUMBER}$"),           # atr(20)*2
)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_level(raw: object, source: str, field: str, allow_zero: bool = False) -> Level:
    """`1%` -> percent 0.01; `2atr`, `2 atr`, `2*atr(20)`, `atr(20)*2` -> ATR multiple; a number
    (or numeric text) -> absolute price offset."""
    if _is_number(raw):
        level = Level("price", float(raw))
    elif isinstance(raw, str):
        text = raw.strip().lower()
        level = None
        if m := _PERCENT_RE.match(text):
            level = Level("percent", float(m.group(1)) / 100.0)
        elif m := _ATR_RES[0].match(text):
            level = Level("atr", float(m.group(1)), int(m.group(2) or 14))
        elif m := _ATR_RES[1].match(text):
            level = Level("atr", float(m.group(2)), int(m.group(1) or 14))
        else:
            try:
                level = Level("price", float(text))
            except ValueError:
                pass
        if level is None:
            raise ConfigError(source, field, f"cannot read {raw!r} as a price level", _LEVEL_HINT)
    else:
        raise ConfigError(source, field, f"expected a level, got {type(raw).__name__}", _LEVEL_HINT)
    if not math.isfinite(level.value) or level.value < 0 or (level.value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(source, field, f"level must satisfy: value {bound}, got {raw!r}")
    if level.kind == "atr" and level.atr_period < 1:
        raise ConfigError(source, field, f"ATR period must be >= 1, got {raw!r}")
    return level


def _parse_choice(raw: object, source: str, field: str, key: str) -> str:
    choices = _CHOICES[key]
    if raw not in choices:
        raise ConfigError(source, field, f"{raw!r} is not one of {', '.join(choices)}")
    return str(raw)


def _parse_bool(raw: object, source: str, field: str) -> bool:
    if not isinstance(raw, bool):
        raise ConfigError(source, field, f"expected true or false, got {raw!r}")
    return raw


def _parse_nonnegative(raw: object, source: str, field: str) -> float:
    if not _is_number(raw) or not math.isfinite(raw) or raw < 0:
        raise ConfigError(source, field, f"expected a number >= 0, got {raw!r}")
    return float(raw)


def _parse_commission(raw: object, source: str, field: str) -> Commission:
    if not isinstance(raw, Mapping):
        raise ConfigError(source, field, "expected a mapping",
                          "write {per_share: 0.005, percent: 0.1, minimum: 1.0}")
    values = {}
    for key, value in raw.items():
        where = f"{field}.{key}"
        if key not in ("per_share", "percent", "minimum"):
            raise ConfigError(source, where, f"unknown key {key!r}",
                              "use per_share, percent, minimum")
        if key == "percent":
            # `percent: 0.1` and `percent: 0.1%` both mean 0.1 percent of the fill's notional.
            text = value.strip().removesuffix("%") if isinstance(value, str) else value
            try:
                number = float(text) if isinstance(text, str) else text
            except ValueError:
                number = None
            values[key] = _parse_nonnegative(number, source, where) / 100.0
        else:
            values[key] = _parse_nonnegative(value, source, where)
    return Commission(**values)


def parse_trade(raw: object, source: str, field: str) -> TradeSpec:
    """Read an alert's `trade:` mapping into a `TradeSpec`; every problem is a `ConfigError`
    naming the dotted field (``alerts[0].trade.take_profit``).

    For example, ``parse_trade({"take_profit": "1%", "stop_loss": "2atr", "max_bars": 60},
    "rsi.yaml", "alerts[0].trade")`` gives percent 0.01 and 2 x ATR(14) levels.
    A trade must have a finite horizon (`max_bars` and/or `session_close: true`).
    In `commission`, ``percent: 0.1`` and ``percent: "0.1%"`` both mean 0.1 percent (stored as
    the fraction 0.001); `per_share` and `minimum` are in price units. `quantity` (shares per
    trade, default 1) only matters for the commission minimum.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(source, field, f"expected a mapping, got {type(raw).__name__}",
                          "write trade: {take_profit: 1%, stop_loss: 0.5%, max_bars: 60}")
    values: dict[str, object] = {}
    for key, value in raw.items():
        where = f"{field}.{key}"
        if key not in _TRADE_KEYS:
            close = difflib.get_close_matches(str(key), _TRADE_KEYS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(_TRADE_KEYS)}"
            raise ConfigError(source, where, f"unknown key {key!r}", hint)
        if value is None and key in ("take_profit", "stop_loss", "trailing_stop", "trail_after",
                                     "exit_when", "max_bars", "slippage"):
            continue
        if key in _CHOICES:
            values[key] = _parse_choice(value, source, where, key)
        elif key in ("take_profit", "stop_loss", "trailing_stop"):
            values[key] = _parse_level(value, source, where)
        elif key in ("trail_after", "slippage"):
            values[key] = _parse_level(value, source, where, allow_zero=True)
        elif key in ("session_close", "stops_on_entry_bar"):
            values[key] = _parse_bool(value, source, where)
        elif key == "max_bars":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(source, where, f"max_bars must satisfy: max_bars >= 1 "
                                  f"(an integer), got {value!r}")
            values[key] = value
        elif key == "exit_when":
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(source, where, "expected a rule expression",
                                  "for example exit_when: rsi(14) > 70")
            values[key] = value.strip()
        elif key == "commission":
            values[key] = _parse_commission(value, source, where)
        elif key == "quantity":
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise ConfigError(source, where, f"quantity must be > 0, got {value!r}")
            values[key] = float(value)
    spec = TradeSpec(**values)
    if spec.trail_after is not None and spec.trailing_stop is None:
        raise ConfigError(source, f"{field}.trail_after", "trail_after needs a trailing_stop",
                          "add trailing_stop: 1% or remove trail_after")
    if spec.max_bars is None and not spec.session_close:
        raise ConfigError(
            source, f"{field}.max_bars", "a trade needs a finite horizon",
            "set max_bars: N and/or session_close: true; trades are simulated inside each "
            "cluster with a bounded look-ahead halo, so exit_when or a trailing stop alone "
            "cannot bound them")
    return spec


def parse_forward(raw: object, source: str, field: str) -> tuple[Horizon, ...]:
    """Read `forward:` (``[5, 15, "30min", "eod"]``) into horizons: integers are bars, strings
    like ``30m``, ``30min``, ``1.5h`` are wall-clock durations (`backtester.durations`, the
    grammar `cooldown` reads too), ``eod`` is the end of the session.
    A single value is accepted as a one-element list; labels must be unique."""
    items = raw if isinstance(raw, (list, tuple)) else [raw]
    horizons: list[Horizon] = []
    hint = "write a list like [5, 15, 30min, eod]"
    for i, item in enumerate(items):
        where = f"{field}[{i}]"
        if isinstance(item, bool):
            raise ConfigError(source, where, f"expected a horizon, got {item!r}", hint)
        if isinstance(item, int) or (isinstance(item, str) and item.strip().isdigit()):
            bars = int(item)
            if bars < 1:
                raise ConfigError(source, where, f"horizon must satisfy: bars >= 1, got {item!r}")
            horizons.append(Horizon(str(bars), bars=bars))
            continue
        if not isinstance(item, str):
            raise ConfigError(source, where, f"expected a horizon, got {item!r}", hint)
        text = item.strip().lower()
        if text == "eod":
            horizons.append(Horizon("eod", eod=True))
        elif (duration_ns := parse_duration_ns(text)) is not None:
            horizons.append(Horizon(text.replace(" ", ""), duration_ns=duration_ns))
        else:
            raise ConfigError(source, where, f"cannot read {item!r} as a horizon",
                              f"use bars (15), a duration ({DURATION_EXAMPLE}) or eod")
    labels = [h.label for h in horizons]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise ConfigError(source, f"{field}[{i}]", f"horizon {label!r} appears twice")
    return tuple(horizons)


def lookahead(spec: TradeSpec | None, horizons: Sequence[Horizon], bar_ns: int) -> tuple[int, bool]:
    """The look-ahead halo a cluster needs after each signal bar, as ``(bars, to_session_end)``:
    the cluster must read bars up to ``signal_bar + bars``, and when `to_session_end`, on to the
    last bar of the session containing ``signal_bar + bars``.

    A trade needs ``max_bars + 1`` bars (entry, `max_bars` held bars, the time exit at the next
    open); a `session_close` trade without `max_bars` needs the entry bar's session. A bar
    horizon ``N`` needs ``N`` bars, `eod` the signal's session.

    A duration horizon ends at the last bar opening by ``signal time + duration`` and is only
    known to be complete once the bar after it is read, so on a regular grid of `bar_ns` it needs
    ``duration // bar_ns + 1`` bars. That count is what this function returns (it sizes the
    halo's cost for `auto` layouts), but it is no upper bound when bars are irregular (two bars
    closer than `bar_ns`): the scheduler therefore also extends each cluster by time, to the
    first bar opening after its last signal bar's time plus `lookahead_ns`, which is exact
    whatever the spacing. For example ``lookahead(spec_with_max_bars_60, [], bar_ns)`` is
    ``(61, False)`` and ``lookahead(None, [Horizon("30min", duration_ns=30 * 60 * 10**9)],
    60 * 10**9)`` is ``(31, False)``.
    """
    bars, to_session_end = 0, False
    for horizon in horizons:
        if horizon.bars is not None:
            bars = max(bars, horizon.bars)
        elif horizon.duration_ns is not None:
            bars = max(bars, horizon.duration_ns // bar_ns + 1)
        elif horizon.eod:
            to_session_end = True
    if spec is not None:
        if spec.max_bars is not None:
            bars = max(bars, spec.max_bars + 1)
        else:
            bars = max(bars, 1)
            to_session_end = True
    return bars, to_session_end


def lookahead_ns(horizons: Sequence[Horizon]) -> int:
    """The longest duration horizon in `horizons` in ns (0 without one): a cluster whose last
    signal bar opens at `t` must read up to the first bar opening after ``t + lookahead_ns``
    (see `lookahead`). For example ``lookahead_ns(parse_forward([5, "30min"], "f", "forward"))``
    is ``30 * 60 * 10**9``."""
    return max((h.duration_ns for h in horizons if h.duration_ns is not None), default=0)


# ---------------------------------------------------------------------------------------------
# Simulation
# ---------------------------------------------------------------------------------------------

_RELATIVE, _ABSOLUTE = 1, 2


def _level_arrays(level: Level | None, signal_idx: np.ndarray,
                  atr: Mapping[int, np.ndarray] | None) -> tuple[int, np.ndarray]:
    """A level as (kind code, per-signal value): percent -> relative fraction; atr -> the
    absolute distance ``value * atr[signal bar]``; price -> the absolute offset."""
    if level is None:
        return 0, np.zeros(len(signal_idx))
    if level.kind == "percent":
        return _RELATIVE, np.full(len(signal_idx), level.value)
    if level.kind == "price":
        return _ABSOLUTE, np.full(len(signal_idx), level.value)
    if atr is None or level.atr_period not in atr:
        raise ValueError(f"simulate: the spec needs atr[{level.atr_period}] (see atr_periods)")
    values = np.asarray(atr[level.atr_period], dtype=np.float64)
    return _ABSOLUTE, level.value * values[signal_idx]


def _session_last_bar(session: np.ndarray, bars: np.ndarray, data_end: bool,
                      last_session_complete: bool) -> np.ndarray:
    """Per bar in `bars`, the index of its session's last bar in the slice, or -1 when the slice
    ends inside that session and the session may go on past the data."""
    session = np.asarray(session)
    n = len(session)
    last = np.searchsorted(session, session[bars], side="right").astype(np.int64) - 1
    if data_end and not last_session_complete:
        last[last == n - 1] = -1
    return last


def simulate(spec: TradeSpec, signal_idx: np.ndarray, *, timestamp: np.ndarray,
             open: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
             session: np.ndarray, atr: Mapping[int, np.ndarray] | None = None,
             exit_signal: np.ndarray | None = None, data_end: bool,
             last_session_complete: bool = True) -> dict[str, np.ndarray]:
    """Simulate one bracket trade per signal, each as if it were taken (see the module docstring
    for every convention).

    `signal_idx` are sorted int positions in the slice's arrays; `atr[period]` ATR values aligned
    with the slice (needed for ATR levels, see `TradeSpec.atr_periods`); `exit_signal` a bool mask
    where `spec.exit_when` is true. `data_end` says the slice's last bar is the data's last bar:
    a trade running off it exits at its close (``end_of_data``, or ``session_close`` when the
    spec asks for it and `last_session_complete`, the default, says the data ends on a session
    close). With ``data_end=False`` the halo must cover every horizon, else ``ValueError``.

    Returns equal-length columns, one row per signal that could enter (a ``next_open`` signal on
    the data's last bar cannot): ``signal_idx, entry_idx, entry_price, exit_idx, exit_price,
    reason`` (int8 into `REASONS`), ``bars_held, gross_return, net_return, mfe, mae,
    both_touched``.
    """
    del timestamp  # positions suffice; kept in the signature so callers pass whole bar slices
    signal_idx = np.ascontiguousarray(signal_idx, dtype=np.int64)
    open_, high_, low_, close_ = (np.ascontiguousarray(a, dtype=np.float64)
                                  for a in (open, high, low, close))
    n = len(close_)
    if len(signal_idx) and (signal_idx[0] < 0 or signal_idx[-1] >= n):
        raise ValueError("simulate: signal_idx out of the slice")
    if len(signal_idx) > 1 and np.any(np.diff(signal_idx) < 0):
        raise ValueError("simulate: signal_idx must be sorted")
    return simulate_sorted(spec, signal_idx, open=open_, high=high_, low=low_, close=close_,
                           session=session, atr=atr, exit_signal=exit_signal, data_end=data_end,
                           last_session_complete=last_session_complete)


def simulate_sorted(spec: TradeSpec, signal_idx: np.ndarray, *, open: np.ndarray,
                    high: np.ndarray, low: np.ndarray, close: np.ndarray, session: np.ndarray,
                    atr: Mapping[int, np.ndarray] | None, exit_signal: np.ndarray | None,
                    data_end: bool, last_session_complete: bool) -> dict[str, np.ndarray]:
    """`simulate` for callers that guarantee its preconditions: `signal_idx` sorted int64
    positions inside the slice, `open` ... `close` contiguous float64 (a cluster's candidate
    rows, which come sorted from one pass). Same results; none of the per-call checks."""
    open_, high_, low_, close_ = open, high, low, close
    n = len(close_)
    side = 1.0 if spec.side == "long" else -1.0
    tp_kind, tp_value = _level_arrays(spec.take_profit, signal_idx, atr)
    sl_kind, sl_value = _level_arrays(spec.stop_loss, signal_idx, atr)
    trail_kind, trail_value = _level_arrays(spec.trailing_stop, signal_idx, atr)
    arm_kind, arm_value = _level_arrays(spec.trail_after, signal_idx, atr)
    slip_kind, slip_value = _level_arrays(spec.slippage, signal_idx, atr)
    use_exit_signal = spec.exit_when is not None and exit_signal is not None
    exit_mask = (np.ascontiguousarray(exit_signal, dtype=np.bool_) if use_exit_signal
                 else np.zeros(0, dtype=np.bool_))
    if use_exit_signal and len(exit_mask) != n:
        raise ValueError("simulate: exit_signal must be aligned with the slice")
    entry_bar = signal_idx if spec.entry == "close" else np.minimum(signal_idx + 1, n - 1)
    session_last = _session_last_bar(session, entry_bar, data_end, last_session_complete)
    commission = spec.commission
    out = _simulate_nb(
        signal_idx, open_, high_, low_, close_, session_last, exit_mask, use_exit_signal,
        side, spec.entry == "close", spec.bracket_from == "signal_close",
        spec.stops_on_entry_bar, spec.max_bars or 0, spec.session_close, data_end,
        tp_kind, tp_value, sl_kind, sl_value, trail_kind, trail_value, arm_kind, arm_value,
        spec.trail_after is not None, slip_kind, slip_value,
        commission.per_share, commission.percent, commission.minimum, spec.quantity,
    )
    names = ("entry_idx", "entry_price", "exit_idx", "exit_price", "reason", "bars_held",
             "gross_return", "net_return", "mfe", "mae", "both_touched")
    columns = dict(zip(names, out))
    reason = columns["reason"]
    if np.any(reason == _NOT_COVERED):
        first = int(signal_idx[np.argmax(reason == _NOT_COVERED)])
        raise ValueError(f"simulate: the slice ends before the horizon of the trade signalled at "
                         f"bar {first} although data_end=False (look-ahead halo too short)")
    entered = columns["entry_idx"] >= 0
    if entered.all():   # the rule: only a next_open signal on the data's last bar cannot enter
        return {"signal_idx": signal_idx.copy(), **columns}
    result = {"signal_idx": signal_idx[entered]}
    result.update({name: column[entered] for name, column in columns.items()})
    return result


@njit(cache=True, nogil=True)
def _level_price_nb(base, kind, value, direction):
    """The price `value` away from `base` in `direction` (+1 up, -1 down); +/-inf when absent."""
    if kind == 0:
        return direction * np.inf
    if kind == _RELATIVE:
        return base * (1.0 + direction * value)
    return base + direction * value


@njit(cache=True, nogil=True)
def _commission_nb(price, per_share, percent, minimum, quantity):
    return max(minimum, quantity * (per_share + percent * price))


@njit(cache=True, nogil=True)
def _simulate_nb(signal_idx, open_, high, low, close, session_last, exit_signal, use_exit_signal,
                 side, entry_on_close, bracket_from_signal_close, stops_on_entry_bar, max_bars,
                 session_close, data_end, tp_kind, tp_value, sl_kind, sl_value, trail_kind,
                 trail_value, arm_kind, arm_value, has_trail_after, slip_kind, slip_value,
                 per_share, percent, minimum, quantity):
    """Bracket exits for every signal; the loop over signals and bars of the Python `simulate`.
    Rows of signals that cannot enter get ``entry_idx == -1``; rows whose horizon the slice does
    not cover (``data_end`` False) get reason -1."""
    m = len(signal_idx)
    n = len(close)
    entry_idx = np.full(m, -1, dtype=np.int64)
    entry_price = np.full(m, np.nan)
    exit_idx = np.full(m, -1, dtype=np.int64)
    exit_price = np.full(m, np.nan)
    reason = np.full(m, _NOT_COVERED, dtype=np.int8)
    bars_held = np.zeros(m, dtype=np.int64)
    gross = np.full(m, np.nan)
    net = np.full(m, np.nan)
    mfe = np.full(m, np.nan)
    mae = np.full(m, np.nan)
    both = np.zeros(m, dtype=np.bool_)
    for k in range(m):
        s = signal_idx[k]
        first = s + 1  # first held bar
        if entry_on_close:
            e = s
            raw_entry = close[s]
        else:
            if first >= n:
                if not data_end:
                    reason[k] = _NOT_COVERED
                else:
                    reason[k] = _END_OF_DATA  # no bar to enter on: dropped by the wrapper
                continue
            e = first
            raw_entry = open_[e]
        # adverse slippage: longs pay up, shorts sell lower
        fill = _level_price_nb(raw_entry, slip_kind, slip_value[k], side) if slip_kind else raw_entry
        base = close[s] if bracket_from_signal_close else fill
        tp = _level_price_nb(base, tp_kind, tp_value[k], side)
        sl = _level_price_nb(base, sl_kind, sl_value[k], -side)
        arm = _level_price_nb(base, arm_kind, arm_value[k], side) if has_trail_after else base
        armed = trail_kind != 0 and not has_trail_after
        best = base  # trailing reference: most favourable extreme so far
        trail = _level_price_nb(best, trail_kind, trail_value[k], -side) if armed else -side * np.inf
        fav = fill
        adv = fill
        last_bar = session_last[k]
        code = _NOT_COVERED
        price = np.nan
        j = first
        held = 0
        if session_close and entry_on_close and last_bar == s:
            # entered at the session's last close: out at the same close, never overnight
            code, price, j, held = _SESSION_CLOSE, close[s], s, 1
        while code == _NOT_COVERED and j < n:
            o = open_[j]
            # 1. exits decided before this bar, at its open
            if max_bars > 0 and j - first >= max_bars:
                code, price = _TIME, o
                break
            if use_exit_signal and j - 1 >= first and exit_signal[j - 1]:
                code, price = _SIGNAL, o
                break
            hi = high[j]
            lo = low[j]
            fav_ext = hi if side > 0 else lo
            adv_ext = lo if side > 0 else hi
            if stops_on_entry_bar or j != e:
                use_trail = armed and side * (trail - sl) > 0
                stop = trail if use_trail else sl
                # 2. gaps through a level fill at the open
                if side * (o - stop) <= 0:
                    code, price = (_TRAIL if use_trail else _SL_GAP), o
                    break
                if side * (o - tp) >= 0:
                    code, price = _TP_GAP, o
                    break
                # 3. touches; the stop first when both are touched
                hit_stop = side * (adv_ext - stop) <= 0
                hit_tp = side * (fav_ext - tp) >= 0
                if hit_stop:
                    code, price = (_TRAIL if use_trail else _SL), stop
                    both[k] = hit_tp
                    held = 1
                    break
                if hit_tp:
                    code, price = _TP, tp
                    held = 1
                    break
            if side * (fav_ext - fav) > 0:
                fav = fav_ext
            if side * (adv_ext - adv) < 0:
                adv = adv_ext
            # 4. session close
            if session_close and j == last_bar:
                code, price = _SESSION_CLOSE, close[j]
                held = 1
                break
            # 5. the trailing stop follows the bar's favourable extreme, effective next bar
            if trail_kind != 0:
                if side * (fav_ext - best) > 0:
                    best = fav_ext
                if not armed and side * (best - arm) >= 0:
                    armed = True
                if armed:
                    trail = _level_price_nb(best, trail_kind, trail_value[k], -side)
            j += 1
        if code == _NOT_COVERED:
            if not data_end:
                continue
            # ran off the data; every bar up to the last was fully held and already counted
            code, price, j, held = _END_OF_DATA, close[n - 1], n - 1, 1
        if side * (price - fav) > 0:
            fav = price
        if side * (price - adv) < 0:
            adv = price
        out_fill = _level_price_nb(price, slip_kind, slip_value[k], -side) if slip_kind else price
        entry_idx[k] = e
        entry_price[k] = fill
        exit_idx[k] = j
        exit_price[k] = out_fill
        reason[k] = code
        bars_held[k] = j - first + held
        gross[k] = side * (out_fill - fill) / fill
        costs = (_commission_nb(fill, per_share, percent, minimum, quantity)
                 + _commission_nb(out_fill, per_share, percent, minimum, quantity))
        net[k] = gross[k] - costs / (fill * quantity)
        mfe[k] = max(0.0, side * (fav - fill) / fill)
        mae[k] = min(0.0, side * (adv - fill) / fill)
    return (entry_idx, entry_price, exit_idx, exit_price, reason, bars_held, gross, net, mfe, mae,
            both)


# ---------------------------------------------------------------------------------------------
# Forward returns
# ---------------------------------------------------------------------------------------------

def forward_returns(horizons: Sequence[Horizon], signal_idx: np.ndarray, *, timestamp: np.ndarray,
                    close: np.ndarray, high: np.ndarray, low: np.ndarray, session: np.ndarray,
                    data_end: bool, last_session_complete: bool = True) -> dict[str, np.ndarray]:
    """What the price did after each signal, per horizon label ``L``: ``ret_L`` (close at the
    horizon's end bar / signal bar's close - 1), ``mfe_L`` / ``mae_L`` (highest high / lowest low
    over the bars after the signal bar up to the end bar, relative to the signal bar's close,
    ``mfe >= 0 >= mae``, long perspective) and ``complete_L``.

    End bars: ``bars`` -> ``signal + bars``; a duration -> the last bar opening at or before
    ``timestamp[signal] + duration`` (so it never crosses an overnight gap); ``eod`` -> the last
    bar of the signal's session. A horizon running past the data is marked ``complete_L=False``
    with NaN values, never shortened; a duration or eod horizon counts as complete once a later
    bar (or, for ``eod`` with `last_session_complete`, the end of the data) shows it is over.
    With ``data_end=False`` the slice must cover every horizon, else ``ValueError``.
    """
    signal_idx = np.ascontiguousarray(signal_idx, dtype=np.int64)
    timestamp = np.asarray(timestamp, dtype=np.int64)
    close_, high_, low_ = (np.ascontiguousarray(a, dtype=np.float64) for a in (close, high, low))
    n = len(close_)
    out: dict[str, np.ndarray] = {}
    for horizon in horizons:
        if horizon.bars is not None:
            end = signal_idx + horizon.bars
            complete = end < n
        elif horizon.duration_ns is not None:
            after = np.searchsorted(timestamp, timestamp[signal_idx] + horizon.duration_ns,
                                    side="right")
            end = after - 1
            complete = after < n
        else:
            session_arr = np.asarray(session)
            after = np.searchsorted(session_arr, session_arr[signal_idx], side="right")
            end = after - 1
            complete = (after < n) | last_session_complete
        if not data_end:
            if not np.all(complete):
                raise ValueError(f"forward_returns: the slice ends before horizon "
                                 f"{horizon.label!r} although data_end=False")
        complete = np.asarray(complete, dtype=np.bool_)
        ret, mfe, mae = _forward_nb(signal_idx, np.minimum(end, n - 1).astype(np.int64),
                                    complete, close_, high_, low_)
        label = horizon.label
        out[f"ret_{label}"] = ret
        out[f"mfe_{label}"] = mfe
        out[f"mae_{label}"] = mae
        out[f"complete_{label}"] = complete
    return out


@njit(cache=True, nogil=True)
def _forward_nb(signal_idx, end_idx, complete, close, high, low):
    """Return, max favourable and max adverse excursion from ``close[s]`` over ``(s, end]``;
    NaN where not `complete`."""
    m = len(signal_idx)
    ret = np.full(m, np.nan)
    mfe = np.full(m, np.nan)
    mae = np.full(m, np.nan)
    for k in range(m):
        if not complete[k]:
            continue
        s = signal_idx[k]
        ref = close[s]
        top = ref
        bottom = ref
        for j in range(s + 1, end_idx[k] + 1):
            if high[j] > top:
                top = high[j]
            if low[j] < bottom:
                bottom = low[j]
        ret[k] = close[end_idx[k]] / ref - 1.0
        mfe[k] = top / ref - 1.0
        mae[k] = bottom / ref - 1.0
    return ret, mfe, mae


# ---------------------------------------------------------------------------------------------
# One position at a time
# ---------------------------------------------------------------------------------------------

def select_non_overlapping(signal_time: np.ndarray, exit_time: np.ndarray,
                           group: np.ndarray | None = None) -> np.ndarray:
    """Which candidate trades an event-by-event simulation takes, holding one position at a time:
    a trade is taken when the previous taken trade's exit bar opened at or before its signal bar
    (``exit_time <= signal_time``; a trade exiting during the signal bar no longer blocks).

    Inputs are sorted by `signal_time` (within each `group`, when given: integer codes, sorted,
    e.g. one per alert and symbol, each group starting afresh). Returns a bool mask.
    For example, signals at 0, 5, 9 with exits at 6, 8, 12 give ``[True, False, True]``.
    """
    signal_time = np.ascontiguousarray(signal_time, dtype=np.int64)
    exit_time = np.ascontiguousarray(exit_time, dtype=np.int64)
    if group is None:
        group = np.zeros(len(signal_time), dtype=np.int64)
    group = np.ascontiguousarray(group, dtype=np.int64)
    if not (len(signal_time) == len(exit_time) == len(group)):
        raise ValueError("select_non_overlapping: inputs must have equal length")
    return _select_non_overlapping_nb(signal_time, exit_time, group)


_NO_TIME = -(2**63)


@njit(cache=True, nogil=True)
def _select_non_overlapping_nb(signal_time, exit_time, group):
    taken = np.zeros(len(signal_time), dtype=np.bool_)
    busy_until = _NO_TIME
    for i in range(len(signal_time)):
        if i > 0 and group[i] != group[i - 1]:
            busy_until = _NO_TIME
        if signal_time[i] >= busy_until:
            taken[i] = True
            busy_until = exit_time[i]
    return taken


# ---------------------------------------------------------------------------------------------
# Every alert of a cluster in one call
# ---------------------------------------------------------------------------------------------
# `forward_returns` and `simulate` take one alert's signals at a time, with a few NumPy calls
# each: per cluster and alert that is Python holding the GIL. A cluster's candidate rows come
# from one kernel as one sorted array per alert (`rows[offsets[j]:offsets[j + 1]]`), so the
# kernels below take them all at once and return flat columns, one block per (alert, horizon) or
# per trading alert, with the same values bit for bit (tests/test_tail.py).

HORIZON_BARS, HORIZON_DURATION, HORIZON_EOD = 0, 1, 2
LEVEL_FIELDS = ("take_profit", "stop_loss", "trailing_stop", "trail_after", "slippage")


def horizon_codes(horizons: Sequence[Horizon]) -> tuple[np.ndarray, np.ndarray]:
    """(kind, value) per horizon for `forward_many_nb`: bars, a duration in ns, or eod."""
    kind = [HORIZON_BARS if h.bars is not None else
            HORIZON_DURATION if h.duration_ns is not None else HORIZON_EOD for h in horizons]
    value = [h.bars if h.bars is not None else h.duration_ns or 0 for h in horizons]
    return np.array(kind, dtype=np.int64), np.array(value, dtype=np.int64)


def trade_codes(spec: TradeSpec, has_exit: bool) -> tuple[tuple[bool, ...], int,
                                                         tuple[float, ...]]:
    """(flags, max_bars, costs) of `spec` for `simulate_many_nb` (see there); `has_exit` says
    the exit rule's values are given."""
    flags = (spec.side == "long", spec.entry == "close", spec.bracket_from == "signal_close",
             spec.stops_on_entry_bar, spec.session_close, spec.trail_after is not None,
             spec.exit_when is not None and has_exit)
    c = spec.commission
    return flags, spec.max_bars or 0, (c.per_share, c.percent, c.minimum, spec.quantity)


def level_codes(spec: TradeSpec, atr_slot) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kind, value, atr slot or -1) of `spec`'s five levels (`LEVEL_FIELDS` order) for
    `simulate_many_nb`; `atr_slot(period)` names the row holding ATR(period)."""
    kind = np.zeros(len(LEVEL_FIELDS), dtype=np.int64)
    value = np.zeros(len(LEVEL_FIELDS), dtype=np.float64)
    slot = np.full(len(LEVEL_FIELDS), -1, dtype=np.int64)
    for i, name in enumerate(LEVEL_FIELDS):
        level = getattr(spec, name)
        if level is None:
            continue
        kind[i] = _RELATIVE if level.kind == "percent" else _ABSOLUTE
        value[i] = level.value
        if level.kind == "atr":
            slot[i] = atr_slot(level.atr_period)
    return kind, value, slot


@njit(cache=True, nogil=True)
def _search_right_nb(a, x):
    """`np.searchsorted(a, x, side="right")` for a sorted int64 `a`."""
    lo = 0
    hi = len(a)
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def forward_many_nb(rows, offsets, h_alert, h_kind, h_value, timestamp, session, close, high,
                    low, last_session_complete):
    """`forward_returns` of every horizon h (of alert ``h_alert[h]``, signals
    ``rows[offsets[a]:offsets[a + 1]]``) in one call: ``ret``, ``mfe``, ``mae``, ``complete``
    with horizon h's values in ``[starts[h], starts[h + 1])``."""
    n_h = len(h_alert)
    n = len(close)
    starts = np.zeros(n_h + 1, dtype=np.int64)
    for h in range(n_h):
        a = h_alert[h]
        starts[h + 1] = starts[h] + offsets[a + 1] - offsets[a]
    total = starts[n_h]
    ret = np.full(total, np.nan)
    mfe = np.full(total, np.nan)
    mae = np.full(total, np.nan)
    complete = np.zeros(total, dtype=np.bool_)
    for h in range(n_h):
        a = h_alert[h]
        kind = h_kind[h]
        for k in range(offsets[a + 1] - offsets[a]):
            s = rows[offsets[a] + k]
            if kind == HORIZON_BARS:
                end = s + h_value[h]
                done = end < n
            elif kind == HORIZON_DURATION:
                after = _search_right_nb(timestamp, timestamp[s] + h_value[h])
                end = after - 1
                done = after < n
            else:
                after = _search_right_nb(session, session[s])
                end = after - 1
                done = after < n or last_session_complete
            out = starts[h] + k
            complete[out] = done
            if not done:
                continue
            end = min(end, n - 1)
            ref = close[s]
            top = ref
            bottom = ref
            for j in range(s + 1, end + 1):
                if high[j] > top:
                    top = high[j]
                if low[j] < bottom:
                    bottom = low[j]
            ret[out] = close[end] / ref - 1.0
            mfe[out] = top / ref - 1.0
            mae[out] = bottom / ref - 1.0
    return ret, mfe, mae, complete, starts


@njit(cache=True, nogil=True)
def simulate_many_nb(rows, offsets, t_alert, t_flags, t_max_bars, t_costs, level_kind,
                     level_value, level_slot, exit_slot, values, open_, high, low, close, session,
                     data_end, last_session_complete, row_offset):
    """`simulate` for every trading alert t (of alert ``t_alert[t]``) in one call, keeping the
    trades that enter: twelve flat columns (signal, entry and exit rows plus `row_offset`, then
    `simulate`'s), trade t's in ``[starts[t], starts[t + 1])``, and the first signal row whose
    horizon the slice does not cover (-1: none; `data_end` False only).

    ``t_flags[t]``: long, entry on close, bracket from signal close, stops on entry bar,
    session close, trail_after set, exit_when set; ``t_costs[t]``: per share, percent, minimum,
    quantity; levels as `level_codes`; ``exit_slot[t]`` the row of `values` holding the exit
    rule (-1: none); ATR levels read ``values[level_slot]`` at the signal bar."""
    n = len(close)
    n_t = len(t_alert)
    capacity = 0
    for t in range(n_t):
        a = t_alert[t]
        capacity += offsets[a + 1] - offsets[a]
    signal_out = np.empty(capacity, dtype=np.int64)
    entry_idx = np.empty(capacity, dtype=np.int64)
    entry_price = np.empty(capacity)
    exit_idx = np.empty(capacity, dtype=np.int64)
    exit_price = np.empty(capacity)
    reason = np.empty(capacity, dtype=np.int8)
    bars_held = np.empty(capacity, dtype=np.int64)
    gross = np.empty(capacity)
    net = np.empty(capacity)
    mfe = np.empty(capacity)
    mae = np.empty(capacity)
    both = np.empty(capacity, dtype=np.bool_)
    starts = np.zeros(n_t + 1, dtype=np.int64)
    uncovered = -1
    at = 0
    no_exit = np.zeros(0, dtype=np.bool_)
    for t in range(n_t):
        a = t_alert[t]
        signal_idx = rows[offsets[a]:offsets[a + 1]].copy()
        m = len(signal_idx)
        kinds = level_kind[t]
        level_values = []
        for i in range(5):
            v = np.empty(m)
            slot = level_slot[t, i]
            for k in range(m):
                v[k] = level_value[t, i] * values[slot, signal_idx[k]] if slot >= 0 \
                    else level_value[t, i]
            level_values.append(v)
        use_exit = exit_slot[t] >= 0
        exit_mask = no_exit
        if use_exit:
            exit_mask = values[exit_slot[t]] == 1.0
        flags = t_flags[t]
        entry_on_close = flags[1]
        session_last = np.empty(m, dtype=np.int64)
        for k in range(m):
            e = signal_idx[k] if entry_on_close else min(signal_idx[k] + 1, n - 1)
            last = _search_right_nb(session, session[e]) - 1
            if data_end and not last_session_complete and last == n - 1:
                last = -1
            session_last[k] = last
        costs = t_costs[t]
        out = _simulate_nb(
            signal_idx, open_, high, low, close, session_last, exit_mask, use_exit,
            1.0 if flags[0] else -1.0, entry_on_close, flags[2], flags[3], t_max_bars[t],
            flags[4], data_end, kinds[0], level_values[0], kinds[1], level_values[1],
            kinds[2], level_values[2], kinds[3], level_values[3], flags[5], kinds[4],
            level_values[4], costs[0], costs[1], costs[2], costs[3])
        for k in range(m):
            if out[4][k] == _NOT_COVERED and uncovered < 0:
                uncovered = signal_idx[k]
            if out[0][k] < 0:
                continue
            signal_out[at] = signal_idx[k] + row_offset
            entry_idx[at] = out[0][k] + row_offset
            entry_price[at] = out[1][k]
            exit_idx[at] = out[2][k] + row_offset
            exit_price[at] = out[3][k]
            reason[at] = out[4][k]
            bars_held[at] = out[5][k]
            gross[at] = out[6][k]
            net[at] = out[7][k]
            mfe[at] = out[8][k]
            mae[at] = out[9][k]
            both[at] = out[10][k]
            at += 1
        starts[t + 1] = at
    return ((signal_out[:at], entry_idx[:at], entry_price[:at], exit_idx[:at], exit_price[:at],
             reason[:at], bars_held[:at], gross[:at], net[:at], mfe[:at], mae[:at], both[:at]),
            starts, uncovered)
