"""Indicator kernels and the registry that describes them: inputs, outputs, parameters,
lookback and warm-up.

Every indicator is one `register(Indicator(...))` entry below. Kernels take and return NumPy
float64 arrays only (no pandas). Where TA-Lib has the indicator we call its C kernel (the 0.8
wrappers release the GIL around each call); our own kernels, for what TA-Lib lacks, are numba
`@njit(cache=True, nogil=True)` functions ending in `_nb`, each naming the pandas expression it
equals (the test oracle). Nothing here loops over bars in Python.

Promises `compute` keeps for every indicator:

- **Shape.** Outputs are float64, as long as the inputs; bars before the first value are NaN.
- **Lookback.** `lookback(name, **params)` returns `(bars, sessions)`: on finite input that many
  bars (or whole sessions, for relative_volume) precede the first value of every output.
- **Warm-up.** `warmup(name, **params)` returns `(bars, sessions)`. A slice that reads back that
  many *counted* bars (or: to the start of the session `sessions - 1` sessions before) before a
  bar gives, at that bar, the value of a pass over the whole series within 1e-9 relative (of
  the value, or of the series' scale near 0); `warmup_starts` finds where such a slice begins.
  For recursive indicators the bars are the lookback plus the bars after which the starting
  value weighs < 1e-12 (`bars_until_weight_below`). A bar counts unless the indicator names
  the bars that carry information for it (`settles_on`): Wilder ratios (rsi, stochrsi: the
  source moved; atr, natr: a true range above 0; adx: directional movement) keep their
  relative start error through bars without such information, since the smoothed quantities
  and their errors then shrink alike, so only informative bars count towards the decay.
  See `warmup_starts` for what this guarantees and where it stops.
- **Non-finite input (NaN policy).** TA-Lib skips leading NaNs but one NaN or inf in the middle
  poisons every later value. We compute per finite run instead: a bar where any input is NaN or
  inf gives NaN, and the indicator restarts after it (its lookback applies again). Runs no
  longer than the lookback give no values and cost nothing. All-finite input (the common case)
  is one kernel call, and inputs the caller vouches for (`known_finite`, the bar fields) are not
  even scanned. Indicators whose value is computed from the last `lookback + 1` bars alone
  (`stateless_window`) take one call on the series with bad bars filled, then mask the bars
  whose window touches one; the others take one call per run longer than the lookback.
  Session-anchored indicators (vwap, relative_volume) and cumulative ones (obv) instead skip
  the bad bar (NaN there, no contribution) and carry on.
- **Cumulative indicators** (`cumulative=True`, obv) depend on the whole history. For any r
  with finite input at r, ``compute(x[r:]) - compute(x[r:])[0] == compute(x)[r:] -
  compute(x)[r]``, exactly for integer volumes, so the pipeline anchors them at the first bar of
  the data and adds a per-cluster offset resolved in the parent (local totals, an exclusive
  prefix sum); their warm-up is 0.
- **TA-Lib's globals.** Its unstable periods and compatibility mode must stay at their defaults
  (0, TA-Lib's own): the lookbacks, warm-ups and conventions here assume them. Importing this
  module checks them and refuses to run with others.

For example:

>>> import numpy as np
>>> close = np.linspace(100.0, 110.0, 400)
>>> compute("sma", close, period=3)[:4].round(4).tolist()
[nan, nan, 100.0251, 100.0501]
>>> warmup("rsi", period=14)
(387, 0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import talib
from numba import njit

__all__ = [
    "BUILT_IN", "REGISTRY", "Indicator", "Param", "Sessions", "bars_until_weight_below",
    "bind_params", "compute", "custom", "derive", "get", "informative_bars", "install",
    "lookback", "lookback_bars", "register", "render_docs", "ship", "talib_version", "warmup",
    "warmup_bars", "warmup_starts",
]

MAX_PERIOD = 100_000  # TA-Lib's own upper bound for every period parameter
WEIGHT_TOLERANCE = 1e-12  # a recursive indicator is warm once its start weighs less than this
PRICE_FIELDS = ("open", "high", "low", "close", "volume", "hl2", "hlc3", "ohlc4")
INTEGER_FIELDS = ("session", "minute_of_day")


def _check_talib_globals() -> None:
    """Refuse to run on TA-Lib globals other than its defaults: a non-zero unstable period or
    the Metastock compatibility mode change RSI, EMA, ATR and ADX outputs and lookbacks."""
    unstable = {name: talib.get_unstable_period(name)
                for name in ("ADX", "ATR", "DX", "EMA", "MINUS_DI", "MINUS_DM", "NATR",
                             "PLUS_DI", "PLUS_DM", "RSI")}
    changed = {name: value for name, value in unstable.items() if value != 0}
    if changed or talib.get_compatibility() != 0:
        raise ImportError(
            f"backtester.indicators: TA-Lib globals changed (unstable periods {changed}, "
            f"compatibility {talib.get_compatibility()}); our lookbacks and warm-ups assume "
            f"TA-Lib's defaults (call talib.set_unstable_period('ALL', 0) and "
            f"talib.set_compatibility(0) first)")


_check_talib_globals()


# --------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class Param:
    """One numeric parameter: `kind` is int or float, `minimum`/`maximum` are inclusive bounds,
    `default` None means the caller must give it."""

    name: str
    kind: type
    default: int | float | None
    minimum: float
    maximum: float | None = None


@dataclass(frozen=True)
class Sessions:
    """A span measured in exchange sessions. As a warm-up: `count` sessions including the
    current one. As a lookback: `count` whole sessions before the session of the first value."""

    count: int


@dataclass(frozen=True, kw_only=True)
class Indicator:
    """What the expression layer and the planner need to know about one indicator.

    `kernel(*arrays, **params)` gets one float64 (or int64 for `session`/`minute_of_day`) array
    per name in `inputs`, in order, and returns one array or a tuple: the `outputs` that are not
    `derived`, in order. `derived` maps the remaining outputs, in order, to functions of
    ``(*inputs, *kernel_outputs)`` computed only when asked for. `lookback(**params)` and
    `warmup(**params)` take the bound parameters and return bars or `Sessions`. With
    `source=True` a rule may pass its own series in place of `inputs[0]` (``sma(high, 20)``).

    `earliest_lookback(**params)`, where one output starts before the others (adx's +DI and
    -DI), is the bars before that first one; runs of finite input no longer than it give no
    values and are skipped. `settles_on(*inputs)`, for recursive ratios, is a bool mask of the bars that shrink the
    relative error of the indicator's starting value; its warm-up is counted in those bars
    (see `warmup_starts`). `stateless_window` says the value at a bar is an exact function of
    that bar and the `lookback` bars before it (no running sums, no recursion).
    """

    name: str
    kernel: Callable[..., np.ndarray | tuple[np.ndarray, ...]]
    inputs: tuple[str, ...]
    params: tuple[Param, ...]
    outputs: tuple[str, ...] = ()
    derived: tuple[tuple[str, Callable[..., np.ndarray]], ...] = ()
    lookback: Callable[..., int | Sessions]
    earliest_lookback: Callable[..., int] | None = None
    warmup: Callable[..., int | Sessions]
    settles_on: Callable[..., np.ndarray] | None = None
    stateless_window: bool = False
    source: bool = False
    cumulative: bool = False
    releases_gil: bool = True
    summary: str = ""
    convention: str = ""

    @property
    def kernel_outputs(self) -> tuple[str, ...]:
        """The outputs the kernel itself returns (all but the `derived` ones)."""
        return self.outputs[: len(self.outputs) - len(self.derived)]


REGISTRY: dict[str, Indicator] = {}
_INSTALLED_NAMES: set[str] = set()   # registered by `install` (shipped), not by this process


def register(indicator: Indicator) -> Indicator:
    """Add `indicator` to `REGISTRY` under its name (a second one with that name is an error).

    The built-in indicators below are registered this way, and so is a custom one from the
    user's code (docs/indicators.md, *Custom indicators*): rules can call it as soon as it is
    registered, on every backend (a plan that uses it carries it to worker processes, `ship`).
    """
    if indicator.name in REGISTRY and indicator.name not in _INSTALLED_NAMES:
        raise ValueError(f"indicator '{indicator.name}' is already registered")
    # In a worker, a shipped definition gives way to the user's module registering its own
    # (numba imports a kernel's module, by name, to compile it).
    _INSTALLED_NAMES.discard(indicator.name)
    REGISTRY[indicator.name] = indicator
    return indicator


def get(name: str) -> Indicator:
    """The registered indicator called `name`; KeyError if there is none."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown indicator '{name}'") from None


