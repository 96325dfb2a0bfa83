"""Indicator kernels and the registry that describes them: inputs, outputs, parameters,
lookback and warm-up.

Every indicator is one `register(Indicator(...))` entry below. Kernels take and return NumPy
float64 arrays only (no pandas). Where TA-Lib has the indicator we call its C kernel (the 0.8
wrappers release the GIL around each call); our own kernels, for what TA-Lib lacks, are numba
`@njit(cache=True, nogil=True)` functions ending in `_nb`, each naming the pandas expression it
equals (the test oracle). Nothing here loops over bars in Python.

Promises `compute` keeps for every indicator:

- **Shape.** Outputs are float64, as long as the inputs; bars before the first value are NaN.
- **Lookback.** `lookback_bars(name, **params)` bars precede the first value (of every output)
  on finite input.
- **Warm-up.** `warmup(name, **params)` returns `(bars, sessions)`. Computed on a slice that
  starts that many bars (or: at the start of the session `sessions - 1` sessions) before a
  bar, the value at that bar equals the one of a pass over the whole series within 1e-9
  relative. For recursive indicators (EMA, Wilder smoothing) the bars are the lookback plus
  the bars after which the starting value weighs < 1e-12 (`bars_until_weight_below`), plus
  `FLAT_STRETCH_BARS` (60): bars where the smoothed input is 0 (a flat stretch: no gains, zero
  true range) shrink the value as fast as the start's error, so they do not count towards
  the decay. A longer run of such bars inside the warm-up loosens agreement (the error stays
  what it was when the run began); values then still agree within 1e-9 of their scale.
- **Non-finite input (NaN policy).** TA-Lib skips leading NaNs but one NaN or inf in the middle
  poisons every later value. We compute per finite run instead: a bar where any input is NaN or
  inf gives NaN, and the indicator restarts after it (its lookback applies again). Runs no
  longer than the lookback give no values. All-finite input (the common case) is one kernel
  call; otherwise one call per run. Session-anchored indicators (vwap, relative_volume) and
  cumulative ones (obv) instead skip the bad bar (NaN there, no contribution) and carry on.
- **Cumulative indicators** (`cumulative=True`, obv) depend on the whole history. For any r
  with finite input at r, ``compute(x[r:]) - compute(x[r:])[0] == compute(x)[r:] -
  compute(x)[r]``, exactly for integer volumes, so the pipeline anchors them at the first bar of
  the data and adds a per-cluster offset resolved in the parent (local totals, an exclusive
  prefix sum); their warm-up is 0.

For example:

>>> import numpy as np
>>> close = np.linspace(100.0, 110.0, 400)
>>> compute("sma", close, period=3)[:4].round(4).tolist()
[nan, nan, 100.0251, 100.0501]
>>> warmup("rsi", period=14)
(447, 0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import talib
from numba import njit

__all__ = [
    "REGISTRY", "Indicator", "Param", "Sessions", "bars_until_weight_below", "bind_params",
    "compute", "get", "lookback_bars", "register", "render_docs", "talib_version", "warmup",
    "warmup_bars",
]

MAX_PERIOD = 100_000  # TA-Lib's own upper bound for every period parameter
WEIGHT_TOLERANCE = 1e-12  # a recursive indicator is warm once its start weighs less than this
FLAT_STRETCH_BARS = 60  # allowance for bars without movement inside a warm-up (one hour of 1-min)
PRICE_FIELDS = ("open", "high", "low", "close", "volume", "hl2", "hlc3", "ohlc4")
INTEGER_FIELDS = ("session", "minute_of_day")


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
    """A warm-up measured in exchange sessions: `count` sessions including the current one."""

    count: int


@dataclass(frozen=True, kw_only=True)
class Indicator:
    """What the expression layer and the planner need to know about one indicator.

    `kernel(*arrays, **params)` gets one float64 (or int64 for `session`/`minute_of_day`) array
    per name in `inputs`, in order, and returns one array or a tuple in the order of `outputs`.
    `lookback(**params)` and `warmup(**params)` take the bound parameters. With `source=True`
    a rule may pass its own series in place of `inputs[0]` (``sma(high, 20)``).
    """

    name: str
    kernel: Callable[..., np.ndarray | tuple[np.ndarray, ...]]
    inputs: tuple[str, ...]
    params: tuple[Param, ...]
    outputs: tuple[str, ...] = ()
    lookback: Callable[..., int]
    warmup: Callable[..., int | Sessions]
    source: bool = False
    cumulative: bool = False
    releases_gil: bool = True
    summary: str = ""
    convention: str = ""


REGISTRY: dict[str, Indicator] = {}


def register(indicator: Indicator) -> Indicator:
    """Add `indicator` to `REGISTRY` under its name (a second one with that name is an error)."""
    if indicator.name in REGISTRY:
        raise ValueError(f"indicator '{indicator.name}' is already registered")
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


def lookback_bars(name: str, **params) -> int:
    """Bars before the first value of every output of `name`, on finite input."""
    return int(get(name).lookback(**bind_params(name, (), params)))


def warmup(name: str, **params) -> tuple[int, int]:
    """`(bars, sessions)` of history a slice needs before a bar so that the value at that bar
    equals the unsplit pass within 1e-9 relative; one of the two is 0.

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


