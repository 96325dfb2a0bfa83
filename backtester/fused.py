"""The compiled rule evaluator: each plan's expression graph as one linear program, run by one
generic numba kernel per cluster.

`expr` parses rules into a graph of frozen nodes and can evaluate it node by node with numpy
(`expr.evaluate`, the reference implementation and the test oracle). That costs a Python call,
a few numpy calls and a temporary array per node, with the GIL held between them: a GIL profile
of threaded runs found ~21% of cluster time there. This module compiles the same graph once per
plan (in the parent, with the plan) into a *program*: a table of instructions over numbered
slots, and runs the whole program (arithmetic, comparisons, three-valued and/or/not,
`crosses_*`, `prev`, the window, history and session functions), every alert's time filters and
the candidate extraction in one call of `run_program_nb`, which holds no GIL.

Only the leaves are left to Python: bar fields (copied into their slots), indicator values
(TA-Lib and our numba kernels, called as before through `expr`, which also evaluates an
indicator's source expression such as `sma(close - open, 5)` node by node) and any function
without an opcode (none today). Equal sub-expressions are one slot, as they are one node.

Why a generic kernel executing a program, rather than a numba function generated per plan: the
kernel is compiled once and cached on disk (`cache=True`), so a new rule costs nothing to
compile (a generated function costs ~1-3 s of LLVM per new plan, per process unless cached by
canonical form), and a program is plain integer and float arrays that pickle with the plan to
process workers. Dispatch is per instruction, not per bar: each instruction runs a tight loop
over the cluster's bars into its slot (a row of one `(slots, bars)` scratch matrix, allocated
once per cluster; slots are reused once their value is dead, so a 16-alert plan needs ~30
rows). Instructions read whole rows, so `prev`, crosses and windows see earlier bars directly.

Semantics are the interpreter's, bit for bit on conditions and candidate rows (see
tests/test_fused.py): values are float64, NaN is missing, conditions are 1.0 / 0.0 / NaN with
SQL's three-valued logic, a non-finite arithmetic result is missing.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from . import expr, indicators
from .expr import (
    extreme_since_1d_nb,
    previous_session_last_1d_nb,
    session_extreme_so_far_1d_nb,
    session_first_1d_nb,
    value_when_1d_nb,
)

MINUTE_NS = 60 * 10**9

# Opcodes. Each instruction is (op, out, a, b, p, q): `out`, `a`, `b` are slots, `p`, `q`
# integer parameters (a window, a constant's index, ...).
CONST, ADD, SUB, MUL, DIV, POW, NEG = 0, 1, 2, 3, 4, 5, 6
LT, LE, GT, GE, EQ, NE = 7, 8, 9, 10, 11, 12
AND, OR, NOT = 13, 14, 15
ABS, MIN, MAX, IS_MISSING, FILL_MISSING = 16, 17, 18, 19, 20
CROSS_ABOVE, PREV, HELD, WITHIN, COUNT = 21, 22, 23, 24, 25
BARS_SINCE, VALUE_WHEN, HIGHEST_SINCE, LOWEST_SINCE = 26, 27, 28, 29
DAY_OPEN, PREV_DAY_CLOSE, DAY_HIGH, DAY_LOW, SINCE_OPEN, TO_CLOSE = 30, 31, 32, 33, 34, 35

_ARITH = {"+": ADD, "-": SUB, "*": MUL, "/": DIV, "**": POW}
_COMPARE = {"<": LT, "<=": LE, ">": GT, ">=": GE, "==": EQ, "!=": NE}
_WINDOW = {"held": HELD, "within": WITHIN, "count": COUNT}
_ELEMENTWISE = {"abs": ABS, "min": MIN, "max": MAX, "is_missing": IS_MISSING,
                "fill_missing": FILL_MISSING}
# Session functions: opcode and the bar field they read (None: timestamps only).
_SESSION = {"day_open": (DAY_OPEN, "open"), "prev_day_close": (PREV_DAY_CLOSE, "close"),
            "day_high_so_far": (DAY_HIGH, "high"), "day_low_so_far": (DAY_LOW, "low"),
            "minutes_since_open": (SINCE_OPEN, None), "minutes_to_close": (TO_CLOSE, None)}
FUSED_FUNCTIONS = frozenset(["crosses_above", "crosses_below", "prev", "bars_since", "value_when",
                             "highest_since", "lowest_since", *_WINDOW, *_ELEMENTWISE, *_SESSION])
"""The rule functions with an opcode; any other is computed by `expr` as a leaf."""


@dataclass(frozen=True)
class IndicatorLeaf:
    """An indicator on bar fields (no source expression): its kernel runs once per cluster and
    each `(slot, output)` gets one of its outputs (output None: the only one)."""

    name: str
    params: tuple[tuple[str, int | float], ...]    # bound, defaults filled in
    base: expr.Ind                                 # the node cumulative anchors are keyed by
    slots: tuple[tuple[int, str | None], ...]
    source: str | None = None                      # a bar field in place of inputs[0]


@dataclass(frozen=True, eq=False)
class Program:
    """A compiled expression graph: instructions over slots, and where each wanted node lives.

    `code` is an (instructions, 6) int64 table, `constants` the float64 constants it names,
    `leaves` the (slot, node) pairs Python fills before the kernel runs (bar fields, indicators,
    anything without an opcode), `outputs` the slot of each wanted node (never reused).
    """

    code: np.ndarray
    constants: np.ndarray
    n_slots: int
    leaves: tuple[tuple[int, expr.Node], ...]
    outputs: tuple[tuple[expr.Node, int], ...]
    indicators: tuple[IndicatorLeaf, ...] = ()    # the leaves computed by calling a kernel
    others: tuple[tuple[int, expr.Node], ...] = ()  # the leaves computed through `expr`

    @functools.cached_property
    def slots(self) -> dict[expr.Node, int]:
        """The slot of each wanted node (built once per program, not per cluster)."""
        return dict(self.outputs)

    def slot(self, node: expr.Node) -> int:
        return self.slots[node]


class _Builder:
    """Translates nodes into instructions over virtual registers, then packs the registers into
    as few slots as their lifetimes allow."""

    def __init__(self) -> None:
        self.instructions: list[list[int]] = []   # op, out, a, b, p, q (registers)
        self.constants: list[float] = []
        self.leaves: list[tuple[int, expr.Node]] = []
        self.register: dict[expr.Node, int] = {}
        self.count = 0

    def new(self) -> int:
        self.count += 1
        return self.count - 1

    def constant(self, value: float) -> int:
        for i, c in enumerate(self.constants):
            if c == value and math.copysign(1.0, c) == math.copysign(1.0, value):
                return i
        self.constants.append(value)
        return len(self.constants) - 1

    def emit(self, op: int, a: int = -1, b: int = -1, p: int = 0, q: int = 0) -> int:
        out = self.new()
        self.instructions.append([op, out, a, b, p, q])
        return out

    def leaf(self, node: expr.Node) -> int:
        out = self.new()
        self.leaves.append((out, node))
        return out

    def node(self, node: expr.Node) -> int:
        hit = self.register.get(node)
        if hit is not None:
            return hit
        out = self._translate(node)
        self.register[node] = out
        return out

    def _translate(self, node: expr.Node) -> int:
        if isinstance(node, expr.Num):
            return self.emit(CONST, p=self.constant(node.value))
        if isinstance(node, (expr.Field, expr.Ind)):
            return self.leaf(node)
        if isinstance(node, expr.Arith):
            return self.emit(_ARITH[node.op], self.node(node.left), self.node(node.right))
        if isinstance(node, expr.Neg):
            return self.emit(NEG, self.node(node.operand))
        if isinstance(node, expr.Cmp):
            return self.emit(_COMPARE[node.op], self.node(node.left), self.node(node.right))
        if isinstance(node, expr.Not):
            return self.emit(NOT, self.node(node.operand))
        if isinstance(node, expr.Logic):
            op = AND if node.op == "and" else OR
            # Folded as it goes, so each item's rows are dead before the next is computed.
            out = self.node(node.items[0])
            for item in node.items[1:]:
                out = self.emit(op, out, self.node(item))
            return out
        if isinstance(node, expr.Func) and node.name in FUSED_FUNCTIONS:
            return self._function(node)
        return self.leaf(node)

    def _function(self, node: expr.Func) -> int:
        name, consts = node.name, node.consts
        args = [self.node(a) for a in node.args]
        if name == "crosses_above":
            return self.emit(CROSS_ABOVE, args[0], args[1])
        if name == "crosses_below":
            return self.emit(CROSS_ABOVE, args[1], args[0])
        if name == "prev":
            return self.emit(PREV, args[0], p=int(consts[0]))
        if name in _WINDOW:
            return self.emit(_WINDOW[name], args[0], p=int(consts[0]))
        if name in _ELEMENTWISE:
            return self.emit(_ELEMENTWISE[name], args[0], args[1] if len(args) > 1 else -1)
        if name == "bars_since":
            default, max_bars = consts
            index = -1 if default is None else self.constant(float(default))
            return self.emit(BARS_SINCE, args[0], p=int(max_bars), q=index)
        if name == "value_when":
            return self.emit(VALUE_WHEN, args[0], args[1], p=int(consts[0]), q=int(consts[1]))
        if name in ("highest_since", "lowest_since"):
            op = HIGHEST_SINCE if name == "highest_since" else LOWEST_SINCE
            return self.emit(op, args[0], args[1], p=int(consts[0]))
        op, field = _SESSION[name]
        return self.emit(op, self.node(expr.Field(field)) if field else -1)

    def build(self, wanted: Sequence[expr.Node]) -> Program:
        outputs = [(node, self.node(node)) for node in wanted]
        kept = {register for _, register in outputs}
        # Last instruction reading each register; leaves are live from the start.
        last_use: dict[int, int] = {}
        for k, (_, _, a, b, _, _) in enumerate(self.instructions):
            for r in (a, b):
                if r >= 0:
                    last_use[r] = k
        slot_of: dict[int, int] = {}
        free: list[int] = []
        n_slots = 0

        def allocate(register: int) -> None:
            nonlocal n_slots
            if free:
                slot_of[register] = free.pop()
            else:
                slot_of[register] = n_slots
                n_slots += 1

        for register, _ in self.leaves:
            allocate(register)
        code = np.zeros((len(self.instructions), 6), dtype=np.int64)
        for k, (op, out, a, b, p, q) in enumerate(self.instructions):
            # The output gets its slot before the operands are released, so no instruction
            # writes a row it reads (prev, crosses and windows read earlier bars).
            allocate(out)
            code[k] = (op, slot_of[out], slot_of.get(a, -1), slot_of.get(b, -1), p, q)
            for r in {a, b}:
                if r >= 0 and last_use.get(r) == k and r not in kept:
                    free.append(slot_of[r])
            if out not in last_use and out not in kept:
                free.append(slot_of[out])
        leaves = tuple((slot_of[r], node) for r, node in self.leaves)
        groups: dict[expr.Ind, list[tuple[int, str | None]]] = {}
        others = []
        for slot, node in leaves:
            if isinstance(node, expr.Ind) and (node.source is None
                                               or isinstance(node.source, expr.Field)):
                base = expr.Ind(node.name, node.source, node.params, None)
                groups.setdefault(base, []).append((slot, node.output))
            else:
                others.append((slot, node))
        kernels = []
        for base, slots in groups.items():
            spec = indicators.get(base.name)
            params = {k: (int(v) if expr._param_kind(spec, k) is int else v)
                      for k, v in base.params}
            bound = indicators.bind_params(base.name, (), params)
            source = base.source.name if isinstance(base.source, expr.Field) else None
            kernels.append(IndicatorLeaf(base.name, tuple(bound.items()), base, tuple(slots),
                                         source))
        return Program(code=code, constants=np.array(self.constants, dtype=np.float64),
                       n_slots=max(n_slots, 1), leaves=leaves,
                       outputs=tuple((node, slot_of[r]) for node, r in outputs),
                       indicators=tuple(kernels), others=tuple(others))


def compile_nodes(nodes: Sequence[expr.Node]) -> Program:
    """The program computing `nodes` (each keeps its own slot, readable after the run)."""
    return _Builder().build(list(dict.fromkeys(nodes)))


# --------------------------------------------------------------------------- alert filters

@dataclass(frozen=True, eq=False)
class AlertFilters:
    """Every alert's rule slot and time filters, as arrays for the kernel.

    `between` holds (start, end) minutes of day, alert j's in rows
    `between_offsets[j]:between_offsets[j + 1]`; `skip_first_ns` / `skip_last_ns` are 0 when
    unset; `session_filtered[j]` says whether alert j reads `days` / `exclude_dates` (resolved per
    session table by `allowed_sessions`).
    """

    rule_slots: np.ndarray
    between: np.ndarray
    between_offsets: np.ndarray
    skip_first_ns: np.ndarray
    skip_last_ns: np.ndarray
    session_filtered: np.ndarray
    days: tuple[tuple[int, ...], ...]
    exclude_dates: tuple[tuple[str, ...], ...]

    @property
    def uses_minute_of_day(self) -> bool:
        return len(self.between) > 0


def alert_filters(program: Program, alerts: Sequence) -> AlertFilters:
    """The `AlertFilters` of `alerts` (`plan.AlertPlan`s) whose rules are outputs of `program`."""
    between, offsets = [], [0]
    for alert in alerts:
        between += [(start, end) for start, end in alert.config.between or ()]
        offsets.append(len(between))
    cfgs = [a.config for a in alerts]
    return AlertFilters(
        rule_slots=np.array([program.slot(a.rule) for a in alerts], dtype=np.int64),
        between=np.array(between, dtype=np.int64).reshape(-1, 2),
        between_offsets=np.array(offsets, dtype=np.int64),
        skip_first_ns=np.array([(c.skip_first or 0) * MINUTE_NS for c in cfgs], dtype=np.int64),
        skip_last_ns=np.array([(c.skip_last or 0) * MINUTE_NS for c in cfgs], dtype=np.int64),
        session_filtered=np.array([bool(c.days or c.exclude_dates) for c in cfgs], dtype=np.bool_),
        days=tuple(tuple(c.days or ()) for c in cfgs),
        exclude_dates=tuple(tuple(str(d) for d in c.exclude_dates or ()) for c in cfgs))


_TABLES: dict[tuple[int, int], tuple[object, object, tuple[np.ndarray, ...]]] = {}
_TABLES_LOCK = threading.Lock()


def session_arrays(filters: AlertFilters, sessions) -> tuple[np.ndarray, ...]:
    """Per session-table inputs of the kernel, computed once per (filters, table) and kept:
    (allowed sessions per alert, open ns, close ns, UTC offset at the open, whether any session
    spans a DST change)."""
    key = (id(filters), id(sessions))
    hit = _TABLES.get(key)
    if hit is not None and hit[0] is filters and hit[1] is sessions:
        return hit[2]
    n = len(sessions.open_ns)
    allowed = np.ones((len(filters.days), n), dtype=np.bool_)
    if filters.session_filtered.any():
        dates = sessions.dates.astype("datetime64[D]")
        weekday = (dates.astype(np.int64) + 3) % 7
        for j, (days, excluded) in enumerate(zip(filters.days, filters.exclude_dates)):
            if days:
                allowed[j] &= np.isin(weekday, days)
            if excluded:
                allowed[j] &= ~np.isin(dates, np.array(excluded, dtype="datetime64[D]"))
    at_open, at_close = sessions.utc_offsets_ns
    arrays = tuple(_readonly(a) for a in (
        allowed, np.ascontiguousarray(sessions.open_ns, dtype=np.int64),
        np.ascontiguousarray(sessions.close_ns, dtype=np.int64),
        np.ascontiguousarray(at_open, dtype=np.int64))) + (bool((at_open != at_close).any()),)
    with _TABLES_LOCK:
        if len(_TABLES) >= 16:
            _TABLES.pop(next(iter(_TABLES)))
        _TABLES[key] = (filters, sessions, arrays)
    return arrays


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view: the kernel sees one array type whether bars are mapped or in memory."""
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


