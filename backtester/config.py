"""YAML (or a dict) -> a frozen, typed `Config`, with every error naming the file and field.

The schema is the one README.md and docs/ describe. Names, once shipped, are kept: new keys are added, old ones
are never renamed. Unknown keys are errors (a typo must not silently disable a filter).

Example::

    >>> cfg = load_config({"name": "x", "data": {"path": "data/sample/bars_1min.parquet"},
    ...                    "alerts": [{"name": "a", "when": "rsi(14) < 30"}]})
    >>> cfg.alerts[0].when
    'rsi(14) < 30'
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .durations import DURATION_EXAMPLE, parse_duration_ns
from .errors import ConfigError
from .expr import definition_name_error
from .trades import Horizon, TradeSpec, parse_forward, parse_trade

LAYOUTS = ("day", "week", "month", "quarter", "year", "auto")
BACKENDS = ("auto", "sequential", "threading", "loky", "multiprocessing", "dask")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Ranges beyond any market's use, that would overflow 64-bit nanosecond arithmetic further on.
MAX_DURATION_DAYS = 36_500
MAX_BAR_COUNT = 10**9
# How far a config may nest, and how many values it may hold once its aliases (*name) are
# expanded: a few hundred bytes of aliases expand to a billion values (a "billion laughs"),
# which anything that walks or quotes them never finishes; deep nesting exhausts the stack.
MAX_YAML_DEPTH = 64
MAX_YAML_VALUES = 100_000
_BARS = re.compile(r"^\s*(\d+)\s*(bar|bars)\s*$")
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class DataConfig:
    """Where the bars come from and how to read their timestamps."""

    path: str
    symbols: tuple[str, ...] | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    timezone: str = "America/New_York"
    calendar: str = "XNYS"
    bar_stamp: str = "open"
    day_starts: dt.time | None = None   # calendar none: when the trading day rolls (local)
    on_gaps: str = "keep"               # missing bars inside sessions: keep, fill or error
    on_holiday_bars: str = "error"      # bars on non-session dates: error or drop


@dataclass(frozen=True)
class Cooldown:
    """Minimum spacing between two fires of one alert on one symbol: bars or nanoseconds."""

    bars: int | None = None
    duration_ns: int | None = None

    def describe(self) -> str:
        if self.bars is not None:
            return f"{self.bars} bars"
        return f"{self.duration_ns / 60e9:g}min"


@dataclass(frozen=True)
class AlertConfig:
    """One alert: a rule, when it may fire, and what to measure after it fires."""

    name: str
    when: str
    between: tuple[tuple[int, int], ...] = ()   # exchange-local minutes since midnight, [start, end)
    days: tuple[int, ...] = ()                  # allowed weekdays, 0 = Monday; () = every day
    skip_first: int = 0                         # minutes after each session's open
    skip_last: int = 0                          # minutes before each session's close
    exclude_dates: tuple[dt.date, ...] = ()
    cooldown: Cooldown | None = None
    once_per_day: bool = False
    rearm_when: str | None = None
    forward: tuple[Horizon, ...] = ()
    trade: TradeSpec | None = None


@dataclass(frozen=True)
class ScheduleConfig:
    """How the date range is cut into clusters: a calendar period, {bars: N}, {count: N} or auto."""

    cluster_by: str = "auto"
    size: int | None = None   # N for `bars` and `count`


@dataclass(frozen=True)
class ExecutionConfig:
    """Which engine runs the clusters, with how many workers."""

    backend: str = "auto"            # measure, then sequential / threading / loky (api.choose_backend)
    n_jobs: int = -1
    compare_sequential: bool = False
    address: str | None = None       # dask scheduler; None -> LocalCluster
    batch_size: int | str = "auto"   # clusters per task


@dataclass(frozen=True)
class StatsConfig:
    """What the statistics compute beyond the point figures, and on which clock.

    `bootstrap`: resamples for the 95% intervals of forward returns (0: no intervals, the
    default; they cost a few ms per alert and horizon, seconds on 100k+ alerts).
    `periods_per_year`: overrides the annualisation the data's calendar implies (None: 252 for
    an exchange calendar, 365 for `24/7`, 260 for `24/5`).
    """

    bootstrap: int = 0
    periods_per_year: float | None = None


@dataclass(frozen=True)
class OutputConfig:
    dir: str


@dataclass(frozen=True)
class Config:
    """A validated run description. `source` names where it came from (file or ``<dict>``)."""

    name: str
    data: DataConfig
    alerts: tuple[AlertConfig, ...]
    define: tuple[tuple[str, str], ...] = ()
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    output: OutputConfig = field(default_factory=lambda: OutputConfig("results"))
    stats: StatsConfig = field(default_factory=StatsConfig)
    source: str = "<dict>"
    content_hash: str = ""

    def with_overrides(self, *, backend: str | None = None, n_jobs: int | None = None,
                       out: str | None = None, compare_sequential: bool | None = None,
                       cluster_by: str | Mapping | None = None,
                       address: str | None = None) -> Config:
        """A copy with CLI/API overrides applied and validated like the file's own values.

        `cluster_by` takes every layout the config takes, also written as YAML text the way a
        command line passes it: ``"week"``, ``{"bars": 500}`` or ``"{bars: 500}"``. `address`
        is a Dask scheduler's address (``tcp://host:8786``).
        """
        execution = self.execution
        if backend is not None:
            execution = replace(execution, backend=_choice(backend, BACKENDS, self.source,
                                                           "execution.backend"))
        if n_jobs is not None:
            execution = replace(execution, n_jobs=_n_jobs(n_jobs, self.source, "execution.n_jobs"))
        if compare_sequential is not None:
            execution = replace(execution, compare_sequential=_bool(
                compare_sequential, self.source, "execution.compare_sequential"))
        if address is not None:
            execution = replace(execution, address=_string(address, self.source,
                                                           "execution.address"))
        if out is not None and not isinstance(out, (str, os.PathLike)):
            raise ConfigError(self.source, "output.dir", f"expected a folder path, got {_kind(out)}")
        output = OutputConfig(str(out)) if out is not None else self.output
        schedule = self.schedule
        if cluster_by is not None:
            if isinstance(cluster_by, str) and cluster_by.strip().startswith("{"):
                try:
                    cluster_by = read_yaml(cluster_by)
                except yaml.YAMLError:
                    raise ConfigError(self.source, "schedule.cluster_by",
                                      f"cannot read {cluster_by!r} as a layout",
                                      "write {bars: N} or {count: N}") from None
            schedule = _schedule({"cluster_by": cluster_by}, self.source, "schedule")
        return replace(self, execution=execution, output=output, schedule=schedule)


def load_config(config: str | os.PathLike | Mapping[str, Any] | Config) -> Config:
    """Read and validate a config file (YAML 1.2, see `read_yaml`) or an equivalent dict.

    Relative `data.path` and `output.dir` in a file are taken relative to the working directory,
    as `make backtest` runs from the repository root. Raises `ConfigError` on the first problem.
    """
    if isinstance(config, Config):
        return config
    if isinstance(config, Mapping):
        raw, source = dict(config), "<dict>"
        text = json.dumps(raw, sort_keys=True, default=str)
    elif not isinstance(config, (str, os.PathLike)):
        raise ConfigError("<argument>", "config", "expected a config file path, a mapping or a "
                          f"Config, got {_kind(config)}")
    else:
        source = str(config)
        try:
            text = Path(config).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(source, "", "config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(source, "", f"cannot read config: {exc}") from None
        try:
            raw = read_yaml(text)
        except _DuplicateKey as exc:
            raise ConfigError(source, f"line {exc.line}", f"duplicate key {exc.key!r}, first at line "
                              f"{exc.first_line}", "a later value would silently replace the "
                              "first; keep one") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(source, where, f"invalid YAML: {problem}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(source, "", f"expected a mapping at the top level, got {_kind(raw)}")
    return _config(raw, source, hashlib.sha256(text.encode()).hexdigest())


class _BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses nesting deeper than `MAX_YAML_DEPTH` and documents that
    expand (aliases followed) to more than `MAX_YAML_VALUES` values, with the line and column
    where the limit was passed, before anything walks the document."""

    def compose_node(self, parent, index):
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        sizes: dict[int, int] = {}

        def expanded(node) -> int:   # each node once: aliases share their node
            if id(node) not in sizes:
                children = node.value if isinstance(node, yaml.SequenceNode) else \
                    [n for pair in node.value for n in pair] \
                    if isinstance(node, yaml.MappingNode) else []
                sizes[id(node)] = size = 1 + sum(expanded(child) for child in children)
                if size > MAX_YAML_VALUES:
                    raise yaml.composer.ComposerError(
                        None, None, f"expands to more than {MAX_YAML_VALUES:,} values through "
                        f"aliases (*name); write the values out", node.start_mark)
            return sizes[id(node)]

        if node is not None:
            expanded(node)
        return node


