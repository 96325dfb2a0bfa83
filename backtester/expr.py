"""The rule language: safe parse -> expression graph -> vectorised evaluation.

Rules are Python-like expressions (``rsi(14) < 30 and close > sma(50)``) parsed with `ast` and
checked against a whitelist: numbers, percentages (``1.5%``), bar fields, arithmetic,
comparisons (chained too), ``and``/``or``/``not``, indicator calls with named outputs
(``macd(12, 26, 9).signal``) and the functions in `FUNCTIONS`. Nothing is ever evaluated by
Python: the tree is translated into frozen, hashable nodes, so equal sub-expressions are one node
and are computed once per cluster.

Values are float64 arrays aligned with the bars. Numbers use NaN for "missing" (warm-up, a
division by zero). Conditions use 1.0 (true), 0.0 (false) and NaN (unknown): a comparison with a
missing value is unknown, ``not unknown`` is unknown, ``false and unknown`` is false, ``true or
unknown`` is true (SQL's three-valued logic). An alert fires only where its rule is exactly true.

Time: a rule at bar t sees bars <= t only. Every function here looks back, never forward.
"""

from __future__ import annotations

import ast
import difflib
import keyword
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from . import indicators
from .errors import ConfigError

FIELDS = ("open", "high", "low", "close", "volume", "hl2", "hlc3", "ohlc4")
NUMBER, BOOL = "number", "bool"


# --------------------------------------------------------------------------- nodes

class Node:
    """Base of the expression graph. Subclasses are frozen dataclasses (hashable, comparable).

    A node's hash is computed once and kept: definitions are shared sub-graphs, and a chain of
    definitions each using the next twice is a graph of n nodes but 2**n paths, which the
    dataclass hash (recomputed through every child on each call) would walk in full. The kept
    hash is left out of pickles, as string hashes differ between processes.
    """

    kind: str = NUMBER

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Set before @dataclass runs, so it counts as explicit and the generated one is skipped.
        cls.__hash__ = Node.__hash__  # type: ignore[method-assign]

    def __hash__(self) -> int:
        kept = self.__dict__.get("_hash")
        if kept is None:
            kept = hash((type(self).__name__, *(getattr(self, f) for f in self.__dataclass_fields__)))
            self.__dict__["_hash"] = kept
        return kept

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_hash", None)
        return state

    def children(self) -> tuple[Node, ...]:
        return ()


@dataclass(frozen=True)
class Num(Node):
    value: float
    is_bool: bool = False

    @property
    def kind(self) -> str:  # type: ignore[override]
        return BOOL if self.is_bool else NUMBER

    def __str__(self) -> str:
        if self.is_bool:
            return "true" if self.value else "false"
        return f"{self.value:g}"


@dataclass(frozen=True)
class Field(Node):
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Ind(Node):
    """An indicator value: `name(source?, *params).output`."""

    name: str
    source: Node | None
    params: tuple[tuple[str, float], ...]
    output: str | None = None

    def children(self) -> tuple[Node, ...]:
        return (self.source,) if self.source is not None else ()

    def __str__(self) -> str:
        args = [str(self.source)] if self.source is not None else []
        args += [f"{v:g}" for _, v in self.params]
        text = f"{self.name}({', '.join(args)})"
        return f"{text}.{self.output}" if self.output else text


@dataclass(frozen=True)
class Func(Node):
    """A rule function such as `crosses_above(a, b)` or `prev(x, n)`; `consts` are its integers."""

    name: str
    args: tuple[Node, ...]
    consts: tuple[float | None, ...] = ()

    @property
    def kind(self) -> str:  # type: ignore[override]
        return FUNCTIONS[self.name].result

    def children(self) -> tuple[Node, ...]:
        return self.args

    def __str__(self) -> str:
        spec = FUNCTIONS.get(self.name)
        required = len(spec.consts) if spec is not None else len(self.consts)
        parts = [str(a) for a in self.args] + [f"{c:g}" for c in self.consts[:required]]
        if spec is not None:
            # Options at their default are left out: `bars_since(x)` reads as written.
            for option, c in zip(spec.options, self.consts[required:]):
                if c != option.default:
                    parts.append(f"{option.name}={c:g}")
        if not parts and spec is not None and not spec.args and not spec.consts:
            return self.name
        return f"{self.name}({', '.join(parts)})"


@dataclass(frozen=True)
class Arith(Node):
    op: str
    left: Node
    right: Node

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)

    def __str__(self) -> str:
        return f"({self.left} {self.op} {self.right})"


@dataclass(frozen=True)
class Neg(Node):
    operand: Node

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)

    def __str__(self) -> str:
        return f"-{self.operand}"


@dataclass(frozen=True)
class Cmp(Node):
    op: str
    left: Node
    right: Node
    kind = BOOL

    def children(self) -> tuple[Node, ...]:
        return (self.left, self.right)

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"


@dataclass(frozen=True)
class Logic(Node):
    op: str  # "and" | "or"
    items: tuple[Node, ...]
    kind = BOOL

    def children(self) -> tuple[Node, ...]:
        return self.items

    def __str__(self) -> str:
        return "(" + f" {self.op} ".join(str(i) for i in self.items) + ")"


@dataclass(frozen=True)
class Not(Node):
    operand: Node
    kind = BOOL

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)

    def __str__(self) -> str:
        return f"not {self.operand}"


# --------------------------------------------------------------------------- evaluation context

class _LazyArrays(dict):
    """A dict of arrays that computes an absent one from its `lazy` recipe on first use."""

    lazy: dict[str, Callable[[], np.ndarray]]

    def __missing__(self, name: str) -> np.ndarray:
        recipe = self.lazy.get(name)
        if recipe is None:
            raise KeyError(name)
        self[name] = value = recipe()
        return value


