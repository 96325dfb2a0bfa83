"""The bad-input corpus: one row per case, read by tests/test_bad_inputs.py.

Each case runs `backtester <args>` in an empty folder holding `bars.csv` (two clean one-minute
XNYS bars), the config `c.yaml` and any files the case adds, and must exit 2 with exactly the
one line `expect` on stderr, no traceback, and the folder unchanged. Adding a case is one line:

- `conf(id, expect, section=yaml)`: the standard config with a section replaced (None drops it);
- `alert(id, expect, fields)`: the standard config with one alert written as a flow mapping;
- `raw(id, expect, text)`: `c.yaml` is `text`;
- `data(id, expect, content, name="d.csv")`: a data file (bytes, text or a callable writing it
  given its path) that `data.path` names;
- `cli(id, expect, *args)`: the command line itself (`c.yaml` is the standard config).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field

HEADER = "timestamp,symbol,open,high,low,close,volume\n"
ROW1 = "2024-03-04 09:30:00,AAA,10,11,9,10.5,100\n"
ROW2 = "2024-03-04 09:31:00,AAA,10.5,11,10,10.8,100\n"
BARS = HEADER + ROW1 + ROW2

SECTIONS = {
    "name": "corpus",
    "data": "{path: bars.csv}",
    "alerts": "\n  - {name: a, when: 'close > 10'}",
    "schedule": None,
    "execution": "{backend: sequential}",
    "output": "{dir: out}",
    "define": None,
    "stats": None,
}


@dataclass(frozen=True)
class Case:
    id: str
    expect: str
    config: str
    args: tuple[str, ...] = ("run", "c.yaml")
    files: dict = field(default_factory=dict)


def config_text(**sections: str | None) -> str:
    merged = {**SECTIONS, **sections}
    return "".join(f"{key}: {value}\n" for key, value in merged.items() if value is not None)


def conf(id: str, expect: str, **sections: str | None) -> Case:
    return Case(id, expect, config_text(**sections))


def alert(id: str, expect: str, fields: str) -> Case:
    return Case(id, expect, config_text(alerts=f"\n  - {fields}"))


def raw(id: str, expect: str, text: str) -> Case:
    return Case(id, expect, text)


def data(id: str, expect: str, content, name: str = "d.csv", path: str | None = None) -> Case:
    return Case(id, expect, config_text(data=f"{{path: '{path or name}'}}"),
                files={name: content})


def cli(id: str, expect: str, *args: str, files: dict | None = None) -> Case:
    return Case(id, expect, config_text(), args=tuple(args), files=files or {})


def fifo(path: str) -> None:
    os.mkfifo(path)


def folder_of(**files: str):
    def make(path: str) -> None:
        os.mkdir(path)
        for name, text in files.items():
            with open(os.path.join(path, name), "w", encoding="utf-8") as f:
                f.write(text)
    return make


C = "c.yaml"
D = "d.csv"

CASES: list[Case] = [
    # ---------------------------------------------------------------- the file and YAML syntax
    cli("config_missing", "nope.yaml: config file not found", "run", "nope.yaml"),
    cli("config_is_a_folder", "sub: cannot read config: [Errno 21] Is a directory: 'sub'", "run", "sub", files={"sub": folder_of()}),
    cli("config_not_utf8", "x.yaml: cannot read config: 'utf-8' codec can't decode byte 0xff in position 6: invalid start byte", "run", "x.yaml", files={"x.yaml": b"name: \xff\xfe\n"}),
    raw("yaml_empty", "c.yaml: expected a mapping at the top level, got nothing", ""),
    raw("yaml_top_level_list", "c.yaml: expected a mapping at the top level, got a list", "- a\n- b\n"),
    raw("yaml_top_level_scalar", "c.yaml: expected a mapping at the top level, got str 'hello'", "hello\n"),
    raw("yaml_unclosed_flow", "c.yaml: line 3, column 1: invalid YAML: expected ',' or '}', but got '<stream end>'", "name: x\ndata: {path: bars.csv\n"),
    raw("yaml_bad_indent", "c.yaml: line 2, column 6: invalid YAML: mapping values are not allowed here", "name: x\n data: 1\n  alerts: 2\n"),
    raw("yaml_tab_indent", "c.yaml: line 3, column 1: invalid YAML: found character '\\t' that cannot start any token", "name: x\ndata:\n\tpath: bars.csv\n"),
    raw("yaml_unclosed_quote", "c.yaml: line 2, column 1: invalid YAML: found unexpected end of stream", "name: 'x\n"),
    raw("yaml_duplicate_key", "c.yaml: line 7: duplicate key 'name', first at line 1 (a later value would silently replace the first; keep one)", config_text() + "name: again\n"),
    raw("yaml_duplicate_nested_key", "c.yaml: line 5: duplicate key 'backend', first at line 5 (a later value would silently replace the first; keep one)", config_text(execution="{backend: sequential, backend: loky}")),
    raw("yaml_tag", "c.yaml: line 1, column 7: invalid YAML: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'", config_text(name="!!python/object/apply:os.system ['true']")),
    raw("yaml_custom_tag", "c.yaml: line 1, column 7: invalid YAML: could not determine a constructor for the tag '!secret'", config_text(name="!secret x")),
    raw("yaml_alias_bomb", "c.yaml: line 6, column 7: invalid YAML: expands to more than 100,000 values through aliases (*name); write the values out", "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nname: [*e, *e, *e, *e, *e, *e, *e, *e]\n"),
    raw("yaml_deep_nesting", "c.yaml: line 1, column 70: invalid YAML: nested deeper than 64 levels", "name: " + "[" * 5000 + "]" * 5000 + "\n"),
    raw("yaml_unknown_top_key", "c.yaml: extra: unknown key (allowed: alerts, data, define, execution, name, output, schedule, stats)", config_text() + "extra: 1\n"),
    raw("yaml_nul_byte", "c.yaml: invalid YAML: unacceptable character #x0000: special characters are not allowed", "name: a\x00b\n"),
    # ---------------------------------------------------------------- name, output
    conf("name_missing", "c.yaml: name: is required", name=None),
    conf("name_list", "c.yaml: name: expected a non-empty string, got a list", name="[a, b]"),
    conf("name_empty", "c.yaml: name: expected a non-empty string, got str ''", name="''"),
    conf("name_slash", "c.yaml: name: 'a/b' cannot name a results folder (use letters, digits, '-', '_' or '.')", name="a/b"),
    conf("name_dotdot", "c.yaml: name: '..' cannot name a results folder (use letters, digits, '-', '_' or '.')", name="'..'"),
    conf("output_not_mapping", "c.yaml: output: expected a mapping, got str 'out'", output="out"),
    conf("output_unknown_key", "c.yaml: output.format: unknown key (allowed: dir)", output="{dir: out, format: x}"),
    conf("output_dir_number", "c.yaml: output.dir: expected a non-empty string, got int 5", output="{dir: 5}"),
    conf("output_dir_nul", "c.yaml: output.dir: 'o\\x00ut': a path cannot hold a NUL byte (choose another output.dir, or pass --out)", output='{dir: "o\\0ut"}'),
    conf("output_dir_too_long", "c.yaml: output.dir: oooooooooooooooooooooooooooooooooooooooooooooooooooooooooooo...: the name oooooooooooooooooooo... is too long for this file system (at most 231 bytes for the results folder's own name, 255 for its parents; choose another output.dir, or pass --out)", output="{dir: " + "o" * 300 + "}"),
    conf("output_dir_is_a_file", "c.yaml: output.dir: bars.csv: is a file, not a results folder; refusing to replace it (choose another output.dir, or pass --out)", output="{dir: bars.csv}"),
    # ---------------------------------------------------------------- data
    conf("data_missing", "c.yaml: data: is required", data=None),
    conf("data_not_mapping", "c.yaml: data: expected a mapping, got str 'bars.csv'", data="bars.csv"),
    conf("data_path_missing", "c.yaml: data.path: is required", data="{timezone: UTC}"),
    conf("data_path_number", "c.yaml: data.path: expected a non-empty string, got int 5", data="{path: 5}"),
    conf("data_path_absent_file", "nothing.csv: no such file or folder", data="{path: nothing.csv}"),
    conf("data_unknown_key", "c.yaml: data.zone: unknown key (did you mean 'timezone'?)", data="{path: bars.csv, zone: UTC}"),
    conf("data_symbols_empty", "c.yaml: data.symbols: expected a non-empty list of symbols (leave the key out to read every symbol)", data="{path: bars.csv, symbols: []}"),
    conf("data_symbols_string", "c.yaml: data.symbols: expected a list like [SYNA, SYNB], got str 'AAA' (write [AAA] for one value)", data="{path: bars.csv, symbols: AAA}"),
    conf("data_symbols_unknown", "bars.csv: column 'symbol': symbol(s) ZZZ not in the source (available: AAA)", data="{path: bars.csv, symbols: [ZZZ]}"),
    conf("data_start_not_date", "c.yaml: data.start: expected a date like 2024-01-02, got 'soon'", data="{path: bars.csv, start: soon}"),
    conf("data_start_invalid_date", "c.yaml: data.start: expected a date like 2024-01-02, got '2024-02-30'", data="{path: bars.csv, start: 2024-02-30}"),
    alert("exclude_dates_invalid_in_list", "c.yaml: alerts[0].exclude_dates[0]: expected a date like 2024-01-02, got '2024-02-30'", "{name: a, when: 'close > 1', exclude_dates: [2024-02-30]}"),
    conf("data_end_before_start", "c.yaml: data.end: 2024-03-01 is before start 2024-03-05", data="{path: bars.csv, start: 2024-03-05, end: 2024-03-01}"),
    conf("data_window_without_bars", "bars.csv: no bars between 2025-01-02 and the end (the bars cover 2024-03-04 to 2024-03-04)", data="{path: bars.csv, start: 2025-01-02}"),
    conf("data_timezone_unknown", "c.yaml: data.timezone: unknown time zone 'Mars/Olympus' (use an IANA name like America/New_York)", data="{path: bars.csv, timezone: Mars/Olympus}"),
    conf("data_timezone_number", "c.yaml: data.timezone: expected a non-empty string, got int 5", data="{path: bars.csv, timezone: 5}"),
    conf("data_timezone_huge", "c.yaml: data.timezone: unknown time zone 'Europe/Europe/Europe/Europe/Europe/Europe/Europe/Europe...' (use an IANA name like America/New_York)", data="{path: bars.csv, timezone: " + "Europe/" * 2000 + "X}"),
    conf("data_unknown_key_huge", "c.yaml: line 2, column 5026: invalid YAML: expected ',' or '}', but got ':'", data="{path: bars.csv, '" + "k" * 5000 + "': 1}"),
    conf("data_calendar_unknown", "c.yaml: data.calendar: unknown calendar 'XXXX' (use an exchange_calendars name like XNYS, or `none` to infer sessions)", data="{path: bars.csv, calendar: XXXX}"),
    conf("data_bar_stamp_enum", "c.yaml: data.bar_stamp: 'middle' is not one of open, close", data="{path: bars.csv, bar_stamp: middle}"),
    conf("data_day_starts_bad_time", 'c.yaml: data.day_starts: expected a time like "09:30", got \'25:00\'', data="{path: bars.csv, calendar: none, day_starts: '25:00'}"),
    conf("data_day_starts_with_calendar", "c.yaml: data.day_starts: calendar XNYS sets its own trading day (day_starts is for calendar: none)", data="{path: bars.csv, day_starts: '17:00'}"),
    # ---------------------------------------------------------------- alerts
    conf("alerts_missing", "c.yaml: alerts: is required", alerts=None),
    conf("alerts_empty", "c.yaml: alerts: expected a non-empty list of alerts", alerts="[]"),
    conf("alerts_mapping", "c.yaml: alerts: expected a non-empty list of alerts", alerts="{name: a}"),
    conf("alerts_item_string", "c.yaml: alerts[0]: expected a mapping, got str 'a'", alerts="\n  - a"),
    conf("alerts_duplicate_name", "c.yaml: alerts[1].name: duplicate alert name 'a'", alerts="\n  - {name: a, when: 'close > 1'}\n  - {name: a, when: 'close > 2'}"),
    alert("alert_name_missing", "c.yaml: alerts[0].name: is required", "{when: 'close > 1'}"),
    alert("alert_name_spaces", "c.yaml: alerts[0].name: 'a b' is not a usable alert name (use letters, digits, '_', '-' or '.')", "{name: 'a b', when: 'close > 1'}"),
    alert("alert_name_huge_escaped", "c.yaml: alerts[0].name: '\\u202e\\t\\u202e\\t\\u202e\\t\\u202e\\t\\u202e\\t\\u202e\\t\\u202e\\...' is not a usable alert name (use letters, digits, '_', '-' or '.')", "{name: \"" + "\\t\\u202e" * 2000 + "\", when: 'close > 1'}"),
    alert("alert_when_missing", "c.yaml: alerts[0].when: is required", "{name: a}"),
    alert("alert_when_number", "c.yaml: alerts[0].when: the rule '5' is a number, not a condition at column 1 (compare it, e.g. `rsi(14) < 30`)", "{name: a, when: 5}"),
    alert("alert_when_empty", "c.yaml: alerts[0].when: empty rule expression", "{name: a, when: ''}"),
    alert("alert_unknown_key", "c.yaml: alerts[0].whn: unknown key (did you mean 'when'?)", "{name: a, when: 'close > 1', whn: 1}"),
    alert("between_string", 'c.yaml: alerts[0].between: expected a window like ["09:30", "10:30"] or a list of such windows', "{name: a, when: 'close > 1', between: '09:30'}"),
    alert("between_bad_time", 'c.yaml: alerts[0].between: expected a time like "09:30", got \'25:00\'', "{name: a, when: 'close > 1', between: ['09:30', '25:00']}"),
    alert("between_reversed", "c.yaml: alerts[0].between: end 09:30 is not after start 10:30 (windows do not wrap past midnight; use two windows)", "{name: a, when: 'close > 1', between: ['10:30', '09:30']}"),
    alert("between_three", 'c.yaml: alerts[0].between: expected [start, end] as "HH:MM" strings, got [\'09:30\', \'10:00\', \'11:00\']', "{name: a, when: 'close > 1', between: ['09:30', '10:00', '11:00']}"),
    alert("between_number_time", 'c.yaml: alerts[0].between[0]: expected [start, end] as "HH:MM" strings, got 930', "{name: a, when: 'close > 1', between: [930, 1030]}"),
    alert("days_unknown", "c.yaml: alerts[0].days[0]: 'funday' is not a weekday (use mon, tue, wed, thu, fri, sat, sun)", "{name: a, when: 'close > 1', days: [funday]}"),
    alert("days_string", "c.yaml: alerts[0].days: expected a list like [mon, wed, fri], got str 'mon' (write [mon] for one value)", "{name: a, when: 'close > 1', days: mon}"),
    alert("skip_first_negative", "c.yaml: alerts[0].skip_first: expected whole minutes like 5 or '15min', got -5", "{name: a, when: 'close > 1', skip_first: -5}"),
    alert("skip_first_huge", "c.yaml: alerts[0].skip_first: 1000000000 is longer than a day (1440 minutes) (sessions are shorter than a day)", "{name: a, when: 'close > 1', skip_first: 1000000000}"),
    alert("skip_last_text", "c.yaml: alerts[0].skip_last: expected whole minutes like 5 or '15min', got 'soon'", "{name: a, when: 'close > 1', skip_last: soon}"),
    alert("exclude_dates_bad", "c.yaml: alerts[0].exclude_dates[1]: expected a date like 2024-01-02, got '2024-13-01'", "{name: a, when: 'close > 1', exclude_dates: [2024-03-01, 2024-13-01]}"),
    alert("exclude_dates_string", "c.yaml: alerts[0].exclude_dates: expected a list like [2024-03-15, 2024-06-21], got str '2024-03-01' (write [2024-03-01] for one value)", "{name: a, when: 'close > 1', exclude_dates: 2024-03-01}"),
    alert("cooldown_unit", "c.yaml: alerts[0].cooldown: expected a duration like '30min' (30s, 30min, 1.5h or 1d) or a bar count like 10, got '5 parsecs'", "{name: a, when: 'close > 1', cooldown: 5 parsecs}"),
    alert("cooldown_huge", "c.yaml: alerts[0].cooldown: '99999999999d' is longer than 36,500 days (use a shorter cooldown, or once_per_day)", "{name: a, when: 'close > 1', cooldown: 99999999999d}"),
    alert("cooldown_negative", "c.yaml: alerts[0].cooldown: expected a duration like '30min' (30s, 30min, 1.5h or 1d) or a bar count like 10, got '-5min'", "{name: a, when: 'close > 1', cooldown: -5min}"),
    alert("cooldown_bars_huge", "c.yaml: alerts[0].cooldown: '10000000000 bars' is more than 1,000,000,000 bars", "{name: a, when: 'close > 1', cooldown: 10000000000 bars}"),
    alert("once_per_day_text", "c.yaml: alerts[0].once_per_day: expected true or false, got 'maybe'", "{name: a, when: 'close > 1', once_per_day: maybe}"),
    alert("rearm_when_number", "c.yaml: alerts[0].rearm_when: the rule '3' is a number, not a condition at column 1 (compare it, e.g. `rsi(14) < 30`)", "{name: a, when: 'close > 1', rearm_when: 3}"),
    alert("rearm_when_not_condition", "c.yaml: alerts[0].rearm_when: the rule 'close' is a number, not a condition at column 1 (compare it, e.g. `rsi(14) < 30`)", "{name: a, when: 'close > 1', rearm_when: 'close'}"),
    alert("forward_string", "c.yaml: alerts[0].forward: expected a list like [5, 15], got str 'soon' (write [soon] for one value)", "{name: a, when: 'close > 1', forward: soon}"),
    alert("forward_negative", "c.yaml: alerts[0].forward[0]: horizon must satisfy: bars >= 1, got -5", "{name: a, when: 'close > 1', forward: [-5]}"),
    alert("forward_bad_unit", "c.yaml: alerts[0].forward[0]: cannot read '5 parsecs' as a horizon (use bars (15), a duration (30s, 30min, 1.5h or 1d) or eod)", "{name: a, when: 'close > 1', forward: [5 parsecs]}"),
    alert("trade_not_mapping", "c.yaml: alerts[0].trade: expected a mapping, got str (write trade: {take_profit: 1%, stop_loss: 0.5%, max_bars: 60})", "{name: a, when: 'close > 1', trade: yes}"),
    alert("trade_unknown_key", "c.yaml: alerts[0].trade.stop: unknown key 'stop' (did you mean 'stop_loss'?)", "{name: a, when: 'close > 1', trade: {stop: 1}}"),
    alert("trade_side_enum", "c.yaml: alerts[0].trade.side: 'sideways' is not one of long, short", "{name: a, when: 'close > 1', trade: {side: sideways}}"),
    alert("trade_entry_enum", "c.yaml: alerts[0].trade.entry: 'later' is not one of next_open, close", "{name: a, when: 'close > 1', trade: {entry: later}}"),
    alert("trade_exit_when_number", "c.yaml: alerts[0].trade.exit_when: expected a rule expression (for example exit_when: rsi(14) > 70)", "{name: a, when: 'close > 1', trade: {exit_when: 1}}"),
    alert("trade_take_profit_text", "c.yaml: alerts[0].trade.take_profit: cannot read 'lots' as a price level (write 1% (percent), 2atr or atr(20)*2 (ATR multiple), or a number (price offset))", "{name: a, when: 'close > 1', trade: {take_profit: lots}}"),
    alert("trade_take_profit_negative", "c.yaml: alerts[0].trade.take_profit: cannot read '-1%' as a price level (write 1% (percent), 2atr or atr(20)*2 (ATR multiple), or a number (price offset))", "{name: a, when: 'close > 1', trade: {take_profit: -1%}}"),
    alert("trade_stop_loss_zero", "c.yaml: alerts[0].trade.stop_loss: level must satisfy: value > 0, got '0%'", "{name: a, when: 'close > 1', trade: {stop_loss: 0%}}"),
    alert("trade_stop_loss_atr_period", "c.yaml: alerts[0].trade.stop_loss: ATR period must be >= 1, got '2atr(0)'", "{name: a, when: 'close > 1', trade: {stop_loss: 2atr(0)}}"),
    alert("trade_trailing_stop_list", "c.yaml: alerts[0].trade.trailing_stop: expected a level, got list (write 1% (percent), 2atr or atr(20)*2 (ATR multiple), or a number (price offset))", "{name: a, when: 'close > 1', trade: {trailing_stop: [1]}}"),
    alert("trade_trail_after_without_trailing", "c.yaml: alerts[0].trade.trail_after: trail_after needs a trailing_stop (add trailing_stop: 1% or remove trail_after)", "{name: a, when: 'close > 1', trade: {trail_after: 1%}}"),
    alert("trade_max_bars_zero", "c.yaml: alerts[0].trade.max_bars: max_bars must satisfy: max_bars >= 1 (an integer), got 0", "{name: a, when: 'close > 1', trade: {max_bars: 0}}"),
    alert("trade_max_bars_text", "c.yaml: alerts[0].trade.max_bars: max_bars must satisfy: max_bars >= 1 (an integer), got 'ten'", "{name: a, when: 'close > 1', trade: {max_bars: ten}}"),
    alert("trade_session_close_text", "c.yaml: alerts[0].trade.session_close: expected true or false, got 'sometimes'", "{name: a, when: 'close > 1', trade: {session_close: sometimes}}"),
    alert("trade_commission_negative", "c.yaml: alerts[0].trade.commission: expected a mapping (write {per_share: 0.005, percent: 0.1, minimum: 1.0})", "{name: a, when: 'close > 1', trade: {commission: -1}}"),
    alert("trade_slippage_text", "c.yaml: alerts[0].trade.slippage: cannot read 'some' as a price level (write 1% (percent), 2atr or atr(20)*2 (ATR multiple), or a number (price offset))", "{name: a, when: 'close > 1', trade: {slippage: some}}"),
    alert("trade_bracket_from_enum", "c.yaml: alerts[0].trade.bracket_from: 'open' is not one of fill, signal_close", "{name: a, when: 'close > 1', trade: {bracket_from: open}}"),
    alert("trade_stops_on_entry_bar_text", "c.yaml: alerts[0].trade.stops_on_entry_bar: expected true or false, got 'perhaps'", "{name: a, when: 'close > 1', trade: {stops_on_entry_bar: perhaps}}"),
    alert("trade_overlap_enum", "c.yaml: alerts[0].trade.overlap: 'merge' is not one of skip, allow", "{name: a, when: 'close > 1', trade: {overlap: merge}}"),
    alert("trade_quantity_zero", "c.yaml: alerts[0].trade.quantity: quantity must be > 0, got 0", "{name: a, when: 'close > 1', trade: {quantity: 0}}"),
    alert("trade_exit_rule_syntax", "c.yaml: alerts[0].trade.exit_when: invalid syntax at column 10", "{name: a, when: 'close > 1', trade: {max_bars: 5, exit_when: 'rsi(14) >'}}"),
    alert("trade_no_exit", "c.yaml: alerts[0].trade.max_bars: a trade needs a finite horizon (set max_bars: N and/or session_close: true; trades are simulated inside each cluster with a bounded look-ahead halo, so exit_when or a trailing stop alone cannot bound them)", "{name: a, when: 'close > 1', trade: {side: long}}"),
    # ---------------------------------------------------------------- rule expressions
    alert("rule_syntax", "c.yaml: alerts[0].when: invalid syntax at column 8", "{name: a, when: 'close >'}"),
    alert("rule_unknown_name", "c.yaml: alerts[0].when: unknown name 'clse' at column 1 (did you mean 'close'?)", "{name: a, when: 'clse > 1'}"),
    alert("rule_unknown_function", "c.yaml: alerts[0].when: unknown function 'foo' at column 1 (see docs/rules.md for the functions)", "{name: a, when: 'foo(close) > 1'}"),
    alert("rule_attribute_escape", "c.yaml: alerts[0].when: '.__class__' is only allowed on an indicator call at column 7 (like macd(12, 26, 9).signal)", "{name: a, when: 'close.__class__ > 1'}"),
    alert("rule_dunder_import", "c.yaml: alerts[0].when: only named functions and indicators can be called at column 1", "{name: a, when: '__import__(\"os\").system(\"true\") > 1'}"),
    alert("rule_lambda", "c.yaml: alerts[0].when: only named functions and indicators can be called at column 1", "{name: a, when: '(lambda: 1)() > 0'}"),
    alert("rule_subscript", "c.yaml: alerts[0].when: subscripts are not allowed in rules at column 1", "{name: a, when: 'close[0] > 1'}"),
    alert("rule_string_literal", "c.yaml: alerts[0].when: str literals are not allowed at column 9 (rules use numbers, fields, indicators and functions)", "{name: a, when: 'close > \"x\"'}"),
    alert("rule_walrus", "c.yaml: alerts[0].when: assignments are not allowed in rules at column 2", "{name: a, when: '(x := 1) > 0'}"),
    alert("rule_comprehension", "c.yaml: alerts[0].when: comprehensions are not allowed in rules at column 1", "{name: a, when: '[c for c in close] > 0'}"),
    alert("rule_number_only", "c.yaml: alerts[0].when: the rule 'close + 1' is a number, not a condition at column 1 (compare it, e.g. `rsi(14) < 30`)", "{name: a, when: 'close + 1'}"),
    alert("rule_and_numbers", "c.yaml: alerts[0].when: expected a condition, got the number 'close' at column 1 (write a comparison such as `x > 0`)", "{name: a, when: 'close and open'}"),
    alert("rule_bad_period", "c.yaml: alerts[0].when: alert 'a': rsi(0): period must be an integer >= 2, got 0 at column 1", "{name: a, when: 'rsi(0) < 30'}"),
    alert("rule_float_period", "c.yaml: alerts[0].when: alert 'a': rsi(2.5): period must be an integer >= 2, got 2.5 at column 1", "{name: a, when: 'rsi(2.5) < 30'}"),
    alert("rule_too_many_args", "c.yaml: alerts[0].when: alert 'a': rsi(14, 2, 3): rsi takes at most 1 parameter (period), got 3 at column 1", "{name: a, when: 'rsi(14, 2, 3) < 30'}"),
    alert("rule_unknown_output", "c.yaml: alerts[0].when: bbands() has no output 'middle_ish' at column 15 (did you mean '.middle'?)", "{name: a, when: 'bbands(20, 2).middle_ish < close'}"),
    alert("rule_unknown_keyword", "c.yaml: alerts[0].when: alert 'a': rsi(14, length=3): rsi has no parameter 'length' (parameters: period) at column 1", "{name: a, when: 'rsi(14, length=3) < 30'}"),
    alert("rule_huge_window", "c.yaml: alerts[0].when: alert 'a': sma(close, 10000000000): period must be an integer <= 100000, got 10000000000 at column 1", "{name: a, when: 'sma(close, 10000000000) > 1'}"),
    alert("rule_hash_in_quoted_rule", "c.yaml: alerts[0].when: '#' is not allowed in a rule: it would end the rule there at column 11 (rules have no comments; put them in the YAML outside the quotes)", "{name: a, when: 'close > 1 # and volume > 1e99'}"),
    alert("rule_too_long", "c.yaml: alerts[0].when: expression longer than 4000 characters at column 4001", "{name: a, when: '" + " + ".join(["close"] * 1000) + " > 1'}"),
    alert("rule_deep_parentheses", "c.yaml: alerts[0].when: invalid syntax (too many nested parentheses) at column 200", "{name: a, when: '" + "(" * 300 + "close" + ")" * 300 + " > 1'}"),
    alert("rule_keyword_argument_splat", "c.yaml: alerts[0].when: '**' arguments are not allowed at column 5", "{name: a, when: 'rsi(**x) < 30'}"),
    alert("rule_name_huge", "c.yaml: alerts[0].when: unknown name 'zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz...' at column 1 (use a bar field, a definition, an indicator or a function)", "{name: a, when: '" + "z" * 3000 + " > 1'}"),
    alert("rule_bool_arith", "c.yaml: alerts[0].when: expected a number, got the condition 'close > 1' at column 2 (compare numbers, then combine conditions with and/or)", "{name: a, when: '(close > 1) + 1 > 0'}"),
    alert("rule_inf_literal", "c.yaml: alerts[0].when: number out of range at column 9", "{name: a, when: 'close > 1e999'}"),
    alert("rule_control_character", "c.yaml: alerts[0].when: invalid syntax (invalid non-printable character U+0007) at column 10", "{name: a, when: \"close > 1\\x07\"}"),
    # ---------------------------------------------------------------- define
    conf("define_list", "c.yaml: define: expected a mapping, got a list", define="[a, b]"),
    conf("define_bad_name", "c.yaml: define.1x: a definition name must be an identifier", define="{'1x': close}"),
    conf("define_shadows_field", "c.yaml: define.close: 'close' is a bar field and cannot be redefined (choose another name, e.g. 'my_close')", define="{close: open}"),
    conf("define_cycle", "c.yaml: define.x: definition cycle y -> x -> y at column 1", define="{x: y + 1, y: x + 1}"),
    conf("define_self", "c.yaml: define.x: definition cycle x -> x at column 1", define="{x: x + 1}"),
    conf("define_syntax", "c.yaml: define.x: invalid syntax at column 8", define="{x: 'close +'}"),
    conf("define_mapping_value", "c.yaml: define.x: expected a rule expression string, got a mapping", define="{x: {y: 1}}"),
    conf("define_unused_bad", "c.yaml: define.x: rsi(1): period must be an integer >= 2, got 1 at column 1", define="{x: 'rsi(1)'}"),
    # ---------------------------------------------------------------- schedule, execution, stats
    conf("schedule_not_mapping", "c.yaml: schedule: expected a mapping, got str 'month'", schedule="month"),
    conf("schedule_unknown_key", "c.yaml: schedule.by: unknown key (allowed: cluster_by)", schedule="{by: month}"),
    conf("cluster_by_enum", "c.yaml: schedule.cluster_by: 'fortnight' is not a layout (use day, week, month, quarter, year, auto, {bars: N} or {count: N})", schedule="{cluster_by: fortnight}"),
    conf("cluster_by_bars_zero", "c.yaml: schedule.cluster_by.bars: expected a positive integer, got 0", schedule="{cluster_by: {bars: 0}}"),
    conf("cluster_by_two_keys", "c.yaml: schedule.cluster_by: {'bars': 5, 'count': 2} is not a layout (use day, week, month, quarter, year, auto, {bars: N} or {count: N})", schedule="{cluster_by: {bars: 5, count: 2}}"),
    conf("cluster_by_count_text", "c.yaml: schedule.cluster_by.count: expected a positive integer, got 'many'", schedule="{cluster_by: {count: many}}"),
    conf("execution_not_mapping", "c.yaml: execution: expected a mapping, got str 'loky'", execution="loky"),
    conf("backend_enum", "c.yaml: execution.backend: 'gpu' is not one of auto, sequential, threading, loky, multiprocessing, dask", execution="{backend: gpu}"),
    conf("n_jobs_zero", "c.yaml: execution.n_jobs: expected a non-zero integer (-1 = all cores), got 0", execution="{backend: sequential, n_jobs: 0}"),
    conf("n_jobs_text", "c.yaml: execution.n_jobs: expected a non-zero integer (-1 = all cores), got 'all'", execution="{backend: sequential, n_jobs: all}"),
    conf("n_jobs_huge", "c.yaml: execution.n_jobs: 1000000000 workers is more than the 8 this machine allows (2 CPU cores, at most 4 workers each) (use -1 for one worker per core)", execution="{backend: loky, n_jobs: 1000000000}"),
    conf("n_jobs_float", "c.yaml: execution.n_jobs: expected a non-zero integer (-1 = all cores), got 2.5", execution="{backend: loky, n_jobs: 2.5}"),
    conf("compare_sequential_text", "c.yaml: execution.compare_sequential: expected true or false, got 'often'", execution="{backend: sequential, compare_sequential: often}"),
    conf("batch_size_zero", "c.yaml: execution.batch_size: expected 'auto' or a positive integer, got 0", execution="{backend: sequential, batch_size: 0}"),
    conf("address_number", "c.yaml: execution.address: expected a non-empty string, got int 5", execution="{backend: dask, address: 5}"),
    conf("address_malformed", "execution.address: cannot connect to the Dask scheduler at 'not a url': missing port number in address 'not a url' (check the address; it must be a scheduler you trust)", execution="{backend: dask, address: 'not a url'}"),
    conf("execution_unknown_key", "c.yaml: execution.workers: unknown key (allowed: address, backend, batch_size, compare_sequential, n_jobs)", execution="{backend: sequential, workers: 2}"),
    conf("stats_not_mapping", "c.yaml: stats: expected a mapping, got int 5", stats="5"),
    conf("stats_bootstrap_negative", "c.yaml: stats.bootstrap: expected 0 (off) or a number of resamples, got -1 (for example bootstrap: 2000)", stats="{bootstrap: -1}"),
    conf("stats_periods_zero", "c.yaml: stats.periods_per_year: expected a positive number, got 0 (252 for exchange days, 365 for 24/7)", stats="{periods_per_year: 0}"),
    conf("stats_unknown_key", "c.yaml: stats.alpha: unknown key (allowed: bootstrap, periods_per_year)", stats="{alpha: 1}"),
    # ---------------------------------------------------------------- data files
    data("data_empty_file", "d.csv: file is empty (expected a header row and bars)", ""),
    data("data_header_only", "d.csv: no bars (the source has a header but no rows)", HEADER),
    data("data_truncated_row", "d.csv: row 3: 3 fields where the header has 7 (line 4 of the file)", BARS + "2024-03-04 09:32:00,AAA,10"),
    data("data_binary", "d.csv: is binary, not CSV text (expected a header row and bars)", bytes(range(256)) * 4),
    data("data_gzip_named_csv", "d.csv: is gzip-compressed but not named .gz (rename it to d.csv.gz, or decompress it)", gzip.compress(BARS.encode())),
    data("data_wrong_extension", "d.txt: unknown file type '.txt' (use .csv or .parquet, or a folder of them)", BARS, name="d.txt"),
    data("data_parquet_not_parquet", "d.parquet: cannot read Parquet file: Parquet magic bytes not found in footer. Either the file is corrupted or this is not a parquet file.", BARS, name="d.parquet"),
    data("data_missing_close", "d.csv: column 'close': missing required column(s) close (found: timestamp, symbol, open, high, low, klose, volume; expected timestamp, symbol, open, high, low, close, volume, with symbol optional in a one-file-per-symbol layout)", BARS.replace(",close", ",klose")),
    data("data_missing_timestamp", "d.csv: column 'timestamp': missing required column(s) timestamp (found: when, symbol, open, high, low, close, volume; expected timestamp, symbol, open, high, low, close, volume, with symbol optional in a one-file-per-symbol layout)", BARS.replace("timestamp,", "when,")),
    data("data_duplicate_column", "d.csv: column 'close': a second close column (found: timestamp, symbol, open, high, low, close, close; keep one, as either could be read)", BARS.replace(",volume", ",close")),
    data("data_duplicate_column_case", "d.csv: column 'Close': a second close column (found: timestamp, symbol, open, high, low, close, volume, Close; keep one, as either could be read)", BARS.replace(",volume\n", ",volume,Close\n")
         .replace(",100\n", ",100,1\n")),
    data("data_non_numeric", "d.csv: row 1, column 'close': 'ten' is not a number", HEADER + ROW1.replace("10.5", "ten")),
    data("data_nan_price", "d.csv: row 1, column 'close': price is nan (OHLC must be finite numbers; drop or fill the row)", HEADER + ROW1.replace("10.5", "nan") + ROW2),
    data("data_inf_price", "d.csv: row 2, column 'close': price is inf (OHLC must be finite numbers; drop or fill the row)", HEADER + ROW1 + ROW2.replace("10.8", "inf")),
    data("data_negative_volume", "d.csv: row 2, column 'volume': volume is -100 (it must be a number >= 0; write 0 for no trades)", HEADER + ROW1 + ROW2.replace(",100\n", ",-100\n")),
    data("data_negative_price", "d.csv: row 1, column 'low': price -9 is not positive", HEADER + ROW1.replace(",9,", ",-9,") + ROW2),
    data("data_high_below_low", "d.csv: row 2, column 'high': high 9 is below max(open, close) 10.8", HEADER + ROW1 + ROW2.replace("10.5,11,10", "10.5,9,10")),
    data("data_close_above_high", "d.csv: row 1, column 'high': high 11 is below max(open, close) 12", HEADER + ROW1.replace("10.5,100", "12,100") + ROW2),
    data("data_duplicate_timestamp", "d.csv: row 2, column 'timestamp': duplicate timestamp 2024-03-04 09:30:00-05:00 for AAA (also at row 1)", HEADER + ROW1 + ROW1),
    data("data_unsorted", "d.csv: row 2, column 'timestamp': timestamp 2024-03-04 09:30:00-05:00 for AAA is not after the previous bar at row 1 (sort the bars by symbol and time)", HEADER + ROW2 + ROW1),
    data("data_bad_timestamp", "d.csv: row 1, column 'timestamp': cannot parse timestamp '2024-03-04 9h30' (write ISO 8601 like 2024-01-02 09:30:00 or 2024-01-02T14:30:00Z)", HEADER + ROW1.replace("09:30:00", "9h30")),
    data("data_invalid_date", "d.csv: row 1, column 'timestamp': cannot parse timestamp '2024-02-30 09:30:00' (write ISO 8601 like 2024-01-02 09:30:00 or 2024-01-02T14:30:00Z)", HEADER + ROW1.replace("2024-03-04", "2024-02-30")),
    data("data_mixed_time_zones", "d.csv: row 2, column 'timestamp': timestamps mix values with and without a UTC offset (write all of them one way)", HEADER + ROW1.replace("09:30:00,", "14:30:00Z,") + ROW2),
    data("data_missing_symbol", "d.csv: row 1, column 'symbol': missing symbol", HEADER + ROW1.replace(",AAA,", ",,")),
    data("data_outside_session", "d.csv: row 1, column 'timestamp': bar at 2024-03-04 03:30:00 (AAA) is outside every XNYS session (use calendar: none for data outside exchange hours)", HEADER + ROW1.replace("09:30", "03:30")),
    data("data_on_weekend", "d.csv: row 1, column 'timestamp': bar at 2024-03-03 09:30:00 (AAA) is outside every XNYS session (use calendar: none for data outside exchange hours)", HEADER + ROW1.replace("2024-03-04", "2024-03-03")),
    data("data_first_line_64k", "d.csv: column 'timestamp': missing required column(s) timestamp, open, high, low, close, volume (found: xxxxxxxxxxxxxxxxxxxxxxxxxxx...; expected timestamp, symbol, open, high, low, close, volume, with symbol optional in a one-file-per-symbol layout)", "x" * 65536 + "\n" + ROW1),
    data("data_fifo", "pipe.csv: not a regular file (a FIFO, device or socket cannot be read as bars; copy the data into a file)", fifo, name="pipe.csv"),
    data("data_folder_empty", "dir: no CSV or Parquet files in this folder (expected *.csv or *.parquet)", folder_of(), name="dir"),
    data("data_folder_only_other_files", "dir: no CSV or Parquet files in this folder (expected *.csv or *.parquet)", folder_of(**{"notes.txt": "x"}), name="dir"),
    data("data_folder_mixed_columns", "dir/b.csv: column 'volume': missing required column(s) volume (found: timestamp, symbol, open, high, low, close, vol; expected timestamp, symbol, open, high, low, close, volume, with symbol optional in a one-file-per-symbol layout)", folder_of(**{"a.csv": BARS, "b.csv": BARS.replace(",volume", ",vol")}),
         name="dir"),
    data("data_path_dev_null", "/dev/null: not a regular file (a FIFO, device or socket cannot be read as bars; copy the data into a file)", None, path="/dev/null"),
    # ---------------------------------------------------------------- command-line flags
    cli("flag_unknown", "backtester: unrecognized arguments: --fast (see backtester --help)", "run", "c.yaml", "--fast"),
    cli("flag_n_jobs_text", "backtester run: argument --n-jobs: invalid int value: 'many' (see backtester run --help)", "run", "c.yaml", "--n-jobs", "many"),
    cli("flag_n_jobs_zero", "--n-jobs: expected a non-zero integer (-1 = all cores), got 0", "run", "c.yaml", "--n-jobs", "0"),
    cli("flag_backend_enum", "backtester run: argument --backend: invalid choice: 'gpu' (choose from 'auto', 'sequential', 'threading', 'loky', 'multiprocessing', 'dask') (see backtester run --help)", "run", "c.yaml", "--backend", "gpu"),
    cli("flag_cluster_by_enum", "--cluster-by: 'fortnight' is not a layout (use day, week, month, quarter, year, auto, {bars: N} or {count: N})", "run", "c.yaml", "--cluster-by", "fortnight"),
    cli("flag_cluster_by_bad_yaml", "--cluster-by: cannot read '{bars: 5' as a layout (write {bars: N} or {count: N})", "run", "c.yaml", "--cluster-by", "{bars: 5"),
    cli("flag_out_nul", "--out: 'o\\x00ut': a path cannot hold a NUL byte (choose another --out)", "run", "c.yaml", "--out", "o\x00ut"),
    cli("flag_address_malformed", "execution.address: cannot connect to the Dask scheduler at 'nowhere': missing port number in address 'nowhere' (check the address; it must be a scheduler you trust)", "run", "c.yaml", "--backend", "dask", "--address", "nowhere"),
    cli("flag_missing_config", "backtester run: the following arguments are required: config (see backtester run --help)", "run"),
    cli("command_unknown", "backtester: argument command: invalid choice: 'fly' (choose from 'run', 'validate', 'synth', 'scale', 'docs', 'regress', 'compare') (see backtester --help)", "fly"),
    cli("validate_bad_flag", "backtester: unrecognized arguments: --n-jobs 2 (see backtester --help)", "validate", "c.yaml", "--n-jobs", "2"),
    cli("synth_bad_start", "--start: expected a date like 2024-01-02, got 'yesterday'", "synth", "--out", "s.csv", "--start", "yesterday"),
    cli("synth_bad_seed", "backtester synth: argument --seed: invalid int value: 'x' (see backtester synth --help)", "synth", "--out", "s.csv", "--seed", "x"),
    cli("synth_unknown_calendar", "--calendar: unknown calendar 'XXXX' (use an exchange_calendars name such as XNYS, XNAS, XLON, XTKS, or 'none' to infer sessions from the bars)", "synth", "--out", "s.csv", "--calendar", "XXXX"),
    cli("synth_symbols_zero", "--symbols: expected at least 1 symbol, got 0", "synth", "--out", "s.csv", "--symbols", "0"),
    cli("synth_end_before_start", "--end: 2024-03-01 is before --start 2024-03-05 (swap them?)", "synth", "--out", "s.csv", "--start", "2024-03-05", "--end", "2024-03-01"),
    cli("compare_missing_folders", "a: not a result folder (expected alerts.csv, forward.csv, trades.csv, summary.json from `backtester run`)", "compare", "a", "b"),
]

# ------------------------------------------------------------------------ API arguments
# (id, keyword arguments of `backtester.api.run` on the standard config, expected message)
API_CASES: list[tuple[str, dict, str]] = [
    ("api_backend", {"backend": "gpu"}, "argument backend: 'gpu' is not one of auto, sequential, threading, loky, multiprocessing, dask"),
    ("api_n_jobs_zero", {"n_jobs": 0}, "argument n_jobs: expected a non-zero integer (-1 = all cores), got 0"),
    ("api_n_jobs_text", {"n_jobs": "many"}, "argument n_jobs: expected a non-zero integer (-1 = all cores), got 'many'"),
    ("api_n_jobs_float", {"n_jobs": 1.5}, "argument n_jobs: expected a non-zero integer (-1 = all cores), got 1.5"),
    ("api_cluster_by", {"cluster_by": "fortnight"}, "argument cluster_by: 'fortnight' is not a layout (use day, week, month, quarter, year, auto, {bars: N} or {count: N})"),
    ("api_cluster_by_negative", {"cluster_by": {"bars": -1}}, "argument cluster_by: expected a positive integer, got -1"),
    ("api_cluster_by_text", {"cluster_by": "{bars: 5"}, "argument cluster_by: cannot read '{bars: 5' as a layout (write {bars: N} or {count: N})"),
    ("api_cluster_by_list", {"cluster_by": [1]}, "argument cluster_by: [1] is not a layout (use day, week, month, quarter, year, auto, {bars: N} or {count: N})"),
    ("api_out_nul", {"out": "a\0b"}, "argument out: 'a\\x00b': a path cannot hold a NUL byte (choose another out=)"),
    ("api_out_number", {"out": 5}, "argument out: expected a folder path, got int 5"),
    ("api_address_number", {"address": 7}, "argument address: expected a non-empty string, got int 7"),
    ("api_compare_sequential_text", {"compare_sequential": "yes"}, "argument compare_sequential: expected true or false, got 'yes'"),
    ("api_config_number", {"config": 42}, "<argument>: config: expected a config file path, a mapping or a Config, got int 42"),
    ("api_config_none", {"config": None}, "<argument>: config: expected a config file path, a mapping or a Config, got nothing"),
    ("api_config_list", {"config": [1]}, "<argument>: config: expected a config file path, a mapping or a Config, got a list"),
]