# --------------------------------------------------------------------------- YAML 1.2

class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first_line: int):
        super().__init__(f"duplicate key {key!r} at line {line}")
        self.key, self.line, self.first_line = key, line, first_line


class _Yaml12Loader(_BoundedLoader):
    """`yaml.SafeLoader` with YAML 1.2 core-schema scalars, no duplicate keys, and the
    nesting and alias-expansion bounds of `_BoundedLoader`.

    PyYAML resolves plain scalars by YAML 1.1 rules: ``ON``, ``yes``, ``n`` become booleans and
    ``10:30`` the base-60 integer 630, so the ticker ON or an unquoted time change meaning. Here
    only ``true``/``false`` (any of the three spellings YAML 1.2 allows) are booleans, integers
    and floats follow YAML 1.2 (``010`` is ten, ``1e3`` a float, no ``1_000``, no base 60), and
    dates stay strings (the fields that take a date parse them). Tags stay refused, as in
    `yaml.safe_load`.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                        key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if key in first:
                    raise _DuplicateKey(key, line, first[key])
                first[key] = line
        return super().construct_mapping(node, deep=deep)


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in {f"tag:yaml.org,2002:{kind}"
                           for kind in ("bool", "int", "float", "timestamp")}]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"))
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+.0123456789"))


def _int_12(loader: _Yaml12Loader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 16) if text.startswith("0x") else int(text, 10)


_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _int_12)


def read_yaml(text: str) -> Any:
    """Parse `text` as YAML 1.2 (core schema) with `yaml.safe_load`'s safety: no tags, no code.

    Plain scalars keep the meaning they have as written: ``[ON, YES, N]`` are three strings,
    ``10:30`` is the string ``'10:30'``, ``2024-01-02`` the string ``'2024-01-02'``. A key
    repeated in one mapping raises `yaml.YAMLError` naming its line. For example::

        >>> read_yaml("symbols: [ON, NO]\nat: 10:30\nn: 010")
        {'symbols': ['ON', 'NO'], 'at': '10:30', 'n': 10}
    """
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


# --------------------------------------------------------------------------- sections

def _config(raw: Mapping, source: str, content_hash: str) -> Config:
    _keys(raw, {"name", "data", "alerts", "define", "schedule", "execution", "output", "stats"},
          source, "")
    name = _string(_required(raw, "name", source, ""), source, "name")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(source, "name", f"{_quote(name)} cannot name a results folder",
                          "use letters, digits, '-', '_' or '.'")
    data = _data(_required(raw, "data", source, ""), source, "data")
    define = _define(raw.get("define", {}), source, "define")
    alerts_raw = _required(raw, "alerts", source, "")
    if not isinstance(alerts_raw, list) or not alerts_raw:
        raise ConfigError(source, "alerts", "expected a non-empty list of alerts")
    alerts = tuple(_alert(a, source, f"alerts[{i}]") for i, a in enumerate(alerts_raw))
    seen: set[str] = set()
    for i, alert in enumerate(alerts):
        if alert.name in seen:
            raise ConfigError(source, f"alerts[{i}].name", f"duplicate alert name {_quote(alert.name)}")
        seen.add(alert.name)
    schedule = _schedule(raw.get("schedule", {}), source, "schedule")
    execution = _execution(raw.get("execution", {}), source, "execution")
    out = raw.get("output", {})
    _mapping(out, source, "output")
    _keys(out, {"dir"}, source, "output")
    output = OutputConfig(_string(out.get("dir", f"results/{name}"), source, "output.dir"))
    return Config(name=name, data=data, alerts=alerts, define=define, schedule=schedule,
                  execution=execution, output=output, stats=_stats(raw.get("stats"), source),
                  source=source, content_hash=content_hash)


def _data(raw: Any, source: str, where: str) -> DataConfig:
    _mapping(raw, source, where)
    _keys(raw, {"path", "symbols", "start", "end", "timezone", "calendar", "bar_stamp",
                "day_starts", "on_gaps", "on_holiday_bars"}, source, where)
    path = _string(_required(raw, "path", source, where), source, f"{where}.path")
    symbols = raw.get("symbols")
    if symbols is not None:
        _list(symbols, source, f"{where}.symbols", "[SYNA, SYNB]")
        if not symbols:
            raise ConfigError(source, f"{where}.symbols", "expected a non-empty list of symbols",
                              "leave the key out to read every symbol")
        symbols = tuple(_string(s, source, f"{where}.symbols[{i}]") for i, s in enumerate(symbols))
    start = _date(raw.get("start"), source, f"{where}.start")
    end = _date(raw.get("end"), source, f"{where}.end")
    if start and end and end < start:
        raise ConfigError(source, f"{where}.end", f"{end} is before start {start}")
    timezone = _string(raw.get("timezone", "America/New_York"), source, f"{where}.timezone")
    try:
        import zoneinfo

        zoneinfo.ZoneInfo(timezone)
    except Exception:
        raise ConfigError(source, f"{where}.timezone", f"unknown time zone {_quote(timezone)}",
                          "use an IANA name like America/New_York") from None
    calendar = raw.get("calendar", "XNYS")
    calendar = "none" if calendar is None or calendar is False else _string(calendar, source,
                                                                          f"{where}.calendar")
    if calendar.lower() == "none":
        calendar = "none"
    else:
        try:
            import exchange_calendars

            names = exchange_calendars.get_calendar_names(include_aliases=True)
        except Exception:  # pragma: no cover - the dependency is required
            names = [calendar]
        if calendar not in names:
            close = difflib.get_close_matches(calendar, names, n=1)
            hint = f"did you mean {close[0]!r}? or `none` to infer sessions from the bars" if close \
                else "use an exchange_calendars name like XNYS, or `none` to infer sessions"
            raise ConfigError(source, f"{where}.calendar", f"unknown calendar {_quote(calendar)}", hint)
    bar_stamp = _choice(raw.get("bar_stamp", "open"), ("open", "close"), source, f"{where}.bar_stamp")
    day_starts = raw.get("day_starts")
    if day_starts is not None:
        if calendar != "none":
            raise ConfigError(source, f"{where}.day_starts", f"calendar {calendar} sets its own "
                              "trading day", "day_starts is for calendar: none")
        minutes = _hhmm(day_starts, source, f"{where}.day_starts")
        day_starts = dt.time(minutes // 60, minutes % 60)
    on_gaps = _choice(raw.get("on_gaps", "keep"), ("keep", "fill", "error"), source,
                      f"{where}.on_gaps")
    on_holiday_bars = _choice(raw.get("on_holiday_bars", "error"), ("error", "drop"), source,
                              f"{where}.on_holiday_bars")
    return DataConfig(path=path, symbols=symbols, start=start, end=end, timezone=timezone,
                      calendar=calendar, bar_stamp=bar_stamp, day_starts=day_starts,
                      on_gaps=on_gaps, on_holiday_bars=on_holiday_bars)


def _define(raw: Any, source: str, where: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    _mapping(raw, source, where)
    out = []
    for key, value in raw.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(source, f"{where}.{key}", "a definition name must be an identifier")
        clash = definition_name_error(source, key)
        if clash is not None:
            raise clash
        out.append((key, _expression(value, source, f"{where}.{key}")))
    return tuple(out)


_ALERT_KEYS = {"name", "when", "between", "days", "skip_first", "skip_last", "exclude_dates",
               "cooldown", "once_per_day", "rearm_when", "forward", "trade"}


def _alert(raw: Any, source: str, where: str) -> AlertConfig:
    _mapping(raw, source, where)
    _keys(raw, _ALERT_KEYS, source, where)
    name = _string(_required(raw, "name", source, where), source, f"{where}.name")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name):
        raise ConfigError(source, f"{where}.name", f"{_quote(name)} is not a usable alert name",
                          "use letters, digits, '_', '-' or '.'")
    when = _expression(_required(raw, "when", source, where), source, f"{where}.when")
    between = _between(raw.get("between"), source, f"{where}.between")
    days = _days(raw.get("days"), source, f"{where}.days")
    skip_first = _minutes(raw.get("skip_first", 0), source, f"{where}.skip_first")
    skip_last = _minutes(raw.get("skip_last", 0), source, f"{where}.skip_last")
    excl = raw.get("exclude_dates")
    excl = [] if excl is None else _list(excl, source, f"{where}.exclude_dates",
                                          "[2024-03-15, 2024-06-21]")
    exclude = tuple(sorted(_date(d, source, f"{where}.exclude_dates[{i}]") for i, d in enumerate(excl)))
    cooldown = _cooldown(raw.get("cooldown"), source, f"{where}.cooldown")
    once = _bool(raw.get("once_per_day", False), source, f"{where}.once_per_day")
    rearm = raw.get("rearm_when")
    rearm = None if rearm is None else _expression(rearm, source, f"{where}.rearm_when")
    forward = raw.get("forward")
    forward = () if forward is None else parse_forward(
        _list(forward, source, f"{where}.forward", "[5, 15]"), source, f"{where}.forward")
    trade_raw = raw.get("trade")
    trade = None if trade_raw is None else parse_trade(trade_raw, source, f"{where}.trade")
    return AlertConfig(name=name, when=when, between=between, days=days, skip_first=skip_first,
                       skip_last=skip_last, exclude_dates=exclude, cooldown=cooldown,
                       once_per_day=once, rearm_when=rearm, forward=forward, trade=trade)


def _schedule(raw: Any, source: str, where: str) -> ScheduleConfig:
    if raw is None:
        return ScheduleConfig()
    _mapping(raw, source, where)
    _keys(raw, {"cluster_by"}, source, where)
    value = raw.get("cluster_by", "auto")
    hint = "use day, week, month, quarter, year, auto, {bars: N} or {count: N}"
    if isinstance(value, Mapping):
        if len(value) != 1 or next(iter(value)) not in ("bars", "count"):
            raise ConfigError(source, f"{where}.cluster_by", f"{_quote(dict(value))} is not a layout", hint)
        (kind, size), = value.items()
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(source, f"{where}.cluster_by.{kind}",
                              f"expected a positive integer, got {_quote(size)}")
        return ScheduleConfig(cluster_by=kind, size=size)
    if not isinstance(value, str) or value not in LAYOUTS:
        raise ConfigError(source, f"{where}.cluster_by", f"{_quote(value)} is not a layout", hint)
    return ScheduleConfig(cluster_by=value)


def _execution(raw: Any, source: str, where: str) -> ExecutionConfig:
    if raw is None:
        return ExecutionConfig()
    _mapping(raw, source, where)
    _keys(raw, {"backend", "n_jobs", "compare_sequential", "address", "batch_size"}, source, where)
    backend = _choice(raw.get("backend", "auto"), BACKENDS, source, f"{where}.backend")
    n_jobs = _n_jobs(raw.get("n_jobs", -1), source, f"{where}.n_jobs")
    compare = _bool(raw.get("compare_sequential", False), source, f"{where}.compare_sequential")
    address = raw.get("address")
    if address is not None:
        address = _string(address, source, f"{where}.address")
    batch = raw.get("batch_size", "auto")
    if batch != "auto" and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ConfigError(source, f"{where}.batch_size", f"expected 'auto' or a positive integer, "
                          f"got {_quote(batch)}")
    return ExecutionConfig(backend=backend, n_jobs=n_jobs, compare_sequential=compare,
                           address=address, batch_size=batch)


def _stats(raw: Any, source: str, where: str = "stats") -> StatsConfig:
    if raw is None:
        return StatsConfig()
    _mapping(raw, source, where)
    _keys(raw, {"bootstrap", "periods_per_year"}, source, where)
    bootstrap = raw.get("bootstrap", 0)
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ConfigError(source, f"{where}.bootstrap", f"expected 0 (off) or a number of "
                          f"resamples, got {_quote(bootstrap)}", "for example bootstrap: 2000")
    periods = raw.get("periods_per_year")
    if periods is not None and (isinstance(periods, bool) or not isinstance(periods, (int, float))
                                or not 0 < periods < 1e9):
        raise ConfigError(source, f"{where}.periods_per_year", f"expected a positive number, "
                          f"got {_quote(periods)}", "252 for exchange days, 365 for 24/7")
    return StatsConfig(bootstrap=bootstrap,
                       periods_per_year=None if periods is None else float(periods))


# --------------------------------------------------------------------------- value parsers

def _cooldown(raw: Any, source: str, where: str) -> Cooldown | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
        return Cooldown(bars=_bar_count(raw, raw, source, where))
    if isinstance(raw, str):
        m = _BARS.match(raw.lower())
        if m and int(m.group(1)) >= 1:
            return Cooldown(bars=_bar_count(int(m.group(1)), raw, source, where))
        ns = parse_duration_ns(raw)
        if ns:
            if ns > MAX_DURATION_DAYS * 86400 * 10**9:
                raise ConfigError(source, where, f"{_quote(raw)} is longer than {MAX_DURATION_DAYS:,} "
                                  f"days", "use a shorter cooldown, or once_per_day")
            return Cooldown(duration_ns=ns)
    raise ConfigError(source, where, f"expected a duration like '30min' ({DURATION_EXAMPLE}) or a "
                      f"bar count like 10, got {_quote(raw)}")


def _between(raw: Any, source: str, where: str) -> tuple[tuple[int, int], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise ConfigError(source, where, "expected a window like [\"09:30\", \"10:30\"] or a list "
                          "of such windows")
    windows = [raw] if all(isinstance(x, str) for x in raw) else raw
    out = []
    for i, window in enumerate(windows):
        here = where if windows is not raw else f"{where}[{i}]"
        if not isinstance(window, list) or len(window) != 2:
            raise ConfigError(source, here, f"expected [start, end] as \"HH:MM\" strings, got {_quote(window)}")
        start, end = (_hhmm(t, source, here) for t in window)
        if end <= start:
            raise ConfigError(source, here, f"end {window[1]} is not after start {window[0]}",
                              "windows do not wrap past midnight; use two windows")
        out.append((start, end))
    return tuple(sorted(out))


def _hhmm(value: Any, source: str, where: str) -> int:
    if isinstance(value, str):
        m = _HHMM.match(value.strip())
        if m:
            return int(m.group(1)) * 60 + int(m.group(2))
    raise ConfigError(source, where, f"expected a time like \"09:30\", got {_quote(value)}")


def _days(raw: Any, source: str, where: str) -> tuple[int, ...]:
    if raw is None:
        return ()
    out = set()
    for i, item in enumerate(_list(raw, source, where, "[mon, wed, fri]")):
        key = str(item).strip().lower()[:3]
        if key not in WEEKDAYS:
            raise ConfigError(source, f"{where}[{i}]", f"{_quote(item)} is not a weekday",
                              "use mon, tue, wed, thu, fri, sat, sun")
        out.add(WEEKDAYS.index(key))
    return tuple(sorted(out))


def _bar_count(count: int, raw: Any, source: str, where: str) -> int:
    if count > MAX_BAR_COUNT:
        raise ConfigError(source, where, f"{_quote(raw)} is more than {MAX_BAR_COUNT:,} bars")
    return count


def _minutes(raw: Any, source: str, where: str) -> int:
    minutes = None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        minutes = raw
    ns = parse_duration_ns(raw)
    if ns is not None and ns % (60 * 10**9) == 0:
        minutes = ns // (60 * 10**9)
    if minutes is not None and minutes > 24 * 60:
        raise ConfigError(source, where, f"{_quote(raw)} is longer than a day (1440 minutes)",
                          "sessions are shorter than a day")
    if minutes is not None:
        return minutes
    raise ConfigError(source, where, f"expected whole minutes like 5 or '15min', got {_quote(raw)}")


def _date(raw: Any, source: str, where: str) -> dt.date | None:
    if raw is None:
        return None
    if isinstance(raw, dt.datetime):
        return raw.date()
    if isinstance(raw, dt.date):
        return raw
    if isinstance(raw, str):
        try:
            return dt.date.fromisoformat(raw.strip())
        except ValueError:
            pass
    raise ConfigError(source, where, f"expected a date like 2024-01-02, got {_quote(raw)}")


def _expression(raw: Any, source: str, where: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise ConfigError(source, where, f"expected a rule expression string, got {_kind(raw)}")
    text = str(raw).strip()
    if not text:
        raise ConfigError(source, where, "empty rule expression")
    return text


def max_n_jobs() -> int:
    """The most workers a config may ask for: four per CPU core, and at least 8. More only
    compete for the cores, and each process worker costs its own memory (32 loky workers took
    7 GB on a 2-core machine)."""
    return max(8, 4 * (os.cpu_count() or 1))


def _n_jobs(raw: Any, source: str, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw == 0:
        raise ConfigError(source, where, f"expected a non-zero integer (-1 = all cores), got {_quote(raw)}")
    cap = max_n_jobs()
    if abs(raw) > cap:
        raise ConfigError(source, where, f"{raw} workers is more than the {cap} this machine "
                          f"allows ({os.cpu_count()} CPU cores, at most 4 workers each)",
                          "use -1 for one worker per core")
    return raw


def _choice(raw: Any, choices: tuple[str, ...], source: str, where: str) -> str:
    if isinstance(raw, str) and raw in choices:
        return raw
    close = difflib.get_close_matches(str(raw), choices, n=1)
    raise ConfigError(source, where, f"{_quote(raw)} is not one of {', '.join(choices)}",
                      f"did you mean {close[0]!r}?" if close else None)


def _bool(raw: Any, source: str, where: str) -> bool:
    if isinstance(raw, bool):
        return raw
    raise ConfigError(source, where, f"expected true or false, got {_quote(raw)}")


def _string(raw: Any, source: str, where: str) -> str:
    if isinstance(raw, str) and raw.strip():
        return raw.strip()
    raise ConfigError(source, where, f"expected a non-empty string, got {_kind(raw)}")


def _required(raw: Mapping, key: str, source: str, where: str) -> Any:
    if key not in raw or raw[key] is None:
        raise ConfigError(source, f"{where}.{key}" if where else key, "is required")
    return raw[key]


def _list(raw: Any, source: str, where: str, example: str) -> list:
    """`raw` when it is a list; a lone value is an error, not a one-element list, so that a
    value meant for another key is not taken silently."""
    if not isinstance(raw, list):
        single = None if isinstance(raw, Mapping) or raw is None else \
            f"write [{_quote(raw)[1:-1] if isinstance(raw, str) else raw}] for one value"
        raise ConfigError(source, where, f"expected a list like {example}, got {_kind(raw)}",
                          single)
    return raw


def _mapping(raw: Any, source: str, where: str) -> None:
    if not isinstance(raw, Mapping):
        raise ConfigError(source, where, f"expected a mapping, got {_kind(raw)}")


def _keys(raw: Mapping, allowed: set[str], source: str, where: str) -> None:
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(sorted(allowed))}"
            key = _quote(key)[1:-1] if isinstance(key, str) else _quote(key)
            raise ConfigError(source, f"{where}.{key}" if where else key, "unknown key", hint)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {_quote(value)}"


def _quote(value: Any, width: int = 60) -> str:
    """`value` as a message quotes it: its repr (escaped, one line), cut to `width` characters."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 4] + "...'"
