"""Config -> `Plan`: the compiled rules of every alert, their shared graph and the halos it needs.

The plan is built once in the parent process, before any data is read for computation, and
shipped unchanged to every cluster: clusters only execute it. Warm-up is sized here, once, from
the declared warm-ups of the graph (nested calls add up), never inferred afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import expr, fused, indicators
from .config import AlertConfig, Config
from .errors import ConfigError
from .trades import lookahead

SESSION_BAR_NS = 20 * 3600 * 10**9
"""Bars this far apart or more (daily, weekly) are one session each (`bars.load_bars`)."""


@dataclass(frozen=True)
class AlertPlan:
    """One alert, compiled: its rule, optional rearm/exit rules and the columns it reports."""

    index: int
    name: str
    config: AlertConfig
    rule: expr.Node
    rearm: expr.Node | None
    exit_rule: expr.Node | None
    atr: tuple[tuple[int, expr.Node], ...]        # ATR period -> node, for ATR-sized levels
    columns: tuple[tuple[str, expr.Node], ...]    # indicator values written with each alert


@dataclass(frozen=True)
class Plan:
    """Everything a cluster needs to compute its events, and the halo sizes the scheduler uses."""

    alerts: tuple[AlertPlan, ...]
    roots: tuple[expr.Node, ...]          # every node a cluster evaluates (shared nodes once)
    warmup_bars: int
    warmup_sessions: int
    lookahead_bars: int
    lookahead_session: bool
    cumulative: tuple[expr.Ind, ...]      # nodes anchored at the first bar of the data
    timezone: str
    releases_gil: bool
    custom_indicators: bytes = b""        # user-registered indicators it uses (`indicators.ship`)
    # The roots and every alert's reported columns as one compiled program, with the alerts'
    # time filters (`fused`); derived from the fields above, so left out of equality.
    program: fused.Program | None = field(default=None, compare=False, repr=False)
    filters: fused.AlertFilters | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        """A human-readable listing: each rule, the shared indicator graph and the halos."""
        lines = []
        for a in self.alerts:
            bars, sessions = expr.warmup(a.rule)
            lines.append(f"alert {a.name}: {expr._src(a.rule)}")
            lines.append(f"  warm-up: {bars} bars" + (f" + {sessions} sessions" if sessions else ""))
            if a.rearm is not None:
                lines.append(f"  rearm when: {expr._src(a.rearm)}")
            if a.exit_rule is not None:
                lines.append(f"  exit when: {expr._src(a.exit_rule)}")
        uses: dict[expr.Ind, list[str]] = {}
        for a in self.alerts:
            for root in (a.rule, a.rearm, a.exit_rule, *(n for _, n in a.atr)):
                if root is None:
                    continue
                for node in expr.indicator_nodes(root):
                    base = expr.Ind(node.name, node.source, node.params, None)
                    if a.name not in uses.setdefault(base, []):
                        uses[base].append(a.name)
        lines.append("indicator graph (each computed once per cluster):")
        for node, names in uses.items():
            bars, sessions = expr.warmup(node)
            extra = f" + {sessions} sessions" if sessions else ""
            lines.append(f"  {expr._src(node)}: warm-up {bars} bars{extra}; "
                         f"used by {', '.join(names)}")
        extra = f" + {self.warmup_sessions} sessions" if self.warmup_sessions else ""
        tail = " (+ to the session close)" if self.lookahead_session else ""
        lines.append(f"cluster halo: {self.warmup_bars} bars{extra} before, "
                     f"{self.lookahead_bars} bars after{tail}")
        return "\n".join(lines)


def compile_plan(config: Config, bar_ns: int = 60 * 10**9) -> Plan:
    """Compile every alert of `config`; raises `ConfigError` for any bad rule or parameter.

    `bar_ns` (the data's bar interval) converts duration horizons into look-ahead bars.
    """
    defines = dict(config.define)
    for name, text in config.define:
        # Validate every definition, used or not, so a typo is reported where it is.
        expr.parse(text, source=config.source, field=f"define.{name}", defines=defines)
    alerts = []
    roots: list[expr.Node] = []
    warm_bars = warm_sessions = 0
    ahead_bars, ahead_session = 0, False
    for i, alert in enumerate(config.alerts):
        where = f"alerts[{i}]"
        rule = expr.parse_condition(alert.when, source=config.source, field=f"{where}.when",
                                    defines=defines, alert=alert.name)
        rearm = None
        if alert.rearm_when:
            rearm = expr.parse_condition(alert.rearm_when, source=config.source,
                                         field=f"{where}.rearm_when", defines=defines,
                                         alert=alert.name)
        exit_rule = atr = None
        atr = ()
        if alert.trade is not None:
            if alert.trade.exit_when:
                exit_rule = expr.parse_condition(alert.trade.exit_when, source=config.source,
                                                 field=f"{where}.trade.exit_when", defines=defines,
                                                 alert=alert.name)
            atr = tuple((p, expr.Ind("atr", None, (("period", float(p)),), None))
                        for p in alert.trade.atr_periods)
        columns = tuple((_column_name(n, k), n)
                        for k, n in enumerate(expr.indicator_nodes(rule)))
        nodes = [rule, *(n for n in (rearm, exit_rule) if n is not None), *(n for _, n in atr)]
        for node in nodes:
            b, s = expr.warmup(node)
            warm_bars, warm_sessions = max(warm_bars, b), max(warm_sessions, s)
            if node not in roots:
                roots.append(node)
        if alert.trade is not None and alert.trade.session_close and \
                alert.trade.entry == "close" and bar_ns >= SESSION_BAR_NS:
            raise ConfigError(config.source, f"{where}.trade.session_close",
                              "with entry: close on bars of a session or longer every trade "
                              "would leave at its own entry close (zero length)",
                              "use entry: next_open, or max_bars: N instead of session_close")
        bars_after, session_after = lookahead(alert.trade, alert.forward, bar_ns)
        ahead_bars, ahead_session = max(ahead_bars, bars_after), ahead_session or session_after
        alerts.append(AlertPlan(index=i, name=alert.name, config=alert, rule=rule, rearm=rearm,
                                exit_rule=exit_rule, atr=atr, columns=columns))
    cumulative = []
    releases_gil = True
    used: list[str] = []
    for root in roots:
        for node in expr.walk(root):
            if isinstance(node, expr.Ind):
                used.append(node.name)
                spec = indicators.get(node.name)
                releases_gil &= spec.releases_gil
                base = expr.Ind(node.name, node.source, node.params, None)
                if spec.cumulative and base not in cumulative:
                    if node.source is not None:  # pragma: no cover - the parser refuses it
                        raise ConfigError(config.source, "alerts", f"{node} cannot take a source")
                    cumulative.append(base)
    wanted = [*roots, *(node for a in alerts for _, node in a.columns)]
    program = fused.compile_nodes(wanted)
    return Plan(alerts=tuple(alerts), roots=tuple(roots), warmup_bars=warm_bars,
                warmup_sessions=warm_sessions, lookahead_bars=ahead_bars,
                lookahead_session=ahead_session, cumulative=tuple(cumulative),
                timezone=config.data.timezone, releases_gil=releases_gil,
                custom_indicators=indicators.ship(indicators.custom(used)), program=program,
                filters=fused.alert_filters(program, alerts))


def _column_name(node: expr.Ind, index: int) -> str:
    """The alerts table's column for `node`; one cut short (a source too long to show) takes
    its position among the alert's columns, so two such columns never share a name."""
    name = expr._src(node, width=120).replace(" ", "")
    return f"{name}#{index}" if name.endswith("...") else name