_NO_FILTERS = None


def _no_filters() -> AlertFilters:
    global _NO_FILTERS
    if _NO_FILTERS is None:
        _NO_FILTERS = AlertFilters(np.zeros(0, np.int64), np.zeros((0, 2), np.int64),
                                   np.zeros(1, np.int64), np.zeros(0, np.int64),
                                   np.zeros(0, np.int64), np.zeros(0, np.bool_), (), ())
    return _NO_FILTERS


# --------------------------------------------------------------------------- running

def fill_leaves(program: Program, ctx: expr.Context, values: np.ndarray) -> None:
    """Compute every leaf of `program` on `ctx` into its row of `values`.

    An indicator on bar fields calls its kernel directly, once for all its outputs: what
    `indicators.compute` does for inputs known to be finite (bar fields are: `bars` rejects
    non-finite OHLCV), without re-binding and re-checking its parameters on every cluster; one
    with a field as its source calls `compute` once for all its outputs. Anything else (a field
    like hl2, an indicator of a rule's own series) goes through `expr`.
    """
    if ctx.n == 0:
        cache: dict = {}
        for slot, node in program.leaves:
            values[slot] = expr._eval(node, ctx, cache)
        return
    inputs: dict[str, np.ndarray] = {}   # each input array converted once per cluster

    def read(name: str) -> np.ndarray:
        hit = inputs.get(name)
        if hit is None:
            hit = inputs[name] = np.ascontiguousarray(
                ctx.array(name), dtype=np.int64 if name in indicators.INTEGER_FIELDS
                else np.float64)
        return hit

    for leaf in program.indicators:
        spec = indicators.REGISTRY[leaf.name]
        arrays = [read(f) for f in spec.inputs]
        if leaf.source is not None:
            # A field as the source (`highest(high, 30)`): `expr` does not vouch for a source
            # being finite, so neither do we; `compute` applies the NaN policy.
            arrays[0] = read(leaf.source)
            known = [False] + [True] * (len(arrays) - 1)
            wanted = [output for _, output in leaf.slots] if spec.outputs else None
            result = indicators.compute(leaf.name, *arrays, known_finite=known,
                                        outputs=wanted, **dict(leaf.params))
            for slot, output in leaf.slots:
                values[slot] = result if output is None else result[output]
            continue
        result = spec.kernel(*arrays, **dict(leaf.params))
        if not spec.outputs:
            if spec.cumulative and leaf.base in ctx.anchors:
                result = result - result[0] + ctx.anchors[leaf.base]
            for slot, _ in leaf.slots:
                values[slot] = result
            continue
        named = dict(zip(spec.kernel_outputs, result))
        for slot, output in leaf.slots:
            if output not in named:
                derive = dict(spec.derived)[output]
                named[output] = derive(*arrays, *result)
            values[slot] = named[output]
    cache = {}
    for slot, node in program.others:
        if isinstance(node, expr.Field):   # a bar field: copied as is, no trip through `expr`
            values[slot] = read(node.name)
        else:
            values[slot] = expr._eval(node, ctx, cache)