def _number(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _check_param(param: Param, value: object) -> int | float:
    is_int = param.kind is int
    what = "an integer" if is_int else "a number"
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (not is_int or value.is_integer())
    if not ok:
        bound = f" >= {_number(param.minimum)}"
        raise ValueError(f"{param.name} must be {what}{bound}, got {value!r}"
                         if not isinstance(value, float) else
                         f"{param.name} must be {what}{bound}, got {_number(value)}")
    if value < param.minimum:
        raise ValueError(f"{param.name} must be {what} >= {_number(param.minimum)}, "
                         f"got {_number(value)}")
    if param.maximum is not None and value > param.maximum:
        raise ValueError(f"{param.name} must be {what} <= {_number(param.maximum)}, "
                         f"got {_number(value)}")
    return int(value) if is_int else value


def bind_params(name: str, args: Sequence[float],
                kwargs: Mapping[str, float] | None = None) -> dict[str, int | float]:
    """Map positional `args` to the parameters of `name` in order, then `kwargs`, then defaults.

    Raises ValueError with a one-line message, e.g. "period must be an integer >= 2, got 2.5"
    or "rsi takes at most 1 parameter (period), got 2". For example:

    >>> bind_params("macd", [5])
    {'fast': 5, 'slow': 26, 'signal': 9}
    """
    indicator = get(name)
    params = indicator.params
    names = [p.name for p in params]
    if len(args) > len(params):
        if not params:
            raise ValueError(f"{name} takes no parameters, got {len(args)}")
        plural = "parameter" if len(params) == 1 else "parameters"
        raise ValueError(f"{name} takes at most {len(params)} {plural} ({', '.join(names)}), "
                         f"got {len(args)}")
    given: dict[str, object] = dict(zip(names, args))
    for key, value in (kwargs or {}).items():
        if key not in names:
            listed = ", ".join(names) if names else "none"
            raise ValueError(f"{name} has no parameter '{key}' (parameters: {listed})")
        if key in given:
            raise ValueError(f"{name} got parameter '{key}' twice")
        given[key] = value
    bound: dict[str, int | float] = {}
    for param in params:
        if param.name in given:
            bound[param.name] = _check_param(param, given[param.name])
        elif param.default is None:
            raise ValueError(f"{name} requires parameter '{param.name}'")
        else:
            bound[param.name] = param.default
    return bound


def lookback(name: str, **params) -> tuple[int, int]:
    """`(bars, sessions)` before the first value of every output of `name`, on finite input;
    one of the two is 0.

    >>> lookback("rsi", period=14), lookback("relative_volume", sessions=5)
    ((14, 0), (0, 5))
    """
    need = get(name).lookback(**bind_params(name, (), params))
    if isinstance(need, Sessions):
        return 0, int(need.count)
    return int(need), 0


def lookback_bars(name: str, **params) -> int:
    """The bar part of `lookback(name, **params)`."""
    return lookback(name, **params)[0]


def warmup(name: str, **params) -> tuple[int, int]:
    """`(bars, sessions)` of history a slice needs before a bar so that the value at that bar
    equals the unsplit pass within 1e-9 relative; one of the two is 0. The bars are counted in
    `informative_bars` (see `warmup_starts`).

    >>> warmup("vwap")
    (0, 1)
    """
    indicator = get(name)
    need = indicator.warmup
    need = need(**bind_params(name, (), params)) if callable(need) else need
    if isinstance(need, Sessions):
        return 0, int(need.count)
    return int(need), 0


def warmup_bars(name: str, **params) -> int:
    """The bar part of `warmup(name, **params)`."""
    return warmup(name, **params)[0]


def informative_bars(name: str, *inputs: np.ndarray) -> np.ndarray | None:
    """The bars that count towards `name`'s warm-up, given its inputs as for `compute` (a
    source in place of the first): a bool mask, or None when every bar counts. For example:

    >>> informative_bars("rsi", np.array([1.0, 1.0, 2.0, 2.0, np.nan, 3.0])).tolist()
    [False, False, True, False, False, False]
    """
    indicator = get(name)
    if indicator.settles_on is None:
        return None
    return indicator.settles_on(*(_as_input(a, f) for a, f in zip(inputs, indicator.inputs)))


def warmup_starts(starts: np.ndarray, bars: int, sessions: int, session: np.ndarray,
                  informative: Sequence[np.ndarray] = ()) -> np.ndarray:
    """For each of `starts`, the first bar a slice must read so that its values from that start
    on agree with one unsplit pass (split invariance), given the summed warm-up `(bars,
    sessions)` of what it computes and the `informative_bars` masks of the recursive ratios
    among it. The scheduler and the split-invariance tests both size halos with it.

    It reads back `bars` bars, then to the start of the session `sessions - 1` sessions
    earlier, then `bars` bars again. With masks, each bar step reaches back until it has passed
    `bars` informative bars of every mask: never fewer bars than plain counting. One cumulative
    count per mask and a binary search: O(n + len(starts) log n). For example:

    >>> moved = np.array([False, True, True, False, False, True])
    >>> warmup_starts(np.array([5]), 2, 0, np.zeros(6, np.int64), [moved]).tolist()
    [1]

    Why informative bars: a Wilder average keeps `decay` of itself per bar and adds `1 - decay`
    of its input; the error of its starting value keeps `decay` per bar too. On a bar where the
    input is 0 both shrink alike, so the error relative to the value stays; a bar with positive
    input shrinks it. After k bars with positive input the relative error is therefore at most
    what it is on the series with the other bars removed, where k >= the declared bars make
    the start weigh < 1e-12 (the 1e-9 promise leaves a factor 1000 for the seed's own size).
    That is exact when the mask marks bars whose smoothed input is positive, which is what each
    `settles_on` states: rsi and stochrsi, a change of the source (gain + loss, whose average
    divides RSI); atr and natr, a true range > 0 (any close change makes one); adx, +DM or -DM
    > 0 (DX divides by their sum, +DI and -DI by the ATR, also positive on such bars). EMA,
    DEMA, TEMA and MACD decay towards the price, not 0, so every bar counts for them; non-
    recursive indicators read a fixed window, and every bar counts for them too.

    What is not covered: the scheduler builds the masks from bar fields, so a recursive ratio
    over a derived source (``rsi(sma(close, 5), 14)``, ``rsi(obv)``) is counted in the moves of
    the bar field it reads by default, and a derived series can stay flat while prices move.
    A stretch of m such bars inside the warm-up leaves the agreement at what m fewer bars give.
    """
    counts = [np.cumsum(mask, dtype=np.int64) for mask in informative]

    def back(at: np.ndarray) -> np.ndarray:
        first = np.maximum(at - bars, 0)
        for count in counts:
            found = np.searchsorted(count, count[at] - bars, side="right") - 1
            first = np.minimum(first, np.maximum(found, 0))
        return first

    first = back(np.asarray(starts, dtype=np.int64))
    if sessions > 0 and first.size:
        first = np.searchsorted(session, session[first] - (sessions - 1), side="left")
        first = back(first.astype(np.int64))
    return first.astype(np.int64)


@lru_cache(maxsize=1024)
def bars_until_weight_below(decay: float, tolerance: float = WEIGHT_TOLERANCE,
                            stages: int = 1) -> int:
    """Smallest k such that a start value, fed through `stages` chained first-order recursions
    that each keep `decay` of their previous value per bar, weighs < `tolerance` k bars later.

    One stage (EMA, Wilder): ``decay**k < tolerance``. Chained stages (DEMA, TEMA, MACD's signal,
    ADX) with retention at most `decay`: the start weighs at most ``P(Binomial(k, 1 - decay) <
    stages)`` (tracing a value back, each bar either stays in its stage or moves down one), so
    passing the largest retention of the chain gives a safe bound. For example:

    >>> bars_until_weight_below(13 / 14)
    373
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must satisfy 0 <= decay < 1, got {decay}")
    if decay == 0.0:
        return stages
    if stages == 1:
        k = max(0, math.floor(math.log(tolerance) / math.log(decay)))
        while decay**k >= tolerance:
            k += 1
        return k
    step = 1.0 - decay

    def start_weight(k: int) -> float:
        total = 0.0
        for i in range(min(stages, k + 1)):
            log_term = (math.lgamma(k + 1) - math.lgamma(i + 1) - math.lgamma(k - i + 1)
                        + i * math.log(step) + (k - i) * math.log(decay))
            total += math.exp(log_term)
        return total

    low, high = 0, max(stages, 16)
    while start_weight(high) >= tolerance:
        low, high = high, high * 2
    while low < high:  # smallest k in (low, high] with weight < tolerance
        mid = (low + high) // 2
        if start_weight(mid) < tolerance:
            high = mid
        else:
            low = mid + 1
    return high


def talib_version() -> str:
    """TA-Lib's Python package and C library versions, recorded in every run's outputs."""
    c_version = getattr(talib, "__ta_version__", b"")
    if isinstance(c_version, bytes):
        c_version = c_version.decode(errors="replace")
    c_version = c_version.split(" ")[0] if c_version else "unknown"
    return f"TA-Lib {talib.__version__} (C library {c_version})"


# --------------------------------------------------------------------------------------------
# compute: input checks and the NaN policy around the kernels


def compute(name: str, *inputs: np.ndarray, known_finite: bool | Sequence[bool] = False,
            outputs: Sequence[str] | None = None, **params):
    """Evaluate indicator `name` on `inputs` (one array per name in its `inputs`, the first one
    replaced by a source series where the rule gives one) with `params` (defaults filled in).

    Returns a float64 array as long as the inputs, or a tuple in the order of `outputs`. Non-
    finite inputs follow the module's NaN policy. `known_finite` (one flag, or one per input)
    marks inputs the caller knows to be finite, such as bar fields (`bars` rejects non-finite
    OHLCV): they are not scanned, which matters next to ~1 ns/bar TA-Lib kernels; flagging an
    input that is not finite lets TA-Lib poison every value after its first bad bar. `outputs`
    names the outputs wanted: the kernel's own are always computed, the `derived` ones (bbands'
    percent_b, bandwidth) only when named, and the result is a dict by name. For example:

    >>> compute("momentum", np.array([1.0, 2.0, 4.0, 7.0]), period=2).tolist()
    [nan, nan, 3.0, 5.0]
    >>> sorted(compute("bbands", np.arange(30.0), outputs=["upper"]))
    ['lower', 'middle', 'upper']
    """
    indicator = get(name)
    bound = bind_params(name, (), params)
    if len(inputs) != len(indicator.inputs):
        raise ValueError(f"{name} takes {len(indicator.inputs)} input series "
                         f"({', '.join(indicator.inputs)}), got {len(inputs)}")
    if outputs is not None:
        unknown = [o for o in outputs if o not in indicator.outputs]
        if unknown or not indicator.outputs:
            raise ValueError(f"{name} has no output {unknown[0] if unknown else outputs[0]!r} "
                             f"(outputs: {', '.join(indicator.outputs) or 'one, unnamed'})")
    arrays = [_as_input(array, field) for array, field in zip(inputs, indicator.inputs)]
    known = ((bool(known_finite),) * len(arrays) if isinstance(known_finite, (bool, np.bool_))
             else tuple(bool(k) for k in known_finite))
    if len(known) != len(arrays):
        raise ValueError(f"{name}: known_finite needs one flag per input ({len(arrays)}), "
                         f"got {len(known)}")
    length = arrays[0].shape[0] if arrays else 0
    if any(a.shape[0] != length for a in arrays):
        raise ValueError(f"{name}: input series differ in length: "
                         f"{[a.shape[0] for a in arrays]}")
    if length == 0:
        result = tuple(np.empty(0) for _ in indicator.kernel_outputs) or np.empty(0)
    elif any(field in INTEGER_FIELDS for field in indicator.inputs):
        result = indicator.kernel(*arrays, **bound)  # session kernels skip bad bars themselves
    elif indicator.cumulative:
        result = _compute_skipping_bad_bars(indicator, arrays, bound, known)
    else:
        result = _compute_per_finite_run(indicator, arrays, bound, known)
    if not indicator.outputs:
        return result
    values = dict(zip(indicator.kernel_outputs, result))
    for output, function in indicator.derived:
        if outputs is None or output in outputs:
            values[output] = function(*arrays, *result)
    return tuple(values[o] for o in indicator.outputs) if outputs is None else values


def derive(name: str, output: str, inputs: Sequence[np.ndarray],
           kernel_outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Derived `output` of `name` from its `inputs` and the kernel's outputs of an earlier
    `compute`, without running the kernel again. For example:

    >>> close = np.arange(30.0)
    >>> bands = compute("bbands", close, outputs=["upper"])
    >>> float(derive("bbands", "percent_b", [close], bands)[-1])
    0.9118772355239569
    """
    indicator = get(name)
    functions = dict(indicator.derived)
    if output not in functions:
        raise ValueError(f"{name}.{output} is not a derived output "
                         f"(derived: {', '.join(functions) or 'none'})")
    arrays = [_as_input(array, field) for array, field in zip(inputs, indicator.inputs)]
    return functions[output](*arrays, *(kernel_outputs[o] for o in indicator.kernel_outputs))