class Context:
    """The arrays of one cluster's bars, with derived fields computed on first use.

    `arrays` holds at least open, high, low, close, volume (float64), session (int64) and
    minute_of_day (int64), or `lazy` recipes for them (called once, on first use, so a cluster
    computes local times only when a rule reads them); `anchors` maps cumulative indicator
    nodes to their value at the first bar, computed by the parent from the whole history (see
    `indicators`' cumulative contract).
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], anchors: Mapping[Node, float] | None = None,
                 lazy: Mapping[str, Callable[[], np.ndarray]] | None = None):
        self._arrays = _LazyArrays(arrays)
        self._arrays.lazy = dict(lazy or {})
        self.anchors = dict(anchors or {})
        self.n = len(self._arrays["close"])

    def array(self, name: str) -> np.ndarray:
        """Any context array by name: bar fields, `session`, `minute_of_day`, `timestamp`,
        `session_open` / `session_close` (UTC ns of the bar's session open and close)."""
        return self.field(name) if name in FIELDS else self._arrays[name]

    def field(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            a = self._arrays
            if name == "hl2":
                a[name] = (a["high"] + a["low"]) / 2.0
            elif name == "hlc3":
                a[name] = (a["high"] + a["low"] + a["close"]) / 3.0
            elif name == "ohlc4":
                a[name] = (a["open"] + a["high"] + a["low"] + a["close"]) / 4.0
            else:
                raise KeyError(name)
        return self._arrays[name]


def evaluate(nodes: Sequence[Node], ctx: Context,
             cache: dict[Node, np.ndarray] | None = None) -> dict[Node, np.ndarray]:
    """Values of `nodes` (and every sub-expression) on `ctx`; shared nodes are computed once."""
    cache = {} if cache is None else cache
    for node in nodes:
        _eval(node, ctx, cache)
    return cache


def _eval(node: Node, ctx: Context, cache: dict[Node, np.ndarray]) -> np.ndarray:
    hit = cache.get(node)
    if hit is not None:
        return hit
    if isinstance(node, Num):
        out = np.full(ctx.n, node.value, dtype=np.float64)
    elif isinstance(node, Field):
        out = np.asarray(ctx.field(node.name), dtype=np.float64)
    elif isinstance(node, Ind):
        out = _eval_indicator(node, ctx, cache)
    elif isinstance(node, Func):
        spec = FUNCTIONS[node.name]
        out = spec.evaluate([_eval(a, ctx, cache) for a in node.args], node.consts, ctx)
    elif isinstance(node, Arith):
        out = _arith(node.op, _eval(node.left, ctx, cache), _eval(node.right, ctx, cache))
    elif isinstance(node, Neg):
        out = -_eval(node.operand, ctx, cache)
    elif isinstance(node, Cmp):
        out = _compare(node.op, _eval(node.left, ctx, cache), _eval(node.right, ctx, cache))
    elif isinstance(node, Logic):
        values = [_eval(i, ctx, cache) for i in node.items]
        out = values[0]
        for v in values[1:]:
            out = logical_and(out, v) if node.op == "and" else logical_or(out, v)
    elif isinstance(node, Not):
        out = 1.0 - _eval(node.operand, ctx, cache)
    else:  # pragma: no cover - the parser builds only the nodes above
        raise TypeError(f"unknown node {node!r}")
    cache[node] = out
    return out


def _eval_indicator(node: Ind, ctx: Context, cache: dict[Node, np.ndarray]) -> np.ndarray:
    spec = indicators.get(node.name)
    params = {k: (int(v) if _param_kind(spec, k) is int else v) for k, v in node.params}
    base = Ind(node.name, node.source, node.params, None)
    inputs = [ctx.field(f) if f not in ("session", "minute_of_day", "timestamp")
              else ctx._arrays[f] for f in spec.inputs]
    # Bar fields are finite (bars.py rejects non-finite OHLCV), so compute need not scan
    # them; a rule's own series may hold NaN or inf (a division by a zero range).
    known_finite = [True] * len(inputs)
    if node.source is not None:
        inputs[0] = _eval(node.source, ctx, cache)
        known_finite[0] = False
    inputs = [np.ascontiguousarray(x, dtype=np.float64) if x.dtype != np.int64 else x
              for x in inputs]
    if not spec.outputs:
        result = indicators.compute(node.name, *inputs, known_finite=known_finite, **params)
        if spec.cumulative and base in ctx.anchors and len(result):
            result = result - result[0] + ctx.anchors[base]
        cache[base] = result
        return result
    wanted = node.output or spec.outputs[0]
    named = {o: Ind(node.name, node.source, node.params, o) for o in spec.outputs}
    first = named[spec.kernel_outputs[0]]
    if first in cache:  # the kernel ran for another output: derive this one from it
        kernel_outputs = {o: cache[named[o]] for o in spec.kernel_outputs}
        cache[named[wanted]] = indicators.derive(node.name, wanted, inputs, kernel_outputs)
    else:
        values = indicators.compute(node.name, *inputs, known_finite=known_finite,
                                    outputs=[wanted], **params)
        for output, value in values.items():
            cache[named[output]] = value
    cache.setdefault(base, cache[first])  # outputs[0] is the kernel's first output
    return cache[named[wanted]]


def _param_kind(spec: Any, name: str) -> type:
    for p in spec.params:
        if p.name == name:
            return p.kind
    return float


def _arith(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if op == "+":
            out = a + b
        elif op == "-":
            out = a - b
        elif op == "*":
            out = a * b
        elif op == "/":
            out = a / b
        else:
            out = np.power(a, b)
    # A division by zero is missing, not infinite: it must not fire `x > 100` by accident.
    out[~np.isfinite(out)] = np.nan
    return out


_COMPARE = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
            "==": np.equal, "!=": np.not_equal}


def _compare(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        out = _COMPARE[op](a, b).astype(np.float64)
    out[np.isnan(a) | np.isnan(b)] = np.nan
    return out


def logical_and(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Three-valued AND: false wins, then unknown, then true."""
    out = np.where(np.isnan(a) | np.isnan(b), np.nan, 1.0)
    out[(a == 0.0) | (b == 0.0)] = 0.0
    return out


def logical_or(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Three-valued OR: true wins, then unknown, then false."""
    out = np.where(np.isnan(a) | np.isnan(b), np.nan, 0.0)
    out[(a == 1.0) | (b == 1.0)] = 1.0
    return out


def is_true(values: np.ndarray) -> np.ndarray:
    """Where a condition is exactly true (unknown counts as not true)."""
    return values == 1.0


# --------------------------------------------------------------------------- functions

@dataclass(frozen=True)
class Option:
    """An optional constant of a rule function, written `name=value` (or by position when
    `positional`). `default` None means "absent unless written"; `integer` ones must be whole
    numbers >= `minimum`, the others any finite number."""

    name: str
    default: float | None
    minimum: float = 0.0
    integer: bool = True
    positional: bool = False


@dataclass(frozen=True)
class Function:
    """A rule function: its series arguments' kinds, integer constants, result kind and warm-up.

    `args` are the kinds of the series arguments (named `arg_names` in messages), `consts` the
    names of its required integer constants (>= `const_minimum`), `options` its optional ones;
    a call's `Func.consts` holds the required constants then every option's value, in order,
    so equal calls are equal nodes whether an option was written at its default or left out.
    `expand`, when given, rewrites the call into other nodes (so `rising(x, n)` shares `prev`
    nodes with other rules); otherwise `evaluate(series, consts, ctx)` computes it.

    Warm-up: `warmup(consts)` bars plus `warmup_sessions` sessions (counting the current one)
    of history make the value at a bar equal to that of one pass over all the data; nested calls
    add up (see `warmup`).
    """

    name: str
    args: tuple[str, ...]
    consts: tuple[str, ...]
    result: str
    summary: str
    evaluate: Callable[[list[np.ndarray], tuple[Any, ...], Context], np.ndarray] | None = None
    warmup: Callable[[tuple[Any, ...]], int] = lambda consts: 0
    expand: Callable[[tuple[Node, ...], tuple[Any, ...]], Node] | None = None
    const_minimum: int = 1
    options: tuple[Option, ...] = ()
    warmup_sessions: int = 0
    arg_names: tuple[str, ...] = ()
    example: str = ""

    def signature(self) -> str:
        """How a call is written, e.g. ``value_when(cond, x, k=0, max_bars=1000)``."""
        names = list(self.arg_names or ("x", "y", "z")[: len(self.args)]) + list(self.consts)
        names += [f"{o.name}={_format_default(o.default)}" for o in self.options]
        return f"{self.name}({', '.join(names)})" if names else self.name


def _format_default(value: float | None) -> str:
    return "missing" if value is None else f"{value:g}"


FUNCTIONS: dict[str, Function] = {}


def register_function(function: Function) -> Function:
    FUNCTIONS[function.name] = function
    return function


def _float(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float64)


def shift(x: np.ndarray, n: int) -> np.ndarray:
    """x n bars ago; NaN for the first n bars. Equivalent to `pd.Series(x).shift(n)`."""
    out = np.full_like(x, np.nan)
    if n < len(x):
        out[n:] = x[: len(x) - n]
    return out


def rolling_sum(x: np.ndarray, n: int) -> np.ndarray:
    """Sum of the last n values (x must be finite, e.g. 0/1 counts); NaN until n bars exist.

    Exact for integer-valued inputs, which is all it is used for.
    """
    c = np.concatenate(([0.0], np.cumsum(x, dtype=np.float64)))
    out = np.full(len(x), np.nan)
    if n <= len(x):
        out[n - 1:] = c[n:] - c[: len(x) - n + 1]
    return out


def _crosses_above(series, consts, ctx):
    a, b = series
    a1, b1 = shift(a, 1), shift(b, 1)
    with np.errstate(invalid="ignore"):
        out = ((a > b) & (a1 <= b1)).astype(np.float64)
    out[np.isnan(a) | np.isnan(b) | np.isnan(a1) | np.isnan(b1)] = np.nan
    return out


def _crosses_below(series, consts, ctx):
    a, b = series
    return _crosses_above([b, a], consts, ctx)


HELD, WITHIN, COUNT = 0, 1, 2


@njit(cache=True, nogil=True)
def window_truth_1d_nb(cond: np.ndarray, n: int, mode: int) -> np.ndarray:
    """Three-valued summaries of `cond` over the last `n` bars (current included), in one pass;
    NaN for the first n - 1 bars. `mode` HELD: 0 if any bar is false, else NaN if any is
    unknown, else 1; WITHIN: 1 if any is true, else NaN if any is unknown, else 0; COUNT: how
    many are true. The numpy equivalents are `rolling_sum` of `cond == 0`, `cond == 1` and
    `isnan(cond)`, combined that way."""
    size = len(cond)
    out = np.full(size, np.nan)
    true = false = missing = 0
    for i in range(size):
        v = cond[i]
        # branch-free counting: conditions flip often, so branches mispredict
        true += v == 1.0
        false += v == 0.0
        missing += v != v
        if i >= n:
            old = cond[i - n]
            true -= old == 1.0
            false -= old == 0.0
            missing -= old != old
        if i >= n - 1:
            if mode == COUNT:
                out[i] = true
            elif mode == HELD:
                out[i] = 0.0 if false > 0 else (np.nan if missing > 0 else 1.0)
            else:
                out[i] = 1.0 if true > 0 else (np.nan if missing > 0 else 0.0)
    return out


def _window_truth(mode: int):
    def run(series, consts, ctx):
        return window_truth_1d_nb(_float(series[0]), int(consts[0]), mode)
    return run


_held, _within, _count = _window_truth(HELD), _window_truth(WITHIN), _window_truth(COUNT)


def _prev(series, consts, ctx):
    return shift(series[0], int(consts[0]))


def _is_missing(series, consts, ctx):
    return np.isnan(series[0]).astype(np.float64)


def _fill_missing(series, consts, ctx):
    x, v = series
    return np.where(np.isnan(x), v, x)


def _elementwise(fn):
    def run(series, consts, ctx):
        with np.errstate(invalid="ignore"):
            return fn(*series)
    return run


register_function(Function(
    "crosses_above", (NUMBER, NUMBER), (), BOOL,
    "a[t] > b[t] and a[t-1] <= b[t-1] (all four present), like Pine's ta.crossover",
    evaluate=_crosses_above, warmup=lambda c: 1, arg_names=("a", "b"),
    example="crosses_above(ema(9), ema(21))"))
register_function(Function(
    "crosses_below", (NUMBER, NUMBER), (), BOOL,
    "a[t] < b[t] and a[t-1] >= b[t-1] (all four present), like Pine's ta.crossunder",
    evaluate=_crosses_below, warmup=lambda c: 1, arg_names=("a", "b"),
    example="crosses_below(rsi(14), 30)"))
register_function(Function(
    "crosses", (NUMBER, NUMBER), (), BOOL, "crosses_above(a, b) or crosses_below(a, b)",
    expand=lambda a, c: Logic("or", (Func("crosses_above", a), Func("crosses_below", a))),
    arg_names=("a", "b"), example="crosses(close, vwap)"))
register_function(Function(
    "prev", ("any",), ("n",), "same", "x as it was n bars ago (missing for the first n bars)",
    evaluate=_prev, warmup=lambda c: int(c[0]), example="close > prev(high, 1)"))
register_function(Function(
    "change", (NUMBER,), ("n",), NUMBER, "x - prev(x, n)",
    expand=lambda a, c: Arith("-", a[0], Func("prev", a, c)), example="change(close, 5) > 0.5"))
register_function(Function(
    "pct_change", (NUMBER,), ("n",), NUMBER, "x / prev(x, n) - 1 (a fraction: 1% is 0.01)",
    expand=lambda a, c: Arith("-", Arith("/", a[0], Func("prev", a, c)), Num(1.0)),
    example="pct_change(close, 15) < -1%"))
register_function(Function(
    "rising", (NUMBER,), ("n",), BOOL, "x rose on each of the last n bars: held(x > prev(x, 1), n)",
    expand=lambda a, c: Func("held", (Cmp(">", a[0], Func("prev", a, (1.0,))),), c),
    example="rising(sma(20), 3)"))
register_function(Function(
    "falling", (NUMBER,), ("n",), BOOL, "x fell on each of the last n bars: held(x < prev(x, 1), n)",
    expand=lambda a, c: Func("held", (Cmp("<", a[0], Func("prev", a, (1.0,))),), c),
    example="falling(close, 4)"))
register_function(Function(
    "held", (BOOL,), ("n",), BOOL, "cond true on each of the last n bars (the current one included)",
    evaluate=_held, warmup=lambda c: int(c[0]) - 1, arg_names=("cond",),
    example="held(close > vwap, 10)"))
register_function(Function(
    "within", (BOOL,), ("n",), BOOL, "cond true at least once in the last n bars (current included)",
    evaluate=_within, warmup=lambda c: int(c[0]) - 1, arg_names=("cond",),
    example="within(crosses_below(rsi(14), 30), 5)"))
register_function(Function(
    "count", (BOOL,), ("n",), NUMBER, "how many of the last n bars (current included) had cond true",
    evaluate=_count, warmup=lambda c: int(c[0]) - 1, arg_names=("cond",),
    example="count(close > open, 10) >= 8"))
register_function(Function(
    "abs", (NUMBER,), (), NUMBER, "absolute value", evaluate=_elementwise(np.abs),
    example="abs(change(close, 1)) > 0.5"))
register_function(Function(
    "min", (NUMBER, NUMBER), (), NUMBER, "the smaller of a and b (missing if either is)",
    evaluate=_elementwise(np.minimum), arg_names=("a", "b"), example="low < min(open, close) - 1"))
register_function(Function(
    "max", (NUMBER, NUMBER), (), NUMBER, "the larger of a and b (missing if either is)",
    evaluate=_elementwise(np.maximum), arg_names=("a", "b"), example="high > max(open, close) + 1"))
register_function(Function(
    "is_missing", ("any",), (), BOOL, "true where x is missing (never unknown itself)",
    evaluate=_is_missing, example="not is_missing(sma(200))"))
register_function(Function(
    "fill_missing", (NUMBER, NUMBER), (), NUMBER, "x, with missing values replaced by v",
    evaluate=_fill_missing, arg_names=("x", "v"), example="fill_missing(relative_volume, 1) > 2"))




# --------------------------------------------------------------------------- history functions
#
# `bars_since`, `value_when` and `highest_since`/`lowest_since` would, unbounded, depend on the
# whole history before a bar: their value in a cluster would depend on where the cluster starts
# (split invariance, docs/architecture.md). Each therefore searches at most `max_bars` bars back (the current bar
# included, so the window is bars t - max_bars .. t) and declares `max_bars` as its warm-up; a
# cluster read from that warm-up sees exactly the bars an unsplit pass sees. A condition counts
# only where it is exactly true (unknown bars are not true), as for alerts.

DEFAULT_MAX_BARS = 1000
"""How far the history functions look back unless the rule says `max_bars=` (their warm-up)."""

_MAX_BARS = Option("max_bars", float(DEFAULT_MAX_BARS), minimum=1)


@njit(cache=True, nogil=True)
def bars_since_1d_nb(cond: np.ndarray, max_bars: int) -> np.ndarray:
    """Bars since `cond` was last exactly 1.0 (0 on such a bar); NaN when it was not 1.0 on any
    of the last `max_bars` + 1 bars. Equivalent to, per bar t,
    `t - max(i for i in range(max(0, t - max_bars), t + 1) if cond[i] == 1)`."""
    n = len(cond)
    out = np.full(n, np.nan)
    last = -1
    for i in range(n):
        if cond[i] == 1.0:
            last = i
        if last >= 0 and i - last <= max_bars:
            out[i] = i - last
    return out


@njit(cache=True, nogil=True)
def value_when_1d_nb(cond: np.ndarray, x: np.ndarray, k: int, max_bars: int) -> np.ndarray:
    """`x` at the (k+1)-th most recent bar (k = 0: the latest) among the last `max_bars` + 1
    where `cond` is exactly 1.0; NaN where there are fewer. For k = 0 and an unbounded window,
    equivalent to `x[last]` with `last = pd.Series(np.where(cond == 1, np.arange(n), np.nan))
    .ffill()` (NaN where `last` is)."""
    n = len(cond)
    out = np.full(n, np.nan)
    ring = np.zeros(k + 1, dtype=np.int64)  # the last k + 1 true bars, oldest at `head`
    seen = 0
    head = 0
    for i in range(n):
        if cond[i] == 1.0:
            if seen < k + 1:
                ring[seen] = i
                seen += 1
            else:
                ring[head] = i
                head = (head + 1) % (k + 1)
        if seen == k + 1:
            j = ring[head]
            if i - j <= max_bars:
                out[i] = x[j]
    return out


@njit(cache=True, nogil=True)
def extreme_since_1d_nb(cond: np.ndarray, x: np.ndarray, max_bars: int,
                        highest: bool) -> np.ndarray:
    """Highest (or lowest) `x` from the last bar where `cond` is exactly 1.0 through the current
    bar, both included; NaN before the first such bar, when it lies more than `max_bars` bars
    back, or when `x` is missing on any bar of that span. Equivalent to
    `pd.Series(x).groupby((cond == 1).cumsum()).cummax()` on groups >= 1 for finite `x`."""
    n = len(cond)
    out = np.full(n, np.nan)
    last = -1
    best = np.nan
    for i in range(n):
        v = x[i]
        if cond[i] == 1.0:
            last = i
            best = v
        elif last >= 0 and (v > best if highest else v < best):
            best = v
        elif np.isnan(v):
            best = np.nan  # stays missing: NaN compares false until the next true bar
        if last >= 0 and i - last <= max_bars:
            out[i] = best
    return out


def _bars_since(series, consts, ctx):
    default, max_bars = consts
    out = bars_since_1d_nb(_float(series[0]), int(max_bars))
    if default is not None:
        out[np.isnan(out)] = default
    return out


def _value_when(series, consts, ctx):
    k, max_bars = consts
    return value_when_1d_nb(_float(series[0]), _float(series[1]), int(k), int(max_bars))


def _extreme_since(highest: bool):
    def run(series, consts, ctx):
        return extreme_since_1d_nb(_float(series[0]), _float(series[1]), int(consts[0]), highest)
    return run


register_function(Function(
    "bars_since", (BOOL,), (), NUMBER,
    "bars since cond was last true (0 on a true bar); missing (or `default`) when it was not "
    "true on any of the last max_bars + 1 bars",
    evaluate=_bars_since, warmup=lambda c: int(c[1]), arg_names=("cond",),
    options=(Option("default", None, minimum=-np.inf, integer=False), _MAX_BARS),
    example="bars_since(crosses_above(close, vwap)) <= 5"))
register_function(Function(
    "value_when", (BOOL, NUMBER), (), NUMBER,
    "x at the k-th most recent bar where cond was true (k = 0: the latest, maybe this bar), "
    "within the last max_bars + 1 bars; missing otherwise",
    evaluate=_value_when, warmup=lambda c: int(c[1]), arg_names=("cond", "x"),
    options=(Option("k", 0.0, minimum=0, positional=True), _MAX_BARS),
    example="close > value_when(crosses_above(close, vwap), high)"))
register_function(Function(
    "highest_since", (BOOL, NUMBER), (), NUMBER,
    "highest x since the last bar where cond was true, that bar and this one included; "
    "missing before it, when it lies more than max_bars bars back, or if x was missing since",
    evaluate=_extreme_since(True), warmup=lambda c: int(c[0]), arg_names=("cond", "x"),
    options=(_MAX_BARS,), example="close < highest_since(crosses_above(close, vwap), high) - 1"))
register_function(Function(
    "lowest_since", (BOOL, NUMBER), (), NUMBER,
    "lowest x since the last bar where cond was true, that bar and this one included; "
    "missing before it, when it lies more than max_bars bars back, or if x was missing since",
    evaluate=_extreme_since(False), warmup=lambda c: int(c[0]), arg_names=("cond", "x"),
    options=(_MAX_BARS,), example="close > lowest_since(crosses_below(rsi(14), 30), low) * 1.01"))


# --------------------------------------------------------------------------- session functions
#
# Session-aware by name: they read the session table (`session`, `session_open`,
# `session_close` context arrays), so a half-day's early close is the calendar's. A session's
# first bar is the first bar of the data in that session; warm-up is in sessions.

MINUTE_NS = 60 * 10**9


@njit(cache=True, nogil=True)
def session_first_1d_nb(x: np.ndarray, session: np.ndarray) -> np.ndarray:
    """`x` at the first bar of each bar's session. Equivalent to
    `pd.Series(x).groupby(session).transform("first")` (NaN kept)."""
    n = len(x)
    out = np.empty(n)
    first = np.nan
    for i in range(n):
        if i == 0 or session[i] != session[i - 1]:
            first = x[i]
        out[i] = first
    return out


@njit(cache=True, nogil=True)
def previous_session_last_1d_nb(x: np.ndarray, session: np.ndarray) -> np.ndarray:
    """`x` at the last bar of the previous session (session index one less); NaN when the data
    has no bar in that session. Equivalent to mapping each session s to
    `pd.Series(x).groupby(session).last()[s - 1]`."""
    n = len(x)
    out = np.full(n, np.nan)
    last = np.nan
    last_session = -2
    for i in range(n):
        if i > 0 and session[i] != session[i - 1]:
            last = x[i - 1]
            last_session = session[i - 1]
        if last_session == session[i] - 1:
            out[i] = last
    return out


@njit(cache=True, nogil=True)
def session_extreme_so_far_1d_nb(x: np.ndarray, session: np.ndarray,
                                 highest: bool) -> np.ndarray:
    """Running highest (or lowest) `x` from the first bar of each session through the current
    bar; missing from a missing `x` to the session's end. Equivalent to
    `pd.Series(x).groupby(session).cummax()` for finite `x`."""
    n = len(x)
    out = np.empty(n)
    best = np.nan
    for i in range(n):
        v = x[i]
        if i == 0 or session[i] != session[i - 1]:
            best = v
        elif (v > best if highest else v < best) or np.isnan(v):
            best = v  # a NaN stays: it compares false with every later value
        out[i] = best
    return out


def _session(ctx: Context) -> np.ndarray:
    return np.ascontiguousarray(ctx.array("session"), dtype=np.int64)


def _day_open(series, consts, ctx):
    return session_first_1d_nb(_float(ctx.array("open")), _session(ctx))


def _prev_day_close(series, consts, ctx):
    return previous_session_last_1d_nb(_float(ctx.array("close")), _session(ctx))


def _day_extreme(name: str, highest: bool):
    def run(series, consts, ctx):
        return session_extreme_so_far_1d_nb(_float(ctx.array(name)), _session(ctx), highest)
    return run


def _minutes_since_open(series, consts, ctx):
    return (ctx.array("timestamp") - ctx.array("session_open")) / MINUTE_NS


def _minutes_to_close(series, consts, ctx):
    return (ctx.array("session_close") - ctx.array("timestamp")) / MINUTE_NS


register_function(Function(
    "day_open", (), (), NUMBER, "open of the first bar of the current session",
    evaluate=_day_open, warmup_sessions=1, example="close > day_open * 1.01"))
register_function(Function(
    "prev_day_close", (), (), NUMBER,
    "close of the last bar of the previous session (missing if it has no bars)",
    evaluate=_prev_day_close, warmup_sessions=2, example="day_open > prev_day_close * 1.02"))
register_function(Function(
    "day_high_so_far", (), (), NUMBER,
    "highest high of the current session so far, this bar included",
    evaluate=_day_extreme("high", True), warmup_sessions=1,
    example="high >= day_high_so_far and minutes_since_open >= 30"))
register_function(Function(
    "day_low_so_far", (), (), NUMBER,
    "lowest low of the current session so far, this bar included",
    evaluate=_day_extreme("low", False), warmup_sessions=1,
    example="low <= day_low_so_far and minutes_since_open >= 30"))
register_function(Function(
    "minutes_since_open", (), (), NUMBER,
    "minutes from the session's open to this bar's open (0 on a 09:30 bar at a 09:30 open)",
    evaluate=_minutes_since_open, example="minutes_since_open < 60"))
register_function(Function(
    "minutes_to_close", (), (), NUMBER,
    "minutes from this bar's open to the session's close (1 on the last 1-minute bar; "
    "half-days close early)", evaluate=_minutes_to_close, example="minutes_to_close <= 15"))


# --------------------------------------------------------------------------- warm-up

def warmup(node: Node) -> tuple[int, int]:
    """(bars, sessions) of history `node` needs before its value equals an unsplit pass.

    Nested calls add up (`sma(rsi(14), 5)` needs rsi's warm-up plus sma's); siblings take the
    larger of the two.
    """
    memo: dict[Node, tuple[int, int]] = {}
    return _warmup(node, memo)


def _warmup(node: Node, memo: dict[Node, tuple[int, int]]) -> tuple[int, int]:
    if node in memo:
        return memo[node]
    kids = [_warmup(c, memo) for c in node.children()]
    bars = max((k[0] for k in kids), default=0)
    sessions = max((k[1] for k in kids), default=0)
    if isinstance(node, Ind):
        params = dict(node.params)
        spec = indicators.get(node.name)
        params = {k: (int(v) if _param_kind(spec, k) is int else v) for k, v in params.items()}
        own_bars, own_sessions = indicators.warmup(node.name, **params)
        bars, sessions = bars + own_bars, sessions + own_sessions
    elif isinstance(node, Func):
        spec = FUNCTIONS[node.name]
        bars += spec.warmup(node.consts)
        sessions += spec.warmup_sessions
    memo[node] = (bars, sessions)
    return memo[node]


def walk(node: Node):
    """Every node of the graph under `node`, children before parents, each once."""
    seen: set[Node] = set()
    stack: list[tuple[Node, bool]] = [(node, False)]
    while stack:
        current, expanded = stack.pop()
        if expanded:
            if current not in seen:
                seen.add(current)
                yield current
            continue
        if current in seen:
            continue
        stack.append((current, True))
        for child in reversed(current.children()):
            stack.append((child, False))


def indicator_nodes(node: Node) -> list[Ind]:
    """The indicator values a rule reads, in first-use order (for the alerts table's columns)."""
    out: list[Ind] = []
    for n in walk(node):
        if isinstance(n, Ind) and n not in out:
            out.append(n)
    return out


# --------------------------------------------------------------------------- parsing

_PERCENT = re.compile(r"(?<![\w.])(\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*%")
_CMP_OPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_ARITH_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_MAX_LENGTH = 4000
_NEWLINE = re.compile(r"\r\n|\r|\n")
_WHITESPACE = re.compile(r"\s")
_MAX_CONST = 10**9  # bars: a larger window is a typo, and would not fit a float exactly


_PERCENT_MARKER = "__pct__"  # what `1.5%` is rewritten to; honoured only where the rewrite put it


def definition_name_problem(name: str) -> str | None:
    """Why `name` cannot name a `define:` entry (it would shadow a built-in), or None if it can.

    For example, ``definition_name_problem("rsi")`` is ``"is an indicator"``.
    """
    if name in ("true", "false", "True", "False"):
        return "is a condition literal"
    if keyword.iskeyword(name):
        return "is a reserved word"
    if name in FIELDS:
        return "is a bar field"
    if name in FUNCTIONS:
        return "is a function"
    if name in indicators.REGISTRY:
        return "is an indicator"
    if name.startswith("__"):
        return "is reserved for internal names (they start with '__')"
    return None


def definition_name_error(source: str, name: str) -> ConfigError | None:
    """The `ConfigError` for a definition called `name`, at `define.<name>`, or None if the name
    is usable."""
    why = definition_name_problem(name)
    if why is None:
        return None
    return ConfigError(source, f"define.{name}", f"'{name}' {why} and cannot be redefined",
                       f"choose another name, e.g. 'my_{name.strip('_')}'")


class _Parser:
    def __init__(self, source: str, field: str, text: str, defines: Mapping[str, str],
                 stack: tuple[str, ...], parsed: dict[str, Node] | None = None,
                 alert: str | None = None):
        self.source, self.field, self.text = source, field, text
        self.defines, self.stack = defines, stack
        # Each definition is parsed once per `parse` call and then shared: re-parsing it at
        # every use would double the work per level of definitions that use another twice.
        self.parsed = {} if parsed is None else parsed
        self.alert = alert
        self.mapping: list[tuple[int, int]] = []
        self.percent_at: set[int] = set()
        self.wrapped = f"({text}\n)"

    def error(self, message: str, node: ast.AST | None = None, hint: str | None = None,
              column: int | None = None) -> ConfigError:
        """A `ConfigError` at `node` (or at character `column` of the rule): one line saying
        where, plus a `detail` showing the rule with a caret under that column."""
        col = column
        if col is None and node is not None and getattr(node, "lineno", None) is not None:
            col = self._column(node.lineno, node.col_offset, in_bytes=True)
        if col is None:
            col = 0
        col = max(0, min(col, len(self.text)))
        err = ConfigError(self.source, self.field, f"{message} at column {col + 1}", hint)
        err.detail = _caret(self.text, col)
        return err

    def _column(self, lineno: int, offset: int, in_bytes: bool) -> int:
        """Character index in the rule of a position `ast` reports in the wrapped text.

        `ast` counts lines from 1 and columns from 0, in UTF-8 bytes (`in_bytes`; a
        SyntaxError's offset counts characters) of "(" + the rule after `%` rewriting + "\\n)";
        the rule may span lines (YAML `|`).
        """
        position = self._wrapped_index(lineno, offset, in_bytes) - 1  # the wrapping "("
        return _map_column(max(0, position), self.mapping)

    def _wrapped_index(self, lineno: int, offset: int, in_bytes: bool) -> int:
        """Character index in the wrapped text of a line and column as `ast` reports them."""
        starts = [0] + [m.end() for m in _NEWLINE.finditer(self.wrapped)]
        line_start = starts[min(max(lineno, 1), len(starts)) - 1]
        line = _NEWLINE.split(self.wrapped[line_start:], maxsplit=1)[0]
        if in_bytes:
            offset = len(line.encode("utf-8")[:offset].decode("utf-8", errors="ignore"))
        return line_start + offset

    def _is_percent(self, n: ast.AST) -> bool:
        """Whether `n` is a `__pct__(number)` call that the `%` rewriting wrote (a user may type
        the same text; theirs is an unknown function)."""
        return (isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                and n.func.id == _PERCENT_MARKER
                and self._wrapped_index(n.lineno, n.col_offset, in_bytes=True) in self.percent_at)

    def _written(self, n: ast.AST, width: int = 60) -> str:
        """The text of `n` as the user wrote it, on one line (cut to `width` characters)."""
        start = self._column(n.lineno, n.col_offset, in_bytes=True)
        if n.end_lineno is None or n.end_col_offset is None:  # pragma: no cover - always set
            return self.text[start:start + width]
        end = self._column(n.end_lineno, n.end_col_offset, in_bytes=True)
        text = " ".join(self.text[start:end].split()).replace("( ", "(").replace(" )", ")")
        return text if len(text) <= width else text[:width - 3] + "..."

    def _operator_column(self, n: ast.BinOp, symbol: str) -> int:
        """Where the operator `symbol` of `n` is written (`ast` only gives its operands)."""
        if n.left.end_lineno is None or n.left.end_col_offset is None:  # pragma: no cover
            return self._column(n.lineno, n.col_offset, in_bytes=True)
        after_left = self._column(n.left.end_lineno, n.left.end_col_offset, in_bytes=True)
        found = self.text.find(symbol, after_left)
        return found if found >= 0 else after_left

    def _attribute_column(self, n: ast.Attribute) -> int:
        """Where the name after the dot of `n` begins (`ast` only gives the whole expression)."""
        if n.end_lineno is None or n.end_col_offset is None:
            return self._column(n.lineno, n.col_offset, in_bytes=True)
        start = n.end_col_offset - len(n.attr.encode("utf-8"))
        return self._column(n.end_lineno, start, in_bytes=True)

    def parse(self) -> Node:
        text = self.text
        if len(text) > _MAX_LENGTH:
            raise self.error(f"expression longer than {_MAX_LENGTH} characters",
                             column=_MAX_LENGTH)
        if not text.strip():
            raise self.error("empty rule", hint="write a condition such as `rsi(14) < 30`")
        if "#" in text:   # Python would read the rest of the line as a comment and drop it
            raise self.error("'#' is not allowed in a rule: it would end the rule there",
                             hint="rules have no comments; put them in the YAML outside the "
                                  "quotes", column=text.index("#"))
        modulo = _modulo_column(text)
        if modulo is not None:
            raise self.error(_MODULO, hint=_MODULO_HINT, column=modulo)
        rewritten, mapping = _rewrite_percentages(text)
        self.mapping = mapping
        self.percent_at = {position + 1 for position, _ in mapping}  # + the wrapping "("
        self.wrapped = f"({rewritten}\n)"
        try:
            with warnings.catch_warnings():
                # Python warns about text like `1and`; under `-W error` that would escape as a
                # SyntaxWarning instead of our error, so treat it as the syntax error it is.
                warnings.simplefilter("error", SyntaxWarning)
                tree = ast.parse(self.wrapped, mode="eval")
        except SyntaxError as exc:
            col = self._column(exc.lineno or 1, (exc.offset or 1) - 1, in_bytes=False)
            why = "" if exc.msg == "invalid syntax" else f" ({exc.msg})"
            raise self.error(f"invalid syntax{why}", column=col) from None
        except (ValueError, RecursionError, MemoryError):
            raise self.error("cannot parse the expression (too deeply nested?)") from None
        try:
            node = self.node(tree.body, mapping)
        except RecursionError:
            raise self.error("expression too deeply nested") from None
        return node

    def node(self, n: ast.AST, mapping) -> Node:
        if isinstance(n, ast.Constant):
            if isinstance(n.value, bool):
                return Num(float(n.value), is_bool=True)
            if isinstance(n.value, (int, float)) and not isinstance(n.value, complex):
                try:
                    finite = np.isfinite(float(n.value))
                except OverflowError:
                    finite = False
                if not finite:
                    raise self.error("number out of range", n)
                return Num(float(n.value))
            raise self.error(f"{type(n.value).__name__} literals are not allowed", n,
                             "rules use numbers, fields, indicators and functions")
        if isinstance(n, ast.Name):
            return self.name(n)
        if isinstance(n, ast.BoolOp):
            items = tuple(self.condition(v, mapping) for v in n.values)
            return Logic("and" if isinstance(n.op, ast.And) else "or", items)
        if isinstance(n, ast.UnaryOp):
            if isinstance(n.op, ast.Not):
                return Not(self.condition(n.operand, mapping))
            operand = self.number(n.operand, mapping)
            if isinstance(n.op, ast.USub):
                if isinstance(operand, Num):
                    return Num(-operand.value)
                return Neg(operand)
            if isinstance(n.op, ast.UAdd):
                return operand
            raise self.error("'~' is not allowed", n, "use `not`")
        if isinstance(n, ast.BinOp):
            op = _ARITH_OPS.get(type(n.op))
            if isinstance(n.op, ast.Mod):
                raise self.error(_MODULO, hint=_MODULO_HINT,
                                 column=self._operator_column(n, "%"))
            if op is None:
                raise self.error(f"operator {type(n.op).__name__} is not allowed", n,
                                 "use + - * / ** (and `and`/`or`/`not` for conditions)")
            left, right = self.number(n.left, mapping), self.number(n.right, mapping)
            return Arith(op, left, right)
        if isinstance(n, ast.Compare):
            operands = [self.number(n.left, mapping)] + [self.number(c, mapping)
                                                          for c in n.comparators]
            parts = []
            for i, op in enumerate(n.ops):
                symbol = _CMP_OPS.get(type(op))
                if symbol is None:
                    raise self.error(f"'{type(op).__name__}' comparisons are not allowed", n,
                                     "use < <= > >= == !=")
                parts.append(Cmp(symbol, operands[i], operands[i + 1]))
            return parts[0] if len(parts) == 1 else Logic("and", tuple(parts))
        if isinstance(n, ast.Call):
            return self.call(n, mapping, output=None)
        if isinstance(n, ast.Attribute):
            if not isinstance(n.value, ast.Call):
                raise self.error(f"'.{n.attr}' is only allowed on an indicator call",
                                 hint="like macd(12, 26, 9).signal",
                                 column=self._attribute_column(n))
            return self.call(n.value, mapping, output=(n.attr, n))
        what = {ast.Subscript: "subscripts", ast.Lambda: "lambdas", ast.IfExp: "if-expressions",
                ast.ListComp: "comprehensions", ast.GeneratorExp: "comprehensions",
                ast.List: "lists", ast.Tuple: "tuples", ast.Dict: "dicts", ast.Set: "sets",
                ast.JoinedStr: "f-strings", ast.NamedExpr: "assignments",
                ast.Starred: "starred arguments", ast.Await: "await"}.get(type(n),
                                                                        type(n).__name__)
        raise self.error(f"{what} are not allowed in rules", n)

    def call_error(self, n: ast.Call | None, name: str, message: str, where: ast.AST,
                   hint: str | None = None) -> ConfigError:
        """An error about an indicator call, naming the alert (when parsing one) and the call as
        written: ``alert 'oversold': rsi(0): period must be an integer >= 2, got 0``."""
        label = f"alert '{self.alert}': " if self.alert else ""
        call = self._written(n) if n is not None else name
        return self.error(f"{label}{call}: {message}", where, hint)

    def number(self, n: ast.AST, mapping) -> Node:
        node = self.node(n, mapping)
        if node.kind == BOOL:
            raise self.error(f"expected a number, got the condition '{_src(node)}'", n,
                             "compare numbers, then combine conditions with and/or")
        return node

    def condition(self, n: ast.AST, mapping) -> Node:
        node = self.node(n, mapping)
        if node.kind != BOOL:
            raise self.error(f"expected a condition, got the number '{_src(node)}'", n,
                             "write a comparison such as `x > 0`")
        return node

    def name(self, n: ast.Name) -> Node:
        name = n.id
        if name in ("true", "True"):
            return Num(1.0, is_bool=True)
        if name in ("false", "False"):
            return Num(0.0, is_bool=True)
        if name in FIELDS:
            return Field(name)
        if name in self.defines:
            if name in self.stack:
                cycle = " -> ".join((*self.stack[self.stack.index(name):], name))
                raise self.error(f"definition cycle {cycle}", n)
            node = self.parsed.get(name)
            if node is None:
                # A parsed definition is acyclic (a cycle raises above before it is stored).
                node = _Parser(self.source, f"define.{name}", self.defines[name], self.defines,
                               (*self.stack, name), self.parsed).parse()
                self.parsed[name] = node
            return node
        function = FUNCTIONS.get(name)
        if function is not None and not function.args and not function.consts:
            # Argument-free functions read like fields: `close > day_open`.
            return Func(name, (), tuple(o.default for o in function.options))
        if name in FUNCTIONS or name in indicators.REGISTRY:
            spec = indicators.REGISTRY.get(name)
            if spec is not None and not spec.params or spec is not None and all(
                    p.default is not None for p in spec.params):
                return self.indicator(name, None, (), {}, None, n)
            raise self.error(f"'{name}' needs arguments", n, f"call it like {name}(...)")
        candidates = list(FIELDS) + list(self.defines) + list(FUNCTIONS) + list(indicators.REGISTRY)
        close = difflib.get_close_matches(name, candidates, n=1)
        hint = f"did you mean {close[0]!r}?" if close else \
            "use a bar field, a definition, an indicator or a function"
        raise self.error(f"unknown name '{_cut(name)}'", n, hint)

    def call(self, n: ast.Call, mapping, output) -> Node:
        if not isinstance(n.func, ast.Name):
            raise self.error("only named functions and indicators can be called", n)
        name = n.func.id
        if self._is_percent(n):
            if output is not None:
                raise self.error(f"'.{output[0]}' is only allowed on an indicator call",
                                 hint="like macd(12, 26, 9).signal",
                                 column=self._attribute_column(output[1]))
            number = _literal(n.args[0])
            number = None if number is None else _finite(number)
            if number is None:
                raise self.error("number out of range", n)
            return Num(number / 100.0)
        for arg in n.args:
            if isinstance(arg, ast.Starred):
                raise self.error("starred arguments are not allowed", arg)
        kwargs: dict[str, ast.keyword] = {}
        for kw in n.keywords:
            if kw.arg is None:
                raise self.error("'**' arguments are not allowed", kw)
            if kw.arg in kwargs:
                raise self.error(f"{name}() got '{kw.arg}' twice", kw)
            kwargs[kw.arg] = kw
        if name in FUNCTIONS and output is None:
            return self.function(name, n, kwargs, mapping)
        if name in indicators.REGISTRY:
            return self.indicator(name, n, n.args, kwargs, output, n, mapping)
        if name in FUNCTIONS:
            raise self.error(f"'{name}' has no outputs", column=self._attribute_column(output[1]))
        close = difflib.get_close_matches(name, list(FUNCTIONS) + list(indicators.REGISTRY), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see docs/rules.md for the functions"
        raise self.error(f"unknown function '{_cut(name)}'", n, hint)

    def _const(self, arg: ast.AST, what: str, minimum: float = 1) -> float:
        value = _literal(arg)
        if value is None:
            raise self.error(f"{what} must be a number written in the rule", arg)
        number = _finite(value)
        if number is None or number != int(number) or not minimum <= number <= _MAX_CONST:
            got = "a number out of range" if number is None else f"{value!r}"
            raise self.error(f"{what} must be an integer between {minimum:g} and "
                             f"{_MAX_CONST:,}, got {got}", arg)
        return float(int(number))

    def _number_const(self, arg: ast.AST, what: str) -> float:
        value = _literal(arg)
        value = None if value is None else _finite(value)
        if value is None:
            raise self.error(f"{what} must be a finite number written in the rule", arg)
        return value

    def function(self, name: str, n: ast.Call, kwargs: Mapping[str, ast.keyword],
                 mapping) -> Node:
        """A call of a rule function, bound as Python binds arguments: series by position, then
        the required constants and positional options by position or by name, the other
        options by name only."""
        spec = FUNCTIONS[name]
        usage = f"call it like {spec.signature()}"
        slots = [(c, None) for c in spec.consts] + [(o.name, o) for o in spec.options]
        names = [slot for slot, _ in slots]
        for key, kw in kwargs.items():
            if key not in names:
                if key in spec.arg_names:
                    raise self.error(f"{name}() takes '{key}' by position", kw, usage)
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"did you mean '{close[0]}='?" if close else usage
                raise self.error(f"{name}() has no option '{_cut(key)}'", kw, hint)
        by_position = len(spec.args) + len(spec.consts) + sum(o.positional for o in spec.options)
        least = len(spec.args) + sum(1 for c in spec.consts if c not in kwargs)
        if not least <= len(n.args) <= by_position:
            if by_position == 0:
                raise self.error(f"{name} takes no arguments", n,
                                 f"write it like a field: {name}")
            count = f"{least}" if least == by_position else f"{least} to {by_position}"
            raise self.error(f"{name}() takes {count} positional argument"
                             f"{'s' * (by_position != 1)}, got {len(n.args)}", n, usage)
        written: dict[str, ast.AST] = {}
        for (slot, _), arg in zip(slots, n.args[len(spec.args):]):
            written[slot] = arg
        for key, kw in kwargs.items():
            if key in written:
                raise self.error(f"{name}() got '{key}' twice", kw)
            written[key] = kw.value
        series = []
        for kind, arg in zip(spec.args, n.args):
            if kind == NUMBER:
                series.append(self.number(arg, mapping))
            elif kind == BOOL:
                series.append(self.condition(arg, mapping))
            else:
                series.append(self.node(arg, mapping))
        consts: list[float | None] = []
        for slot, option in slots:
            arg = written.get(slot)
            what = f"{name}() argument '{slot}'"
            if option is None:
                consts.append(self._const(arg, what, spec.const_minimum))
            elif arg is None:
                consts.append(option.default)
            elif option.integer:
                consts.append(self._const(arg, what, option.minimum))
            else:
                consts.append(self._number_const(arg, what))
        if spec.expand is not None:
            return spec.expand(tuple(series), tuple(consts))
        if spec.result == "same":
            return _Same(name, tuple(series), tuple(consts)) if series[0].kind == BOOL else \
                Func(name, tuple(series), tuple(consts))
        return Func(name, tuple(series), tuple(consts))

    def indicator(self, name: str, n: ast.Call | None, args, kwargs, output, where: ast.AST,
                  mapping=None) -> Node:
        spec = indicators.get(name)
        args = list(args)
        source = None
        if args and spec.source and _literal(args[0]) is None:
            source = self.number(args[0], mapping)
            if _is_constant(source):
                raise self.call_error(n, name, "a source must be a series, not a number", args[0],
                                      f"write {name}(close, ...), or only its parameters")
            args = args[1:]
        elif args and not spec.source and not isinstance(args[0], (ast.Constant, ast.UnaryOp)) \
                and not self._is_percent(args[0]):
            raise self.error(f"{name}() takes no source series: it reads "
                             f"{', '.join(spec.inputs)}", args[0])
        values = []
        for arg in args:
            value = _literal(arg)
            if self._is_percent(arg):
                raise self.error(f"{name}() parameters are plain numbers, not percentages", arg)
            if value is None or _finite(value) is None:
                raise self.error(f"{name}() parameters must be finite numbers written in the "
                                 "rule", arg)
            values.append(value)
        kw = {}
        for key, keyword_arg in kwargs.items():
            value = _literal(keyword_arg.value)
            if value is None or _finite(value) is None:
                raise self.error(f"{name}() parameter '{key}' must be a finite number",
                                 keyword_arg)
            kw[key] = value
        try:
            bound = indicators.bind_params(name, values, kw)
        except (ValueError, TypeError, OverflowError) as exc:
            raise self.call_error(n, name, str(exc), where) from None
        if bound.get("fast") is not None and bound.get("fast") == bound.get("slow"):
            # Equal periods make the two averages one: the difference is zero on every bar.
            raise self.call_error(n, name, f"fast and slow must differ, got {bound['fast']:g} "
                                  "for both", where, "the usual pair is fast=12, slow=26")
        if spec.cumulative and source is not None:
            raise self.call_error(n, name, "is cumulative and reads raw bars only", where)
        out_name = None
        if output is not None:
            attr, attr_node = output
            if attr not in spec.outputs:
                choices = ", ".join(spec.outputs) if spec.outputs else "none"
                close = difflib.get_close_matches(attr, spec.outputs, n=1)
                hint = f"did you mean '.{close[0]}'?" if close else f"outputs: {choices}"
                raise self.error(f"{name}() has no output '{_cut(attr)}'", hint=hint,
                                 column=self._attribute_column(attr_node))
            out_name = attr
        elif spec.outputs:
            out_name = spec.outputs[0]
        params = tuple((p.name, float(bound[p.name])) for p in spec.params if p.name in bound)
        return Ind(name, source, params, out_name)


@dataclass(frozen=True)
class _Same(Func):
    """A function whose result kind is its first argument's (prev of a condition is a condition)."""

    @property
    def kind(self) -> str:  # type: ignore[override]
        return BOOL


def _literal(arg: ast.AST) -> int | float | None:
    """The number written at `arg` (`3`, `-2.5`, `+1`), or None when it is anything else."""
    sign = 1
    if isinstance(arg, ast.UnaryOp) and isinstance(arg.op, (ast.USub, ast.UAdd)):
        sign = -1 if isinstance(arg.op, ast.USub) else 1
        arg = arg.operand
    if not isinstance(arg, ast.Constant):
        return None
    value = arg.value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return -value if sign < 0 else value


def _is_constant(node: Node) -> bool:
    """Whether `node` is the same number on every bar: it reads no field, indicator or session
    function (`2 * 3`, `1.5%`)."""
    return not any(isinstance(n, (Field, Ind)) or isinstance(n, Func) and not n.args
                   for n in walk(node))


def _finite(value: int | float) -> float | None:
    """`value` as a float, or None when it is out of the float range (`1e400`, `9` * 400)."""
    try:
        out = float(value)
    except OverflowError:
        return None
    return out if np.isfinite(out) else None


def _cut(name: str, width: int = 40) -> str:
    """A name from the rule as an error quotes it: cut to `width` characters."""
    return name if len(name) <= width else name[:width - 3] + "..."


def _caret(text: str, col: int, width: int = 100) -> str:
    """The rule on one line (whitespace shown as spaces), a caret under `col` below it; a long
    rule is cut to `width` characters around the caret."""
    flat = _WHITESPACE.sub(" ", text)
    first = 0 if len(flat) <= width else max(0, min(col - width // 2, len(flat) - width))
    shown = flat[first:first + width]
    lead = "..." if first else ""
    tail = "..." if first + width < len(flat) else ""
    return f"    {lead}{shown}{tail}\n    {' ' * (len(lead) + col - first)}^"


_SHOWN = 200  # characters of an expression that messages and listings show


def _src(node: Node, width: int = _SHOWN) -> str:
    """`node` as text without its outer parentheses, cut to `width` characters.

    Rendered lazily from a walk that visits each shared node's size once: a chain of
    definitions each using the previous one twice is a graph of n nodes whose text has 2**n
    terms, so `str(node)` would never finish.
    """
    pieces, length = [], 0
    for piece in _pieces(node, {}):
        pieces.append(piece)
        length += len(piece)
        if length > width + 2:
            break
    text = "".join(pieces)
    if length <= width + 2:
        return text[1:-1] if text.startswith("(") and text.endswith(")") else text
    text = text[1:] if text.startswith("(") else text
    return text[:width - 3] + "..."


def _size(node: Node, sizes: dict[int, int]) -> int:
    """How many nodes `node` has written out as a tree (shared nodes counted per use)."""
    size = sizes.get(id(node))
    if size is None:
        size = sizes[id(node)] = min(1 + sum(_size(c, sizes) for c in node.children()), 10**6)
    return size


def _pieces(node: Node, sizes: dict[int, int]):
    """The text of `node` (as `str(node)`), piece by piece, big children rendered lazily."""
    if _size(node, sizes) <= 2000:   # quick to write out; bigger is longer than any cut
        yield str(node)
    elif isinstance(node, (Arith, Cmp)):
        yield "(" if isinstance(node, Arith) else ""
        yield from _pieces(node.left, sizes)
        yield f" {node.op} "
        yield from _pieces(node.right, sizes)
        yield ")" if isinstance(node, Arith) else ""
    elif isinstance(node, (Neg, Not)):
        yield "-" if isinstance(node, Neg) else "not "
        yield from _pieces(node.operand, sizes)
    elif isinstance(node, Logic):
        yield "("
        for i, item in enumerate(node.items):
            yield f" {node.op} " if i else ""
            yield from _pieces(item, sizes)
        yield ")"
    else:  # an indicator or function call over big arguments: name(first argument, ...
        yield f"{node.name}("  # type: ignore[attr-defined]
        yield from _pieces(node.children()[0], sizes)
        yield ", ...)"


def _rewrite_percentages(text: str) -> tuple[str, list[tuple[int, int]]]:
    """`1.5%` -> `__pct__(1.5)`; returns the new text and (position, added chars) for columns."""
    out, mapping, last, added = [], [], 0, 0
    for m in _PERCENT.finditer(text):
        number = m.group(0).rstrip("%").rstrip()
        replacement = f"__pct__({number})"
        out.append(text[last:m.start()])
        out.append(replacement)
        mapping.append((m.start() + added, len(replacement) - (m.end() - m.start())))
        added += len(replacement) - (m.end() - m.start())
        last = m.end()
    out.append(text[last:])
    return "".join(out), mapping


_MODULO = "'%' is not a remainder operator"
_MODULO_HINT = "'%' is only a percent sign after a number: 2% is 0.02; rules have no modulo"
_OPERAND_START = re.compile(r"\s*(?:[\d(]|\.\d|(?P<word>[^\W\d]\w*))")


def _modulo_column(text: str) -> int | None:
    """Where a `%` after a number is followed by an operand (`5 % 2`, `5%(x)`), so it was meant
    as a remainder; None when every such `%` is a percent sign (`2% and ...`, `2%)`)."""
    for m in _PERCENT.finditer(text):
        after = _OPERAND_START.match(text, m.end())
        if after is not None and not (after.group("word") and keyword.iskeyword(after.group("word"))):
            return m.end() - 1
    return None


def _map_column(col: int, mapping: list[tuple[int, int]]) -> int:
    shift_by = sum(delta for pos, delta in mapping if pos < col)
    return max(0, col - shift_by)


def parse(text: str, *, source: str = "<rule>", field: str = "when",
          defines: Mapping[str, str] | None = None, alert: str | None = None) -> Node:
    """Parse a rule into an expression graph, or raise `ConfigError` pointing into the text.

    Only the whitelist is accepted; nothing in `text` is ever executed. `defines` maps
    definition names to their rules (each is parsed once, however often it is used, and none
    may be named like a field, function, indicator or literal); `alert` names the alert in
    errors about its indicator calls. For example::

        >>> str(parse("rsi(14) < 30 and close > sma(50)"))
        '(rsi(14) < 30 and close > sma(50))'
    """
    for name in defines or {}:
        clash = definition_name_error(source, name)
        if clash is not None:
            raise clash
    return _Parser(source, field, text, defines or {}, (), alert=alert).parse()


def parse_condition(text: str, *, source: str = "<rule>", field: str = "when",
                    defines: Mapping[str, str] | None = None, alert: str | None = None) -> Node:
    """`parse`, requiring the rule to be a condition (a comparison, cross, and/or ...)."""
    node = parse(text, source=source, field=field, defines=defines, alert=alert)
    if node.kind != BOOL:
        raise _Parser(source, field, text, defines or {}, ()).error(
            f"the rule '{_src(node)}' is a number, not a condition",
            hint="compare it, e.g. `rsi(14) < 30`", column=0)
    return node