def run(program: Program, ctx: expr.Context, *, session_open: np.ndarray | None = None,
        session_close: np.ndarray | None = None, values: np.ndarray | None = None,
        filters: AlertFilters | None = None, table: tuple | None = None,
        lo: int = 0, hi: int = 0, minute_of_day: np.ndarray | None = None
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run `program` on `ctx`; returns (values, candidate rows, offsets per alert).

    `values` is the (slots, bars) matrix (read a node with `values[program.slot(node)]`).
    Candidates of alert j are `rows[offsets[j]:offsets[j + 1]]`: bars in `[lo, hi)` where its
    rule is exactly true and its time filters (`filters`, `table` from `session_arrays`) allow.
    Without a session table, `session_open` / `session_close` (per bar) serve the session
    functions.
    """
    n = ctx.n
    if values is None:
        values = np.empty((program.n_slots, n), dtype=np.float64)
    fill_leaves(program, ctx, values)
    session = np.ascontiguousarray(ctx.array("session"), dtype=np.int64)
    timestamp = _readonly(np.ascontiguousarray(ctx.array("timestamp"), dtype=np.int64))
    if filters is None:
        filters = _no_filters()
    if table is None:
        table = _bar_table(session, session_open, session_close, len(filters.days))
    allowed, open_ns, close_ns, utc_offset, spans_dst = table
    if minute_of_day is None:
        minute_of_day = np.zeros(0, dtype=np.int64)
    rows, offsets = run_program_nb(
        program.code, program.constants, values, _readonly(session), timestamp, open_ns,
        close_ns, utc_offset, _readonly(np.ascontiguousarray(minute_of_day, dtype=np.int64)),
        filters.rule_slots, filters.between, filters.between_offsets, filters.skip_first_ns,
        filters.skip_last_ns, filters.session_filtered, allowed, lo, hi)
    return values, rows, offsets


def _bar_table(session, session_open, session_close, n_alerts):
    """Session-table arrays from per-bar opens and closes (for `evaluate` on a bare context)."""
    size = int(session.max()) + 1 if len(session) else 1
    open_ns, close_ns = np.zeros(size, np.int64), np.zeros(size, np.int64)
    if session_open is not None:
        open_ns[session] = session_open
    if session_close is not None:
        close_ns[session] = session_close
    return (_readonly(np.ones((n_alerts, size), np.bool_)), _readonly(open_ns),
            _readonly(close_ns), _readonly(np.zeros(size, np.int64)), False)


def evaluate(nodes: Sequence[expr.Node], ctx: expr.Context) -> dict[expr.Node, np.ndarray]:
    """Values of `nodes` on `ctx`, computed by the compiled program: the drop-in equivalent of
    `expr.evaluate` for the nodes asked for (tests compare the two)."""
    program = compile_nodes(nodes)
    has = ctx._arrays
    values, _, _ = run(program, ctx,
                       session_open=has["session_open"] if "session_open" in has else None,
                       session_close=has["session_close"] if "session_close" in has else None)
    return {node: values[slot] for node, slot in program.outputs}


def values_of(program: Program, values: np.ndarray) -> Mapping[expr.Node, np.ndarray]:
    return {node: values[slot] for node, slot in program.outputs}


# --------------------------------------------------------------------------- the kernel

@njit(cache=True, nogil=True, error_model="numpy")
def run_program_nb(code, constants, values, session, timestamp, open_ns, close_ns, utc_offset,
                   minute_of_day, rule_slots, between, between_offsets, skip_first_ns,
                   skip_last_ns, session_filtered, allowed_sessions, lo, hi):
    """Execute `code` over `values` (rows: slots, columns: bars), then collect each alert's
    candidate rows in `[lo, hi)`. `error_model="numpy"`: a division by zero gives inf/NaN (made
    missing, as numpy does in `expr`), never an exception."""
    n = values.shape[1]
    nan = np.nan
    for k in range(code.shape[0]):
        op = code[k, 0]
        out = values[code[k, 1]]
        ia = code[k, 2]
        ib = code[k, 3]
        p = code[k, 4]
        q = code[k, 5]
        a = values[ia if ia >= 0 else code[k, 1]]
        b = values[ib if ib >= 0 else code[k, 1]]
        if op == CONST:
            c = constants[p]
            for i in range(n):
                out[i] = c
        elif op <= POW:
            for i in range(n):
                x = a[i]
                y = b[i]
                if op == ADD:
                    v = x + y
                elif op == SUB:
                    v = x - y
                elif op == MUL:
                    v = x * y
                elif op == DIV:
                    v = x / y
                else:
                    v = x ** y
                out[i] = v if math.isfinite(v) else nan
        elif op == NEG:
            for i in range(n):
                out[i] = -a[i]
        elif op <= NE:
            for i in range(n):
                x = a[i]
                y = b[i]
                if x != x or y != y:
                    out[i] = nan
                elif op == LT:
                    out[i] = 1.0 if x < y else 0.0
                elif op == LE:
                    out[i] = 1.0 if x <= y else 0.0
                elif op == GT:
                    out[i] = 1.0 if x > y else 0.0
                elif op == GE:
                    out[i] = 1.0 if x >= y else 0.0
                elif op == EQ:
                    out[i] = 1.0 if x == y else 0.0
                else:
                    out[i] = 1.0 if x != y else 0.0
        elif op == AND:
            for i in range(n):
                x = a[i]
                y = b[i]
                if x == 0.0 or y == 0.0:
                    out[i] = 0.0
                elif x != x or y != y:
                    out[i] = nan
                else:
                    out[i] = 1.0
        elif op == OR:
            for i in range(n):
                x = a[i]
                y = b[i]
                if x == 1.0 or y == 1.0:
                    out[i] = 1.0
                elif x != x or y != y:
                    out[i] = nan
                else:
                    out[i] = 0.0
        elif op == NOT:
            for i in range(n):
                out[i] = 1.0 - a[i]
        elif op == ABS:
            for i in range(n):
                out[i] = abs(a[i])
        elif op == MIN or op == MAX:
            for i in range(n):
                x = a[i]
                y = b[i]
                if x != x or y != y:
                    out[i] = nan
                elif op == MIN:
                    out[i] = x if x <= y else y
                else:
                    out[i] = x if x >= y else y
        elif op == IS_MISSING:
            for i in range(n):
                out[i] = 1.0 if a[i] != a[i] else 0.0
        elif op == FILL_MISSING:
            for i in range(n):
                out[i] = b[i] if a[i] != a[i] else a[i]
        elif op == CROSS_ABOVE:
            if n > 0:
                out[0] = nan
            for i in range(1, n):
                x, y, x1, y1 = a[i], b[i], a[i - 1], b[i - 1]
                if x != x or y != y or x1 != x1 or y1 != y1:
                    out[i] = nan
                else:
                    out[i] = 1.0 if x > y and x1 <= y1 else 0.0
        elif op == PREV:
            for i in range(min(p, n)):
                out[i] = nan
            for i in range(p, n):
                out[i] = a[i - p]
        elif op == HELD or op == WITHIN or op == COUNT:
            true = 0
            false = 0
            missing = 0
            for i in range(n):
                v = a[i]
                true += v == 1.0
                false += v == 0.0
                missing += v != v
                if i >= p:
                    old = a[i - p]
                    true -= old == 1.0
                    false -= old == 0.0
                    missing -= old != old
                if i < p - 1:
                    out[i] = nan
                elif op == COUNT:
                    out[i] = true
                elif op == HELD:
                    out[i] = 0.0 if false > 0 else (nan if missing > 0 else 1.0)
                else:
                    out[i] = 1.0 if true > 0 else (nan if missing > 0 else 0.0)
        elif op == BARS_SINCE:
            last = -1
            for i in range(n):
                if a[i] == 1.0:
                    last = i
                if last >= 0 and i - last <= p:
                    out[i] = i - last
                else:
                    out[i] = constants[q] if q >= 0 else nan
        elif op == VALUE_WHEN:
            out[:] = value_when_1d_nb(a, b, p, q)
        elif op == HIGHEST_SINCE or op == LOWEST_SINCE:
            out[:] = extreme_since_1d_nb(a, b, p, op == HIGHEST_SINCE)
        elif op == DAY_OPEN:
            out[:] = session_first_1d_nb(a, session)
        elif op == PREV_DAY_CLOSE:
            out[:] = previous_session_last_1d_nb(a, session)
        elif op == DAY_HIGH or op == DAY_LOW:
            out[:] = session_extreme_so_far_1d_nb(a, session, op == DAY_HIGH)
        elif op == SINCE_OPEN:
            for i in range(n):
                out[i] = (timestamp[i] - open_ns[session[i]]) / MINUTE_NS
        elif op == TO_CLOSE:
            for i in range(n):
                out[i] = (close_ns[session[i]] - timestamp[i]) / MINUTE_NS

    # Candidates: two passes (count, then fill) so the result is one exact-size array.
    n_alerts = len(rule_slots)
    offsets = np.zeros(n_alerts + 1, dtype=np.int64)
    keep = np.zeros(max(hi - lo, 0), dtype=np.bool_)
    rows = np.empty(0, dtype=np.int64)
    total = 0
    for j in range(n_alerts):
        rule = values[rule_slots[j]]
        first_range, last_range = between_offsets[j], between_offsets[j + 1]
        count = 0
        for i in range(lo, hi):
            ok = rule[i] == 1.0
            if ok and last_range > first_range:
                if len(minute_of_day) > 0:
                    minute = minute_of_day[i]
                else:
                    local = timestamp[i] + utc_offset[session[i]]
                    minute = (local // MINUTE_NS) % 1440
                inside = False
                for r in range(first_range, last_range):
                    if between[r, 0] <= minute < between[r, 1]:
                        inside = True
                ok = inside
            if ok and session_filtered[j]:
                ok = allowed_sessions[j, session[i]]
            if ok and skip_first_ns[j] > 0:
                ok = timestamp[i] >= open_ns[session[i]] + skip_first_ns[j]
            if ok and skip_last_ns[j] > 0:
                ok = timestamp[i] < close_ns[session[i]] - skip_last_ns[j]
            keep[i - lo] = ok
            if ok:
                count += 1
        total += count
        offsets[j + 1] = total
        grown = np.empty(total, dtype=np.int64)
        grown[:total - count] = rows
        at = total - count
        for i in range(lo, hi):
            if keep[i - lo]:
                grown[at] = i
                at += 1
        rows = grown
    return rows, offsets