def _as_input(array: np.ndarray, field: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 1:
        raise ValueError(f"input '{field}' must be one-dimensional, got shape {array.shape}")
    dtype = np.int64 if field in INTEGER_FIELDS else np.float64
    return np.ascontiguousarray(array, dtype=dtype)


def _finite_mask(arrays: list[np.ndarray], known: Sequence[bool]) -> np.ndarray | None:
    """None when every value of every array not `known` finite is finite (one cheap pass each,
    none for known ones), else the mask of bars where all are."""
    unknown = [a for a, k in zip(arrays, known) if not k]
    if all(_all_finite_nb(a) for a in unknown):
        return None
    mask = np.isfinite(unknown[0])
    for array in unknown[1:]:
        mask &= np.isfinite(array)
    return mask


def _kernel_lookback(indicator: Indicator, bound: dict) -> int:
    """Bars before the first value of the output that starts first."""
    need = (indicator.earliest_lookback or indicator.lookback)(**bound)
    return 0 if isinstance(need, Sessions) else int(need)


def _compute_per_finite_run(indicator: Indicator, arrays: list[np.ndarray], bound: dict,
                            known: Sequence[bool]):
    mask = _finite_mask(arrays, known)
    if mask is None:
        return indicator.kernel(*arrays, **bound)
    lookback = _kernel_lookback(indicator, bound)
    if indicator.stateless_window:
        # Same values as per run: each value reads only its own window, and windows that
        # touch a bad bar are masked. One kernel call, however many runs.
        filled = [np.where(mask, a, 0.0) for a in arrays]
        result = indicator.kernel(*filled, **bound)
        for values in (result if isinstance(result, tuple) else (result,)):
            _nan_within_window_of_bad_nb(values, mask, lookback)
        return result
    length = arrays[0].shape[0]
    edges = np.flatnonzero(np.diff(mask.view(np.int8), prepend=0, append=0))
    starts, ends = edges[::2], edges[1::2]
    productive = (ends - starts) > lookback  # shorter runs give only NaN: no call at all
    count = max(1, len(indicator.kernel_outputs))
    out = tuple(np.full(length, np.nan) for _ in range(count))
    for start, end in zip(starts[productive].tolist(), ends[productive].tolist()):
        part = indicator.kernel(*(a[start:end] for a in arrays), **bound)
        for target, values in zip(out, part if count > 1 else (part,)):
            target[start:end] = values
    return out if indicator.kernel_outputs else out[0]


def _compute_skipping_bad_bars(indicator: Indicator, arrays: list[np.ndarray], bound: dict,
                               known: Sequence[bool]):
    mask = _finite_mask(arrays, known)
    if mask is None:
        return indicator.kernel(*arrays, **bound)
    keep = np.flatnonzero(mask)
    length = arrays[0].shape[0]
    count = max(1, len(indicator.kernel_outputs))
    out = tuple(np.full(length, np.nan) for _ in range(count))
    if keep.size:
        part = indicator.kernel(*(a[keep] for a in arrays), **bound)
        for target, values in zip(out, part if count > 1 else (part,)):
            target[keep] = values
    return out if indicator.kernel_outputs else out[0]


# --------------------------------------------------------------------------------------------
# Our own kernels (numba; NumPy arrays in and out)


@njit(cache=True, nogil=True)
def _all_finite_nb(values: np.ndarray) -> bool:
    """True when no value is NaN or +-inf; `np.isfinite(values).all()`, without the temporary."""
    exponent = np.uint64(0x7FF0000000000000)
    bits = values.view(np.uint64)
    bad = np.uint64(0)
    for i in range(bits.size):
        bad |= np.uint64((bits[i] & exponent) == exponent)
    return bad == 0


@njit(cache=True, nogil=True)
def session_vwap_1d_nb(price: np.ndarray, volume: np.ndarray, session: np.ndarray) -> np.ndarray:
    """Volume-weighted `price` since the start of each session; NaN until the session's first
    bar with volume, and at bars whose price or volume is not finite (they add nothing).
    Equivalent to ``(price * volume).groupby(session).cumsum() /
    volume.groupby(session).cumsum()`` on finite input."""
    n = price.size
    out = np.empty(n)
    weighted = 0.0
    total = 0.0
    current = session[0] if n > 0 else 0
    for i in range(n):
        if session[i] != current:
            current = session[i]
            weighted = 0.0
            total = 0.0
        p = price[i]
        v = volume[i]
        if np.isfinite(p) and np.isfinite(v):
            weighted += p * v
            total += v
            out[i] = weighted / total if total != 0.0 else np.nan
        else:
            out[i] = np.nan
    return out


@njit(cache=True, nogil=True)
def relative_volume_1d_nb(volume: np.ndarray, session: np.ndarray, minute_of_day: np.ndarray,
                          sessions: int) -> np.ndarray:
    """Volume over its mean at the same minute of day in the previous `sessions` sessions
    (session indices s-sessions .. s-1, those that have a bar at that minute). NaN while the
    input does not reach back `sessions` sessions, where no earlier bar at that minute exists
    or their mean is 0, and at non-finite volumes (which are not remembered). Equivalent to
    ``volume / usual`` looked up at each bar's (session, minute) cell, with ``usual =
    volume.groupby([session, minute]).sum().unstack().reindex(every session index)
    .rolling(sessions, min_periods=1).mean().shift(1)``.

    Keeps, per minute of day, the window's running volume total and session counts: a session
    enters as its bars are read and leaves in one more pass over its bars, so a bar costs O(1)
    whatever `sessions` is. Volumes are >= 0 (bars are validated), so totals do not cancel;
    they are exact for integer volumes, and otherwise re-added from scratch once per
    `sessions + 1` sessions, which bounds their rounding."""
    n = volume.size
    out = np.empty(n)
    window = np.zeros((1440, 3))  # per minute: volume total, sessions, sessions with volume
    # The last session counted at each minute: added, added with volume, removed, removed ...
    marks = np.full((4, 1440), np.iinfo(np.int64).min, dtype=np.int64)
    capacity = sessions + 1  # sessions in the window, and the current one
    queue = np.empty((capacity, 4), dtype=np.int64)  # session, first bar, end bar, regular
    oldest = size = laps = 0
    fractional = False  # integer volumes keep the running totals exact
    first = session[0] if n > 0 else 0
    end = 0
    while end < n:
        start = end
        s = session[start]
        regular = 0 <= minute_of_day[start] < 1440  # one bar per (session, minute)
        end += 1
        while end < n and session[end] == s:
            regular &= minute_of_day[end - 1] < minute_of_day[end] < 1440
            end += 1
        while size > 0 and queue[oldest, 0] < s - sessions:
            _relative_volume_count_nb(volume, minute_of_day, queue[oldest, 1], queue[oldest, 2],
                                      queue[oldest, 0], -1.0, queue[oldest, 3] == 1, window,
                                      marks[2], marks[3])
            oldest = oldest + 1 if oldest + 1 < capacity else 0
            size -= 1
        laps += 1
        if fractional and laps % capacity == 0:
            for k in range(size):
                q = (oldest + k) % capacity
                for i in range(queue[q, 1], queue[q, 2]):
                    window[minute_of_day[i] % 1440, 0] = 0.0
            for k in range(size):
                q = (oldest + k) % capacity
                for i in range(queue[q, 1], queue[q, 2]):
                    if np.isfinite(volume[i]):
                        window[minute_of_day[i] % 1440, 0] += volume[i]
        emit = s - sessions >= first
        if regular:  # the session's own bars never share a minute: add each once read
            for i in range(start, end):
                v = volume[i]
                m = minute_of_day[i]
                if emit and window[m, 2] > 0.0 and np.isfinite(v):
                    out[i] = v * window[m, 1] / window[m, 0]
                else:
                    out[i] = np.nan
                if np.isfinite(v):
                    fractional |= v != np.floor(v)
                    window[m, 0] += v
                    window[m, 1] += 1.0
                    window[m, 2] += 1.0 if v > 0.0 else 0.0
        else:
            for i in range(start, end):
                m = minute_of_day[i] % 1440
                v = volume[i]
                if emit and window[m, 2] > 0.0 and np.isfinite(v):
                    out[i] = v * window[m, 1] / window[m, 0]
                else:
                    out[i] = np.nan
                if np.isfinite(v):
                    fractional |= v != np.floor(v)
            _relative_volume_count_nb(volume, minute_of_day, start, end, s, 1.0, False, window,
                                      marks[0], marks[1])
        newest = oldest + size if oldest + size < capacity else oldest + size - capacity
        queue[newest, 0], queue[newest, 1], queue[newest, 2] = s, start, end
        queue[newest, 3] = 1 if regular else 0
        size += 1
    return out


@njit(cache=True, nogil=True)
def _relative_volume_count_nb(volume, minute_of_day, start, end, s, sign, regular, window,
                              counted, counted_volume) -> None:
    """Add (`sign` 1) or remove (-1) the bars `[start, end)` of session `s` to or from the
    window; a session counts once at a minute, however many bars it has there (`regular`:
    one bar per minute, all within 0..1439)."""
    if regular:
        for i in range(start, end):
            v = volume[i]
            if np.isfinite(v):
                m = minute_of_day[i]
                window[m, 0] += sign * v
                window[m, 1] += sign
                window[m, 2] += sign if v > 0.0 else 0.0
        return
    for i in range(start, end):
        v = volume[i]
        if not np.isfinite(v):
            continue
        m = minute_of_day[i] % 1440
        window[m, 0] += sign * v
        if counted[m] != s:
            counted[m] = s
            window[m, 1] += sign
        if v > 0.0 and counted_volume[m] != s:
            counted_volume[m] = s
            window[m, 2] += sign


@njit(cache=True, nogil=True)
def percent_b_1d_nb(close: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """%B of Bollinger bands, NaN where the bands meet. Equivalent to
    ``(close - lower) / (upper - lower).where(upper != lower)``."""
    n = close.size
    out = np.empty(n)
    for i in range(n):
        width = upper[i] - lower[i]
        out[i] = (close[i] - lower[i]) / width if width != 0.0 else np.nan
    return out


@njit(cache=True, nogil=True)
def bandwidth_1d_nb(upper: np.ndarray, middle: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Bollinger bandwidth as a ratio, NaN where the middle band is 0. Equivalent to
    ``(upper - lower) / middle.where(middle != 0)``."""
    n = upper.size
    out = np.empty(n)
    for i in range(n):
        out[i] = (upper[i] - lower[i]) / middle[i] if middle[i] != 0.0 else np.nan
    return out


@njit(cache=True, nogil=True)
def _nan_within_window_of_bad_nb(values: np.ndarray, finite: np.ndarray, lookback: int) -> None:
    """In place: NaN at each bar where `finite` is False and the `lookback` bars after it, the
    bars whose window of `lookback + 1` bars holds a bad one."""
    since_bad = lookback + 1
    for i in range(values.size):
        since_bad = 0 if not finite[i] else min(since_bad + 1, lookback + 1)
        if since_bad <= lookback:
            values[i] = np.nan


def _moves(values: np.ndarray, *_: np.ndarray) -> np.ndarray:
    """Bars whose value differs from the previous bar's (both finite): where a Wilder average
    of gains and losses gets a positive input."""
    out = np.zeros(values.shape[0], dtype=bool)
    if values.shape[0] > 1:
        with np.errstate(invalid="ignore"):
            change = np.diff(values)
        out[1:] = (change != 0.0) & np.isfinite(change)
    return out


def _true_range_positive(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Bars with a true range > 0 (every bar whose close moved has one)."""
    out = np.zeros(close.shape[0], dtype=bool)
    if close.shape[0] > 1:
        previous = close[:-1]
        with np.errstate(invalid="ignore"):
            out[1:] = (np.maximum(high[1:], previous) - np.minimum(low[1:], previous)) > 0.0
    return out


def _directional_movement(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Bars with +DM or -DM > 0, as TA-Lib defines them: the larger of the high's rise and the
    low's fall, when positive and not tied."""
    out = np.zeros(close.shape[0], dtype=bool)
    if close.shape[0] > 1:
        with np.errstate(invalid="ignore"):
            rise, fall = np.diff(high), -np.diff(low)
            out[1:] = (np.maximum(rise, fall) > 0.0) & (rise != fall)
    return out


@njit(cache=True, nogil=True)
def zscore_1d_nb(values: np.ndarray, mean: np.ndarray, std: np.ndarray,
                 out: np.ndarray) -> np.ndarray:
    """z-score from a rolling mean and standard deviation, NaN where std is 0 (a flat window),
    written into `out` (which may be `std` itself: a fresh 1M-bar array costs more in page
    faults than this loop) and returned. Equivalent to ``(values - mean) / std.where(std != 0)``."""
    n = values.size
    for i in range(n):
        divisor = std[i] if std[i] != 0.0 else np.nan
        out[i] = (values[i] - mean[i]) / divisor
    return out


@njit(cache=True, nogil=True)
def stochastic_of_1d_nb(values: np.ndarray, highest: np.ndarray, lowest: np.ndarray,
                        flat_range: float) -> np.ndarray:
    """Stochastic of `values` in its rolling range, 0 where the range is <= `flat_range`
    (TA-Lib gives 0 for an exactly flat window; the tolerance keeps rounding noise of a
    mathematically flat input from reading as a full swing). Equivalent to
    ``(100 * (values - lowest) / width).where(width > flat_range, 0).where(width.notna())``
    with ``width = highest - lowest``."""
    n = values.size
    out = np.empty(n)
    for i in range(n):
        width = highest[i] - lowest[i]
        out[i] = 100.0 * (values[i] - lowest[i]) / width if width > flat_range else 0.0
        if not np.isfinite(width):
            out[i] = np.nan
    return out


# --------------------------------------------------------------------------------------------
# Kernels (TA-Lib C functions behind our parameter names)


def _talib(*functions: str):
    """Mark a kernel with the TA-Lib functions it calls (read by the docs, tests, benchmark)."""
    def mark(kernel):
        kernel.talib_functions = functions
        return kernel
    return mark


def _ours(*kernels: Callable):
    """Mark a kernel with our own numba kernels it calls (read by the docs, tests, benchmark)."""
    def mark(kernel):
        kernel.own_kernels = kernels
        return kernel
    return mark


@_talib("SMA")
def _sma(values, period):
    return talib.SMA(values, timeperiod=period)


@_talib("EMA")
def _ema(values, period):
    return talib.EMA(values, timeperiod=period)


@_talib("WMA")
def _wma(values, period):
    return talib.WMA(values, timeperiod=period)


@_talib("DEMA")
def _dema(values, period):
    return talib.DEMA(values, timeperiod=period)


@_talib("TEMA")
def _tema(values, period):
    return talib.TEMA(values, timeperiod=period)


@_talib("RSI")
def _rsi(values, period):
    return talib.RSI(values, timeperiod=period)


@_talib("MACD")
def _macd(values, fast, slow, signal):
    return talib.MACD(values, fastperiod=fast, slowperiod=slow, signalperiod=signal)


@_talib("BBANDS")
@_ours(percent_b_1d_nb, bandwidth_1d_nb)
def _bbands(values, period, nbdev):
    return talib.BBANDS(values, timeperiod=period, nbdevup=nbdev, nbdevdn=nbdev, matype=0)


def _percent_b(values, upper, middle, lower):
    return percent_b_1d_nb(values, upper, lower)


def _bandwidth(values, upper, middle, lower):
    return bandwidth_1d_nb(upper, middle, lower)


@_talib("ATR")
def _atr(high, low, close, period):
    return talib.ATR(high, low, close, timeperiod=period)


@_talib("NATR")
def _natr(high, low, close, period):
    return talib.NATR(high, low, close, timeperiod=period)


@_talib("TRANGE")
def _true_range(high, low, close):
    return talib.TRANGE(high, low, close)


@_talib("STOCH")
def _stoch(high, low, close, fastk, slowk, slowd):
    return talib.STOCH(high, low, close, fastk_period=fastk, slowk_period=slowk, slowk_matype=0,
                       slowd_period=slowd, slowd_matype=0)


STOCHRSI_FLAT_RANGE = 1e-6  # RSI points; see the stochrsi convention


@_talib("RSI", "MAX", "MIN", "SMA")
@_ours(stochastic_of_1d_nb)
def _stochrsi(values, period, fastk, fastd):
    rsi = talib.RSI(values, timeperiod=period)
    k = stochastic_of_1d_nb(rsi, talib.MAX(rsi, timeperiod=fastk),
                            talib.MIN(rsi, timeperiod=fastk), STOCHRSI_FLAT_RANGE)
    d = talib.SMA(k, timeperiod=fastd)
    k[: period + fastk - 1 + fastd - 1] = np.nan  # both outputs start together, as in TA-Lib
    return k, d


@_talib("WILLR")
def _williams_r(high, low, close, period):
    return talib.WILLR(high, low, close, timeperiod=period)


@_talib("CCI")
def _cci(high, low, close, period):
    return talib.CCI(high, low, close, timeperiod=period)


@_talib("ADX", "PLUS_DI", "MINUS_DI")
def _adx(high, low, close, period):
    return (talib.ADX(high, low, close, timeperiod=period),
            talib.PLUS_DI(high, low, close, timeperiod=period),
            talib.MINUS_DI(high, low, close, timeperiod=period))


@_talib("MFI")
def _mfi(high, low, close, volume, period):
    return talib.MFI(high, low, close, volume, timeperiod=period)


@_talib("OBV")
def _obv(close, volume):
    return talib.OBV(close, volume)


@_talib("ROC")
def _roc(values, period):
    return talib.ROC(values, timeperiod=period)


@_talib("MOM")
def _momentum(values, period):
    return talib.MOM(values, timeperiod=period)


@_talib("SMA", "STDDEV")
@_ours(zscore_1d_nb)
def _zscore(values, period):
    std = talib.STDDEV(values, timeperiod=period, nbdev=1.0)
    return zscore_1d_nb(values, talib.SMA(values, timeperiod=period), std, std)


@_talib("STDDEV")
def _stddev(values, period):
    return talib.STDDEV(values, timeperiod=period, nbdev=1.0)


@_talib("MAX")
def _highest(values, period):
    return talib.MAX(values, timeperiod=period)


@_talib("MIN")
def _lowest(values, period):
    return talib.MIN(values, timeperiod=period)


@_talib("TYPPRICE")
def _typical_price(high, low, close):
    return talib.TYPPRICE(high, low, close)


@_ours(session_vwap_1d_nb)
def _vwap(hlc3, volume, session):
    return session_vwap_1d_nb(hlc3, volume, session)


@_ours(relative_volume_1d_nb)
def _relative_volume(volume, session, minute_of_day, sessions):
    return relative_volume_1d_nb(volume, session, minute_of_day, sessions)


# --------------------------------------------------------------------------------------------
# The indicators


def _period(default: int, minimum: int = 2, name: str = "period") -> Param:
    return Param(name, int, default, minimum, MAX_PERIOD)


def _ema_decay(period: int) -> float:
    return 1.0 - 2.0 / (period + 1)


def _wilder_decay(period: int) -> float:
    return 1.0 - 1.0 / period


def _settling_bars(decay: float, stages: int = 1) -> int:
    """Bars a recursive indicator needs after its lookback: until its start weighs < 1e-12.
    Ratios of Wilder averages count them in their `settles_on` bars (see `warmup_starts`)."""
    return bars_until_weight_below(decay, stages=stages)


def _rsi_warmup(period: int) -> int:
    return period + _settling_bars(_wilder_decay(period))


_HLC = ("high", "low", "close")

register(Indicator(
    name="sma", kernel=_sma, inputs=("close",), params=(_period(20),), source=True,
    lookback=lambda period: period - 1, warmup=lambda period: period - 1,
    summary="Simple moving average.",
))
register(Indicator(
    name="ema", kernel=_ema, inputs=("close",), params=(_period(20),), source=True,
    lookback=lambda period: period - 1,
    warmup=lambda period: period - 1 + _settling_bars(_ema_decay(period)),
    summary="Exponential moving average, alpha = 2 / (period + 1).",
    convention="Seeded with the SMA of the first `period` values (TA-Lib, not pandas' "
               "`ewm(adjust=True)`); the seed's weight falls below 1e-12 within the warm-up.",
))
register(Indicator(
    name="wma", kernel=_wma, inputs=("close",), params=(_period(20),), source=True,
    lookback=lambda period: period - 1, warmup=lambda period: period - 1,
    summary="Linearly weighted moving average (weights 1..period, newest heaviest).",
))
register(Indicator(
    name="dema", kernel=_dema, inputs=("close",), params=(_period(20),), source=True,
    lookback=lambda period: 2 * (period - 1),
    warmup=lambda period: 2 * (period - 1) + _settling_bars(_ema_decay(period),
                                                                     stages=2),
    summary="Double EMA: 2 * ema - ema(ema).",
))
register(Indicator(
    name="tema", kernel=_tema, inputs=("close",), params=(_period(20),), source=True,
    lookback=lambda period: 3 * (period - 1),
    warmup=lambda period: 3 * (period - 1) + _settling_bars(_ema_decay(period),
                                                                     stages=3),
    summary="Triple EMA: 3 * ema - 3 * ema(ema) + ema(ema(ema)).",
))
register(Indicator(
    name="rsi", kernel=_rsi, inputs=("close",), params=(_period(14),), source=True,
    lookback=lambda period: period, warmup=_rsi_warmup, settles_on=_moves,
    summary="Relative strength index, 0..100.",
    convention="Wilder smoothing (alpha = 1 / period) seeded with the plain average of the "
               "first `period` gains and losses (TA-Lib >= 0.6, as Wilder; TA-Lib 0.4 and "
               "pandas `ewm`-based versions differ early on). 0 when gains and losses both "
               "vanish (TA-Lib).",
))
register(Indicator(
    name="macd", kernel=_macd, inputs=("close",), outputs=("macd", "signal", "hist"),
    params=(_period(12, name="fast"), _period(26, name="slow"), _period(9, 1, name="signal")),
    source=True,
    lookback=lambda fast, slow, signal: max(fast, slow) - 1 + signal - 1,
    warmup=lambda fast, slow, signal: max(fast, slow) - 1 + signal - 1 + _settling_bars(
        max(_ema_decay(fast), _ema_decay(slow), _ema_decay(max(signal, 2))), stages=2),
    summary="ema(fast) - ema(slow); signal = ema(macd, signal); hist = macd - signal.",
    convention="TA-Lib: both EMAs start at the slow EMA's first bar; TA-Lib swaps fast and "
               "slow when fast > slow.",
))
register(Indicator(
    name="bbands", kernel=_bbands, inputs=("close",),
    outputs=("upper", "middle", "lower", "percent_b", "bandwidth"),
    derived=(("percent_b", _percent_b), ("bandwidth", _bandwidth)),
    params=(_period(20), Param("nbdev", float, 2.0, 0.0)), source=True,
    lookback=lambda period, nbdev: period - 1, warmup=lambda period, nbdev: period - 1,
    summary="Bollinger bands: sma +- nbdev * stddev; percent_b = (close - lower) / "
            "(upper - lower); bandwidth = (upper - lower) / middle.",
    convention="Population standard deviation (TA-Lib, Bollinger); pandas' `rolling().std()` "
               "is the sample one. TA-Lib reads a variance below 1e-8 as 0, so flat windows "
               "have upper = middle = lower and NaN percent_b. bandwidth is a ratio, not %.",
))
register(Indicator(
    name="atr", kernel=_atr, inputs=_HLC, params=(_period(14, 1),),
    lookback=lambda period: period, warmup=_rsi_warmup, settles_on=_true_range_positive,
    summary="Average true range.",
    convention="Wilder smoothing seeded with the plain average of the first `period` true "
               "ranges (TA-Lib); the first bar has no true range.",
))
register(Indicator(
    name="natr", kernel=_natr, inputs=_HLC, params=(_period(14, 1),),
    lookback=lambda period: period, warmup=_rsi_warmup, settles_on=_true_range_positive,
    summary="Normalised ATR: 100 * atr / close.",
))
register(Indicator(
    name="true_range", kernel=_true_range, inputs=_HLC, params=(),
    lookback=lambda: 1, warmup=lambda: 1, stateless_window=True,
    summary="max(high, previous close) - min(low, previous close).",
))
register(Indicator(
    name="stoch", kernel=_stoch, inputs=_HLC, outputs=("k", "d"),
    params=(_period(14, 1, name="fastk"), _period(3, 1, name="slowk"),
            _period(3, 1, name="slowd")),
    lookback=lambda fastk, slowk, slowd: fastk - 1 + slowk - 1 + slowd - 1,
    warmup=lambda fastk, slowk, slowd: fastk - 1 + slowk - 1 + slowd - 1,
    summary="Slow stochastic: k = sma(fast %K, slowk), d = sma(k, slowd), 0..100.",
    convention="Defaults 14, 3, 3 (the charting convention; TA-Lib's own default fastk is 5). "
               "A window with high == low gives fast %K 0 (TA-Lib).",
))
register(Indicator(
    name="stochrsi", kernel=_stochrsi, inputs=("close",), outputs=("k", "d"),
    params=(_period(14), _period(14, 1, name="fastk"), _period(3, 1, name="fastd")),
    source=True,
    lookback=lambda period, fastk, fastd: period + fastk - 1 + fastd - 1,
    warmup=lambda period, fastk, fastd: _rsi_warmup(period) + fastk - 1 + fastd - 1,
    settles_on=_moves,
    summary="Stochastic of RSI: k = 100 * (rsi - min) / (max - min) over fastk bars, "
            "d = sma(k, fastd).",
    convention=f"TA-Lib STOCHRSI (unsmoothed k; TradingView smooths k by 3). Built from TA-Lib's "
               f"RSI, MAX, MIN and SMA so that a RSI range <= {STOCHRSI_FLAT_RANGE} points "
               f"counts as flat (k = 0, as TA-Lib does for an exactly flat one): RSI of a flat "
               f"price stretch is constant up to rounding noise, which TA-Lib would stretch to "
               f"0..100.",
))
register(Indicator(
    name="williams_r", kernel=_williams_r, inputs=_HLC, params=(_period(14),),
    lookback=lambda period: period - 1, warmup=lambda period: period - 1,
    stateless_window=True,
    summary="Williams %R: -100 * (highest high - close) / (highest high - lowest low), "
            "-100..0.",
    convention="A window with high == low gives 0 (TA-Lib).",
))
register(Indicator(
    name="cci", kernel=_cci, inputs=_HLC, params=(_period(20),),
    lookback=lambda period: period - 1, warmup=lambda period: period - 1,
    summary="Commodity channel index: (tp - sma(tp)) / (0.015 * mean absolute deviation).",
    convention="tp = (high + low + close) / 3; 0 where the mean deviation is 0 (TA-Lib).",
))
register(Indicator(
    name="adx", kernel=_adx, inputs=_HLC, outputs=("adx", "plus_di", "minus_di"),
    params=(_period(14),),
    lookback=lambda period: 2 * period - 1, earliest_lookback=lambda period: period,
    warmup=lambda period: 2 * period - 1 + _settling_bars(_wilder_decay(period),
                                                                   stages=2),
    settles_on=_directional_movement,
    summary="Average directional index with +DI and -DI, 0..100.",
    convention="Wilder smoothing throughout (TA-Lib); plus_di and minus_di have values from "
               "bar `period`, adx from bar 2 * period - 1.",
))
register(Indicator(
    name="mfi", kernel=_mfi, inputs=(*_HLC, "volume"), params=(_period(14),),
    lookback=lambda period: period, warmup=lambda period: period,
    summary="Money flow index: volume-weighted RSI of the typical price, 0..100.",
))
register(Indicator(
    name="obv", kernel=_obv, inputs=("close", "volume"), params=(), cumulative=True,
    lookback=lambda: 0, warmup=lambda: 0,
    summary="On-balance volume: running sum of volume signed by the close's direction.",
    convention="Cumulative: starts at the first bar's volume (TA-Lib); the pipeline anchors "
               "it at the first bar of the data and adds per-cluster offsets, so only "
               "differences between bars are meaningful. Bars with non-finite input give NaN "
               "and are skipped (the next bar compares with the last finite close).",
))
register(Indicator(
    name="roc", kernel=_roc, inputs=("close",), params=(_period(10, 1),), source=True,
    lookback=lambda period: period, warmup=lambda period: period, stateless_window=True,
    summary="Rate of change in percent: 100 * (x / x[period bars ago] - 1).",
    convention="0 where the earlier value is 0 (TA-Lib).",
))
register(Indicator(
    name="momentum", kernel=_momentum, inputs=("close",), params=(_period(10, 1),), source=True,
    lookback=lambda period: period, warmup=lambda period: period, stateless_window=True,
    summary="x - x[period bars ago].",
))
register(Indicator(
    name="zscore", kernel=_zscore, inputs=("close",), params=(_period(20),), source=True,
    lookback=lambda period: period - 1, warmup=lambda period: period - 1,
    summary="(x - sma(x)) / stddev(x) over `period` bars.",
    convention="Population standard deviation (as bbands); NaN for a flat window.",
))
register(Indicator(
    name="stddev", kernel=_stddev, inputs=("close",), params=(_period(20),), source=True,
    lookback=lambda period: period - 1, warmup=lambda period: period - 1,
    summary="Rolling standard deviation.",
    convention="Population (ddof = 0, TA-Lib, Bollinger); pandas' default is the sample one. "
               "A variance below 1e-8 reads as 0 (TA-Lib).",
))
register(Indicator(
    name="highest", kernel=_highest, inputs=("high",), params=(_period(20),), source=True,
    lookback=lambda period: period - 1, warmup=lambda period: period - 1, stateless_window=True,
    summary="Highest value over `period` bars, this bar included (upper Donchian channel).",
))
register(Indicator(
    name="lowest", kernel=_lowest, inputs=("low",), params=(_period(20),), source=True,
    lookback=lambda period: period - 1, warmup=lambda period: period - 1, stateless_window=True,
    summary="Lowest value over `period` bars, this bar included (lower Donchian channel).",
))
register(Indicator(
    name="typical_price", kernel=_typical_price, inputs=_HLC, params=(),
    lookback=lambda: 0, warmup=lambda: 0, stateless_window=True,
    summary="(high + low + close) / 3.",
))
register(Indicator(
    name="volume_sma", kernel=_sma, inputs=("volume",), params=(_period(20),),
    lookback=lambda period: period - 1, warmup=lambda period: period - 1,
    summary="Rolling average volume over `period` bars.",
))
register(Indicator(
    name="vwap", kernel=_vwap, inputs=("hlc3", "volume", "session"), params=(),
    lookback=lambda: 0, warmup=lambda: Sessions(1),
    summary="Volume-weighted average of hlc3 since the session's first bar.",
    convention="Anchored at each session start; NaN until the session's first bar with volume.",
))
register(Indicator(
    name="relative_volume", kernel=_relative_volume,
    inputs=("volume", "session", "minute_of_day"), params=(_period(10, 1, name="sessions"),),
    lookback=lambda sessions: Sessions(sessions),
    warmup=lambda sessions: Sessions(sessions + 1),
    summary="Volume / mean volume at the same minute of day over the previous `sessions` "
            "sessions.",
    convention="The current session is excluded (it would pull the ratio towards 1), hence "
               "a warm-up of sessions + 1; sessions without a bar at that minute are left out "
               "of the mean; NaN for the first `sessions` sessions of the input and where the "
               "mean is 0.",
))


BUILT_IN = frozenset(REGISTRY)
"""The indicators this module registers; any other `REGISTRY` entry came from the user's code."""


# --------------------------------------------------------------------------------------------
# Custom indicators: registered in the user's script, shipped to worker processes with the plan


def custom(names: Iterable[str]) -> tuple[Indicator, ...]:
    """The user-registered (not `BUILT_IN`) indicators among `names`, once each, in order."""
    return tuple(REGISTRY[name] for name in dict.fromkeys(names)
                 if name in REGISTRY and name not in BUILT_IN)


def ship(custom_indicators: Sequence[Indicator]) -> bytes:
    """`custom_indicators` pickled by value (cloudpickle), for `install` in a worker process.

    A worker process (loky, multiprocessing, Dask) has the built-in registry but not what the
    user's script registered, and may not be able to import the script (it is ``__main__``, or
    a module the worker's path lacks), so the kernels, lambdas and parameters travel by value:
    functions of ``__main__`` and of any module outside the installed packages are pickled with
    their code. Empty bytes when there is nothing to ship.
    """
    if not custom_indicators:
        return b""
    import cloudpickle

    modules = {_user_module(f) for indicator in custom_indicators
               for f in _callables(indicator)} - {None}
    added = []
    try:
        for module in modules:
            if module.__name__ not in cloudpickle.list_registry_pickle_by_value():
                cloudpickle.register_pickle_by_value(module)
                added.append(module)
        payload = cloudpickle.dumps(tuple(custom_indicators))
    finally:
        for module in added:
            cloudpickle.unregister_pickle_by_value(module)
    global _INSTALLED
    _INSTALLED = payload   # this process registered them itself
    return payload


_INSTALLED = b""


def install(payload: bytes) -> None:
    """Register the indicators `ship` pickled, in this process, before a plan that uses them
    runs here. An earlier custom indicator of the same name (a reused worker, a redefined
    indicator) is replaced; a built-in one never is. Installing what is already installed is a
    no-op, so it is cheap to call for every task."""
    global _INSTALLED
    if not payload or payload == _INSTALLED:
        return
    import pickle

    for indicator in pickle.loads(payload):
        if indicator.name in BUILT_IN:
            raise ValueError(f"indicator '{indicator.name}' is built in and cannot be replaced")
        REGISTRY[indicator.name] = indicator
        _INSTALLED_NAMES.add(indicator.name)
    _INSTALLED = payload


def _callables(indicator: Indicator) -> list[Callable]:
    found = [indicator.kernel, indicator.lookback, indicator.warmup, indicator.earliest_lookback,
             indicator.settles_on, *(f for _, f in indicator.derived)]
    return [getattr(f, "py_func", f) for f in found if f is not None]  # numba: the Python one


def _user_module(function: Callable):
    """The module of `function` when it is the user's own code (not ``__main__``, which
    cloudpickle already pickles by value, and not an installed package or the standard
    library); None otherwise."""
    import sys
    import sysconfig

    module = sys.modules.get(getattr(function, "__module__", None) or "")
    path = getattr(module, "__file__", None)
    if module is None or module.__name__ == "__main__" or path is None:
        return None
    if module.__name__.split(".")[0] == __name__.split(".")[0]:
        return None
    installed = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib",
                                                        "platlib")}
    resolved = str(Path(path).resolve())
    if any(resolved.startswith(str(Path(root).resolve())) for root in installed):
        return None
    return module


# --------------------------------------------------------------------------------------------
# Documentation


def _call_signature(indicator: Indicator) -> str:
    args = []
    if indicator.source:
        args.append(f"[source={indicator.inputs[0]}]")
    args += [f"{p.name}={_number(p.default) if p.default is not None else '?'}"
             for p in indicator.params]
    return f"{indicator.name}({', '.join(args)})"


def _param_text(param: Param) -> str:
    kind = "int" if param.kind is int else "float"
    bounds = f">= {_number(param.minimum)}"
    if param.maximum is not None:
        bounds = f"{_number(param.minimum)}..{_number(param.maximum)}"
    return f"`{param.name}` ({kind}, {bounds})"


def _kernel_text(indicator: Indicator) -> str:
    functions = getattr(indicator.kernel, "talib_functions", ())
    ours = getattr(indicator.kernel, "own_kernels", ())
    parts = [f"TA-Lib {', '.join(functions)}"] if functions else []
    parts += [f"`{kernel.__name__}`" for kernel in ours]
    return " + ".join(parts)


def _span_text(bars: int, sessions: int) -> str:
    return f"{sessions} session{'s' if sessions != 1 else ''}" if sessions else f"{bars}"


_SETTLES_ON_TEXT = {
    _moves: "bars where the source moved",
    _true_range_positive: "bars with a true range > 0",
    _directional_movement: "bars with +DM or -DM > 0",
}


def render_docs() -> str:
    """docs/indicators.md, generated from the registry (`python -m backtester docs`)."""
    lines = [
        "# Indicators",
        "",
        "Generated from `backtester/indicators.py` by `python -m backtester docs`; do not edit.",
        "",
        "Call an indicator in a rule as `name(params)`, with `.output` for one of several "
        "outputs (the first output when none is named): `rsi(14)`, `macd(12, 26, 9).signal`. "
        "Where the table shows `[source=...]`, a series may come first and replaces that "
        "input: `sma(high, 20)`, `sma(rsi(14), 5)`.",
        "",
        "- **Lookback**: bars (or whole sessions) before the first value, at the default "
        "parameters.",
        "- **Warm-up**: history a cluster reads before its first bar so that its values equal "
        "one unsplit pass within 1e-9 relative (or 1e-9 of the series' scale near 0): the "
        "lookback, plus for recursive indicators the bars until the starting value weighs "
        "< 1e-12; or sessions (the current one included). Nested calls add up: "
        "`sma(rsi(14), 5)` needs rsi's warm-up plus 4. Where the table says *counted in*, the "
        "bars are counted among those bars only (see below).",
        "- **Non-finite input**: a bar where an input is NaN or inf (a derived source can hold "
        "them) gives NaN and the indicator restarts after it, its lookback applying again; "
        "TA-Lib alone would poison every later value. Runs no longer than the lookback cost "
        "nothing; indicators whose value reads only its own window (momentum, roc, highest, "
        "lowest, williams_r, true_range, typical_price) take one TA-Lib call whatever the "
        "number of runs, the others one call per longer run (about 1.5 us each, TA-Lib's "
        "per-call cost). Session-anchored and cumulative indicators skip such a bar instead.",
        "- **Cumulative** indicators (obv) depend on the whole history; the pipeline anchors "
        "them at the first bar of the data and adds each cluster's offset, so their values "
        "do not depend on the cluster layout.",
        "- **Derived outputs** (bbands' `.percent_b`, `.bandwidth`) are computed only when a "
        "rule uses them, from the kernel's outputs.",
        "- Kernels: TA-Lib's C functions where it has the indicator, otherwise ours (numba, "
        "`nogil`). All release the GIL. TA-Lib's global unstable periods and compatibility "
        "mode must stay at their defaults (0): importing `backtester.indicators` refuses to "
        "run otherwise, and changing them afterwards changes outputs silently.",
        "",
        "| call | outputs | inputs | parameters | lookback | warm-up | kernel |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in sorted(REGISTRY):
        indicator = REGISTRY[name]
        warm = _span_text(*warmup(name))
        if indicator.settles_on is not None:
            warm += f", counted in {_SETTLES_ON_TEXT[indicator.settles_on]}"
        outputs = ", ".join(f"`.{o}`" for o in indicator.outputs) or "one"
        params = ", ".join(_param_text(p) for p in indicator.params) or "none"
        cumulative = " (cumulative)" if indicator.cumulative else ""
        lines.append(f"| `{_call_signature(indicator)}` | {outputs} | "
                     f"{', '.join(indicator.inputs)} | {params} | {_span_text(*lookback(name))} | "
                     f"{warm}{cumulative} | {_kernel_text(indicator)} |")
    lines += [
        "",
        "## Warm-up through flat stretches",
        "",
        "rsi, stochrsi, atr, natr and adx are ratios of Wilder averages that shrink towards 0 "
        "on bars without movement (no gain or loss, a zero true range, no directional "
        "movement). On such a bar the average and the error of its starting value shrink "
        "alike, so the error relative to the value does not decay; only bars that feed the "
        "averages a positive amount do. Their warm-up is therefore counted in those bars "
        "(the table's *counted in*), and the scheduler reads back as far as it takes to pass "
        "that many of them (a per-symbol cumulative count and a binary search, "
        "`indicators.warmup_starts`, the same helper the split-invariance tests use). When a "
        "plan mixes indicators, every bar step reaches back far enough for each of them.",
        "",
        "What is guaranteed: for these indicators over bar fields, and for anything computed "
        "from them (`sma(rsi(14), 5)`), a flat stretch of any length inside the warm-up leaves "
        "the 1e-9 agreement intact: after the counted bars the starting value's relative "
        "weight is below 1e-12 whatever lies between them, as if the idle bars were removed. "
        "Flat stretches make clusters read further back, never less than the plain count.",
        "",
        "What is not: the masks are computed from bar fields. A recursive ratio over a "
        "derived source (`rsi(sma(close, 5), 14)`, `rsi(obv)`) is counted in the moves of the "
        "bar field it reads by default, and a derived series can stay flat while prices move; "
        "a stretch of m such bars inside the warm-up leaves the agreement at what m fewer "
        "bars give (the error stays what it was when the stretch began). EMA, DEMA, TEMA and "
        "MACD need no counting: they decay towards the price, not towards 0.",
        "",
        "## Definitions and conventions",
        "",
    ]
    for name in sorted(BUILT_IN):
        indicator = REGISTRY[name]
        lines.append(f"- **{name}**: {indicator.summary}"
                     + (f" {indicator.convention}" if indicator.convention else ""))
    lines += ["", *_CUSTOM_DOCS]
    return "\n".join(lines)


_CUSTOM_DOCS = [
    "## Custom indicators",
    "",
    "Register one from your own script with `backtester.indicators.register(Indicator(...))` "
    "before running; rules call it like a built-in one. The kernel takes one float64 array per "
    "name in `inputs` (bar fields: open, high, low, close, volume, hl2, hlc3, ohlc4; int64 "
    "`session` and `minute_of_day`) and the parameters as keywords, and returns an array as "
    "long as its inputs, NaN before its first value. It must not look ahead: the value at bar "
    "t may read bars up to t only. `lookback` and `warmup` take the parameters and return bars "
    "(or `Sessions(n)`): `lookback` is the bars before the first value, `warmup` the history "
    "a cluster must read for its first value to equal one unsplit pass (for a plain window, "
    "the same as `lookback`). Declare them exactly: the scheduler sizes every cluster's halo "
    "from them, so too small a warm-up breaks split invariance.",
    "",
    "```python",
    "import numpy as np",
    "from numba import njit",
    "",
    "import backtester",
    "from backtester.indicators import Indicator, Param, register",
    "",
    "@njit(cache=True, nogil=True)",
    "def range_mean_1d_nb(high, low, period):",
    '    """Mean of high - low over the last `period` bars; NaN before the first full window."""',
    "    out = np.full(len(high), np.nan)",
    "    for i in range(period - 1, len(high)):",
    "        out[i] = (high[i - period + 1:i + 1] - low[i - period + 1:i + 1]).mean()",
    "    return out",
    "",
    "register(Indicator(",
    '    name="range_mean", inputs=("high", "low"), params=(Param("period", int, 14, 1),),',
    "    kernel=lambda high, low, period: range_mean_1d_nb(high, low, int(period)),",
    "    lookback=lambda period: period - 1, warmup=lambda period: period - 1,",
    '    stateless_window=True, summary="Mean bar range over `period` bars.",',
    "))",
    "",
    'config = {"name": "wide", "data": {"path": "data/sample/bars_1min.parquet"},',
    '          "alerts": [{"name": "wide", "when": "range_mean(20) > 0.25"}]}',
    "result = backtester.run(config, backend=\"loky\", n_jobs=2, write=False)",
    'result.alerts[["timestamp", "symbol", "range_mean(20)"]].head()',
    "```",
    "",
    "`Param(name, kind, default, minimum, maximum=None)` bounds each parameter (a rule outside "
    "them is a config error naming the call). Optional fields: `outputs` for several outputs "
    "(the kernel returns a tuple, rules pick one with `.name`), `source=True` to let a rule "
    "pass another series in place of the first input (as in `sma(rsi(14), 5)`), "
    "`releases_gil=False` "
    "when the kernel holds the GIL (`auto` then prefers processes to threads).",
    "",
    "Every backend runs it. Threads share the registry; for worker processes (loky, "
    "multiprocessing, Dask) the compiled plan carries the custom indicators it uses, pickled by "
    "value with cloudpickle (so a kernel defined in the script itself, or in a module the "
    "workers cannot import, travels with its code), and each worker registers them before its "
    "first cluster. A name can be registered once per process; built-in names cannot be "
    "replaced.",
    "",
]