def compute(name: str, *inputs: np.ndarray, **params) -> np.ndarray | tuple[np.ndarray, ...]:
    """Evaluate indicator `name` on `inputs` (one array per name in its `inputs`, the first one
    replaced by a source series where the rule gives one) with `params` (defaults filled in).

    Returns a float64 array as long as the inputs, or a tuple in the order of `outputs`. Non-
    finite inputs follow the module's NaN policy. For example:

    >>> compute("momentum", np.array([1.0, 2.0, 4.0, 7.0]), period=2).tolist()
    [nan, nan, 3.0, 5.0]
    """
    indicator = get(name)
    bound = bind_params(name, (), params)
    if len(inputs) != len(indicator.inputs):
        raise ValueError(f"{name} takes {len(indicator.inputs)} input series "
                         f"({', '.join(indicator.inputs)}), got {len(inputs)}")
    arrays = [_as_input(array, field) for array, field in zip(inputs, indicator.inputs)]
    length = arrays[0].shape[0] if arrays else 0
    if any(a.shape[0] != length for a in arrays):
        raise ValueError(f"{name}: input series differ in length: "
                         f"{[a.shape[0] for a in arrays]}")
    if length == 0:
        empty = np.empty(0)
        return tuple(empty.copy() for _ in indicator.outputs) if indicator.outputs else empty
    if any(field in INTEGER_FIELDS for field in indicator.inputs):
        return indicator.kernel(*arrays, **bound)  # session kernels skip bad bars themselves
    if indicator.cumulative:
        return _compute_skipping_bad_bars(indicator, arrays, bound)
    return _compute_per_finite_run(indicator, arrays, bound)


def _as_input(array: np.ndarray, field: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 1:
        raise ValueError(f"input '{field}' must be one-dimensional, got shape {array.shape}")
    dtype = np.int64 if field in INTEGER_FIELDS else np.float64
    return np.ascontiguousarray(array, dtype=dtype)


def _finite_mask(arrays: list[np.ndarray]) -> np.ndarray | None:
    """None when every value of every array is finite (one cheap pass each), else the mask."""
    if all(_all_finite_nb(a) for a in arrays):
        return None
    mask = np.isfinite(arrays[0])
    for array in arrays[1:]:
        mask &= np.isfinite(array)
    return mask


def _nan_like(result, length: int):
    if isinstance(result, tuple):
        return tuple(np.full(length, np.nan) for _ in result)
    return np.full(length, np.nan)


def _compute_per_finite_run(indicator: Indicator, arrays: list[np.ndarray], bound: dict):
    mask = _finite_mask(arrays)
    if mask is None:
        return indicator.kernel(*arrays, **bound)
    length = arrays[0].shape[0]
    edges = np.flatnonzero(np.diff(mask.astype(np.int8), prepend=0, append=0))
    starts, ends = edges[::2], edges[1::2]
    lookback = int(indicator.lookback(**bound))
    out = None
    for start, end in zip(starts.tolist(), ends.tolist()):
        if end - start <= lookback:
            continue
        part = indicator.kernel(*(a[start:end] for a in arrays), **bound)
        if out is None:
            out = _nan_like(part, length)
        if isinstance(part, tuple):
            for target, values in zip(out, part):
                target[start:end] = values
        else:
            out[start:end] = part
    if out is None:
        out = (tuple(np.full(length, np.nan) for _ in indicator.outputs)
               if indicator.outputs else np.full(length, np.nan))
    return out


def _compute_skipping_bad_bars(indicator: Indicator, arrays: list[np.ndarray], bound: dict):
    mask = _finite_mask(arrays)
    if mask is None:
        return indicator.kernel(*arrays, **bound)
    keep = np.flatnonzero(mask)
    length = arrays[0].shape[0]
    if keep.size == 0:
        return _nan_like(tuple(indicator.outputs), length) if indicator.outputs \
            else np.full(length, np.nan)
    part = indicator.kernel(*(a[keep] for a in arrays), **bound)
    out = _nan_like(part, length)
    if isinstance(part, tuple):
        for target, values in zip(out, part):
            target[keep] = values
    else:
        out[keep] = part
    return out


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
    pivoting volume to (session x minute), ``.rolling(sessions, min_periods=1).mean().shift(1)``
    over the full session range, and dividing each bar's volume by its cell."""
    n = volume.size
    out = np.full(n, np.nan)
    if n == 0:
        return out
    empty = np.iinfo(np.int64).min
    seen_session = np.full((1440, sessions), empty, dtype=np.int64)
    seen_volume = np.zeros((1440, sessions))
    first = session[0]
    for i in range(n):
        s = session[i]
        minute = minute_of_day[i]
        if minute < 0 or minute >= 1440:
            minute %= 1440
        v = volume[i]
        finite = np.isfinite(v)
        if finite and s - sessions >= first:
            total = 0.0
            count = 0
            # Slots are fixed by the absolute session index (s % sessions), so the order of
            # this sum does not depend on where the input starts.
            for slot in range(sessions):
                earlier = seen_session[minute, slot]
                if earlier >= s - sessions and earlier < s:
                    total += seen_volume[minute, slot]
                    count += 1
            if count > 0 and total != 0.0:
                out[i] = v / (total / count)
        if finite:
            slot = s % sessions
            if seen_session[minute, slot] == s:
                seen_volume[minute, slot] += v
            else:
                seen_session[minute, slot] = s
                seen_volume[minute, slot] = v
    return out


def band_position(close: np.ndarray, upper: np.ndarray, middle: np.ndarray,
                  lower: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """%B ``(close - lower) / (upper - lower)`` and bandwidth ``(upper - lower) / middle``, NaN
    where the divisor is 0. NumPy ufuncs (they release the GIL; measured faster than a numba
    loop here)."""
    width = upper - lower
    with np.errstate(divide="ignore", invalid="ignore"):
        percent_b = (close - lower) / width
        bandwidth = width / middle
    percent_b[width == 0.0] = np.nan
    bandwidth[middle == 0.0] = np.nan
    return percent_b, bandwidth


@njit(cache=True, nogil=True)
def zscore_1d_nb(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(values - mean) / std``, NaN where std is 0 (a flat window)."""
    n = values.size
    out = np.empty(n)
    for i in range(n):
        divisor = std[i] if std[i] != 0.0 else np.nan
        out[i] = (values[i] - mean[i]) / divisor
    return out


@njit(cache=True, nogil=True)
def stochastic_of_1d_nb(values: np.ndarray, highest: np.ndarray, lowest: np.ndarray,
                        flat_range: float) -> np.ndarray:
    """``100 * (values - lowest) / (highest - lowest)``, 0 where the range is <= `flat_range`
    (TA-Lib gives 0 for an exactly flat window; the tolerance keeps rounding noise of a
    mathematically flat input from reading as a full swing)."""
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
    """Mark a kernel with the TA-Lib functions it calls (read by the docs and the benchmark)."""
    def mark(kernel):
        kernel.talib_functions = functions
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
def _bbands(values, period, nbdev):
    upper, middle, lower = talib.BBANDS(values, timeperiod=period, nbdevup=nbdev,
                                        nbdevdn=nbdev, matype=0)
    percent_b, bandwidth = band_position(values, upper, middle, lower)
    return upper, middle, lower, percent_b, bandwidth


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
def _zscore(values, period):
    return zscore_1d_nb(values, talib.SMA(values, timeperiod=period),
                        talib.STDDEV(values, timeperiod=period, nbdev=1.0))


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


def _vwap(hlc3, volume, session):
    return session_vwap_1d_nb(hlc3, volume, session)


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
    """Bars a recursive indicator needs after its lookback: until its start weighs < 1e-12,
    plus `FLAT_STRETCH_BARS`. On bars where the smoothed input is 0 (no gain or loss, a zero
    true range, no volume) the value decays as fast as the start's error, so those bars do not
    reduce the relative error; the allowance keeps a flat stretch of that length inside the
    warm-up from loosening agreement."""
    return bars_until_weight_below(decay, stages=stages) + FLAT_STRETCH_BARS


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
    lookback=lambda period: period, warmup=_rsi_warmup,
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
    lookback=lambda period: period, warmup=_rsi_warmup,
    summary="Average true range.",
    convention="Wilder smoothing seeded with the plain average of the first `period` true "
               "ranges (TA-Lib); the first bar has no true range.",
))
register(Indicator(
    name="natr", kernel=_natr, inputs=_HLC, params=(_period(14, 1),),
    lookback=lambda period: period, warmup=_rsi_warmup,
    summary="Normalised ATR: 100 * atr / close.",
))
register(Indicator(
    name="true_range", kernel=_true_range, inputs=_HLC, params=(),
    lookback=lambda: 1, warmup=lambda: 1,
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
    lookback=lambda period: 2 * period - 1,
    warmup=lambda period: 2 * period - 1 + _settling_bars(_wilder_decay(period),
                                                                   stages=2),
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
    lookback=lambda period: period, warmup=lambda period: period,
    summary="Rate of change in percent: 100 * (x / x[period bars ago] - 1).",
    convention="0 where the earlier value is 0 (TA-Lib).",
))
register(Indicator(
    name="momentum", kernel=_momentum, inputs=("close",), params=(_period(10, 1),), source=True,
    lookback=lambda period: period, warmup=lambda period: period,
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
    lookback=lambda period: period - 1, warmup=lambda period: period - 1,
    summary="Highest value over `period` bars, this bar included (upper Donchian channel).",
))
register(Indicator(
    name="lowest", kernel=_lowest, inputs=("low",), params=(_period(20),), source=True,
    lookback=lambda period: period - 1, warmup=lambda period: period - 1,
    summary="Lowest value over `period` bars, this bar included (lower Donchian channel).",
))
register(Indicator(
    name="typical_price", kernel=_typical_price, inputs=_HLC, params=(),
    lookback=lambda: 0, warmup=lambda: 0,
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
    lookback=lambda sessions: 0, warmup=lambda sessions: Sessions(sessions + 1),
    summary="Volume / mean volume at the same minute of day over the previous `sessions` "
            "sessions.",
    convention="The current session is excluded (it would pull the ratio towards 1), hence "
               "a warm-up of sessions + 1; sessions without a bar at that minute are left out "
               "of the mean; NaN for the first `sessions` sessions of the input and where the "
               "mean is 0.",
))


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
    ours = {
        "vwap": "session_vwap_1d_nb", "relative_volume": "relative_volume_1d_nb",
        "bbands": "band_position", "zscore": "zscore_1d_nb",
        "stochrsi": "stochastic_of_1d_nb",
    }
    parts = [f"TA-Lib {', '.join(functions)}"] if functions else []
    if indicator.name in ours:
        parts.append(f"`{ours[indicator.name]}`")
    return " + ".join(parts)


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
        "- **Lookback**: bars before the first value, at the default parameters.",
        "- **Warm-up**: history a cluster reads before its first bar so that its values equal "
        "one unsplit pass within 1e-9 relative: the lookback, plus for recursive indicators "
        "the bars until the starting value weighs < 1e-12; or sessions (the current one "
        "included). Nested calls add up: `sma(rsi(14), 5)` needs rsi's warm-up plus 4.",
        "- **Non-finite input**: a bar where an input is NaN or inf (a derived source can hold "
        "them) gives NaN and the indicator restarts after it, its lookback applying again; "
        "TA-Lib alone would poison every later value. Session-anchored and cumulative "
        "indicators skip such a bar instead.",
        "- **Cumulative** indicators (obv) depend on the whole history; the pipeline anchors "
        "them at the first bar of the data and adds each cluster's offset, so their values "
        "do not depend on the cluster layout. Only differences between bars are meaningful.",
        "- Kernels: TA-Lib's C functions where it has the indicator (TA-Lib's global unstable "
        "period must stay 0), otherwise ours (numba, `nogil`). All release the GIL.",
        "",
        "| call | outputs | inputs | parameters | lookback | warm-up | kernel |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in sorted(REGISTRY):
        indicator = REGISTRY[name]
        bars, sessions = warmup(name)
        warm = f"{sessions} session{'s' if sessions != 1 else ''}" if sessions else f"{bars}"
        outputs = ", ".join(f"`.{o}`" for o in indicator.outputs) or "one"
        params = ", ".join(_param_text(p) for p in indicator.params) or "none"
        cumulative = " (cumulative)" if indicator.cumulative else ""
        lines.append(f"| `{_call_signature(indicator)}` | {outputs} | "
                     f"{', '.join(indicator.inputs)} | {params} | {lookback_bars(name)} | "
                     f"{warm}{cumulative} | {_kernel_text(indicator)} |")
    lines += ["", "## Definitions and conventions", ""]
    for name in sorted(REGISTRY):
        indicator = REGISTRY[name]
        lines.append(f"- **{name}**: {indicator.summary}"
                     + (f" {indicator.convention}" if indicator.convention else ""))
    lines.append("")
    return "\n".join(lines)
