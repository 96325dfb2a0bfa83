"""Config loading: typed values, and one-line errors naming the file and dotted field."""

import datetime as dt

import pandas as pd
import pytest

from backtester import expr
from backtester.cli import main
from backtester.config import Cooldown, load_config
from backtester.errors import ConfigError
from backtester.plan import compile_plan

BASE = {"name": "t", "data": {"path": "data/sample/bars_1min.parquet"},
        "alerts": [{"name": "a", "when": "rsi(14) < 30"}]}


def with_alert(**alert):
    return {**BASE, "alerts": [{"name": "a", "when": "rsi(14) < 30", **alert}]}


def test_minimal_dict_gets_documented_defaults():
    cfg = load_config(BASE)
    assert cfg.data.timezone == "America/New_York"
    assert cfg.data.calendar == "XNYS"
    assert cfg.schedule.cluster_by == "auto"
    assert cfg.execution.backend == "auto" and cfg.execution.n_jobs == -1
    assert cfg.output.dir == "results/t"
    assert cfg.source == "<dict>"


def test_yaml_file_values_are_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("""
name: x
data: {path: bars.csv, start: 2024-01-02, end: 2024-02-01, symbols: [AAA]}
alerts:
  - {name: a, when: "close > 1", between: ["09:30", "10:30"], cooldown: 30min,
     days: [mon, fri], skip_first: 5, skip_last: 10min}
schedule: {cluster_by: {bars: 5000}}
execution: {backend: threading, n_jobs: 2}
""")
    cfg = load_config(path)
    alert = cfg.alerts[0]
    assert cfg.data.start == dt.date(2024, 1, 2) and cfg.data.symbols == ("AAA",)
    assert alert.between == ((570, 630),)
    assert alert.cooldown == Cooldown(duration_ns=30 * 60 * 10**9)
    assert alert.days == (0, 4) and alert.skip_first == 5 and alert.skip_last == 10
    assert cfg.schedule.cluster_by == "bars" and cfg.schedule.size == 5000
    assert cfg.source == str(path) and len(cfg.content_hash) == 64


def test_cooldown_in_bars():
    assert load_config(with_alert(cooldown=10)).alerts[0].cooldown == Cooldown(bars=10)
    assert load_config(with_alert(cooldown="3 bars")).alerts[0].cooldown == Cooldown(bars=3)


@pytest.mark.parametrize("alert, field, words", [
    ({"cooldown": "soon"}, "alerts[0].cooldown", "expected a duration like '30min'"),
    ({"between": ["10:30", "09:30"]}, "alerts[0].between", "is not after start"),
    ({"between": ["9h", "10:00"]}, "alerts[0].between", "expected a time"),
    ({"days": ["funday"]}, "alerts[0].days[0]", "is not a weekday"),
    ({"whenn": "x"}, "alerts[0].whenn", "unknown key (did you mean 'when'?)"),
    ({"once_per_day": "yes"}, "alerts[0].once_per_day", "expected true or false"),
])
def test_bad_alert_field_is_named_in_one_line(alert, field, words):
    with pytest.raises(ConfigError) as err:
        load_config(with_alert(**alert))
    text = str(err.value)
    assert text.startswith(f"<dict>: {field}: ")
    assert words in text and "\n" not in text


@pytest.mark.parametrize("patch, field", [
    ({"schedule": {"cluster_by": "fortnight"}}, "schedule.cluster_by"),
    ({"execution": {"backend": "lokky"}}, "execution.backend"),
    ({"execution": {"n_jobs": 0}}, "execution.n_jobs"),
    ({"data": {"path": "x", "timezone": "Mars/Olympus"}}, "data.timezone"),
    ({"data": {"path": "x", "calendar": "XNYZ"}}, "data.calendar"),
    ({"data": {"path": "x", "start": "2024-02-01", "end": "2024-01-01"}}, "data.end"),
    ({"alerts": []}, "alerts"),
    ({"name": "a/b"}, "name"),
])
def test_bad_section_names_its_dotted_path(patch, field):
    with pytest.raises(ConfigError) as err:
        load_config({**BASE, **patch})
    assert str(err.value).startswith(f"<dict>: {field}: ")


def test_unknown_layout_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"use day, week, month, quarter, year, auto"):
        load_config({**BASE, "schedule": {"cluster_by": "fortnight"}})


def test_invalid_yaml_names_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nalerts: [\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: line ")


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)


def test_duplicate_alert_names_are_rejected():
    cfg = {**BASE, "alerts": [{"name": "a", "when": "close > 1"}, {"name": "a", "when": "close > 2"}]}
    with pytest.raises(ConfigError, match=r"alerts\[1\].name: duplicate alert name 'a'"):
        load_config(cfg)


def test_overrides_are_validated_like_file_values():
    cfg = load_config(BASE).with_overrides(backend="threading", n_jobs=2, out="elsewhere")
    assert (cfg.execution.backend, cfg.execution.n_jobs, cfg.output.dir) == \
        ("threading", 2, "elsewhere")
    with pytest.raises(ConfigError, match="execution.backend"):
        load_config(BASE).with_overrides(backend="gpu")


@pytest.mark.parametrize("patch, field, example", [
    ({"data": {"path": "x", "symbols": "SYNA"}}, "data.symbols", "[SYNA, SYNB]"),
    ({"alerts": [{"name": "a", "when": "close > 1", "forward": 5}]}, "alerts[0].forward",
     "[5, 15]"),
    ({"alerts": [{"name": "a", "when": "close > 1", "days": "mon"}]}, "alerts[0].days",
     "[mon, wed, fri]"),
    ({"alerts": [{"name": "a", "when": "close > 1", "exclude_dates": "2024-03-15"}]},
     "alerts[0].exclude_dates", "[2024-03-15, 2024-06-21]"),
])
def test_a_lone_value_where_a_list_belongs_is_an_error(patch, field, example):
    with pytest.raises(ConfigError) as err:
        load_config({**BASE, **patch})
    assert str(err.value).startswith(f"<dict>: {field}: expected a list like {example}, got ")
    assert str(err.value).endswith("for one value)")


def test_lists_of_one_are_read_as_written():
    cfg = load_config({**BASE, "data": {"path": "x", "symbols": ["SYNA"]},
                       "alerts": [{"name": "a", "when": "close > 1", "forward": [5],
                                   "days": ["mon"], "exclude_dates": ["2024-03-15"]}]})
    alert = cfg.alerts[0]
    assert cfg.data.symbols == ("SYNA",)
    assert [h.bars for h in alert.forward] == [5]
    assert alert.days == (0,) and alert.exclude_dates == (dt.date(2024, 3, 15),)


@pytest.mark.parametrize("name, why", [("close", "a bar field"), ("day_open", "a function"),
                                       ("rsi", "an indicator"), ("false", "a condition literal"),
                                       ("__pct__", "reserved for internal names")])
def test_a_definition_may_not_take_a_built_in_name(name, why):
    with pytest.raises(ConfigError) as err:
        load_config({**BASE, "define": {name: "close > 1"}})
    text = str(err.value)
    assert text.startswith(f"<dict>: define.{name}: '{name}' is {why}")
    assert "cannot be redefined" in text and "\n" not in text


@pytest.mark.parametrize("alert, message", [
    ({"name": "oversold", "when": "rsi(0) < 30"},
     "<dict>: alerts[0].when: alert 'oversold': rsi(0): period must be an integer >= 2, got 0 "
     "at column 1"),
    ({"name": "trend", "when": "close > 1", "rearm_when": "macd(12, 12, 9).hist > 0"},
     "<dict>: alerts[0].rearm_when: alert 'trend': macd(12, 12, 9): fast and slow must differ, "
     "got 12 for both at column 1 (the usual pair is fast=12, slow=26)"),
    ({"name": "bands", "when": "close < bbands(20, nbdev=-2).lower"},
     "<dict>: alerts[0].when: alert 'bands': bbands(20, nbdev=-2): nbdev must be a number >= 0, "
     "got -2 at column 9"),
])
def test_bad_indicator_parameters_name_the_alert_and_the_call_as_written(alert, message):
    with pytest.raises(ConfigError) as err:
        compile_plan(load_config({**BASE, "alerts": [alert]}))
    assert str(err.value) == message


def test_validate_prints_the_rules_their_shared_indicators_and_warmups(tmp_path, capsys):
    stamps = pd.date_range("2024-03-04 09:30", periods=30, freq="1min", tz="America/New_York")
    pd.DataFrame({"timestamp": stamps, "symbol": "HAND", "open": 100.0, "high": 100.5,
                  "low": 99.5, "close": 100.0, "volume": 100.0}).to_csv(tmp_path / "bars.csv",
                                                                       index=False)
    path = tmp_path / "c.yaml"
    path.write_text(f"""
name: demo
data: {{path: {tmp_path / 'bars.csv'}}}
define:
  oversold: "rsi(14) < 30"
alerts:
  - name: rebound
    when: bars_since(oversold, max_bars=20) <= 5 and close > sma(20)
    rearm_when: rsi(14) > 50
  - name: trend
    when: crosses_above(sma(rsi(14), 5), 50)
""")
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    rsi, sma_rsi = (expr.warmup(expr.parse(text))[0] for text in ("rsi(14)", "sma(rsi(14), 5)"))
    assert out[0].startswith(f"{path}: ok (2 alerts")
    assert out[1:] == [
        "alert rebound: bars_since(rsi(14) < 30, max_bars=20) <= 5 and close > sma(20)",
        f"  warm-up: {rsi + 20} bars",
        "  rearm when: rsi(14) > 50",
        "alert trend: crosses_above(sma(rsi(14), 5), 50)",
        f"  warm-up: {sma_rsi + 1} bars",
        "indicator graph (each computed once per cluster):",
        f"  rsi(14): warm-up {rsi} bars; used by rebound, trend",
        "  sma(20): warm-up 19 bars; used by rebound",
        f"  sma(rsi(14), 5): warm-up {sma_rsi} bars; used by trend",
        f"cluster halo: {max(rsi + 20, sma_rsi + 1)} bars before, 0 bars after",
    ]


def write_config(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_1_1_booleans_are_tickers_as_written(tmp_path):
    path = write_config(tmp_path, """
name: x
data: {path: bars.csv, symbols: [ON, YES, NO, OFF, Y, N, y, n, on]}
alerts: [{name: a, when: "close > 1", once_per_day: true}]
""")
    cfg = load_config(path)
    assert cfg.data.symbols == ("ON", "YES", "NO", "OFF", "Y", "N", "y", "n", "on")
    assert cfg.alerts[0].once_per_day is True


def test_yes_is_not_a_boolean(tmp_path):
    path = write_config(tmp_path, """
name: x
data: {path: bars.csv}
alerts: [{name: a, when: "close > 1", once_per_day: yes}]
""")
    with pytest.raises(ConfigError, match=r"alerts\[0\]\.once_per_day: expected true or false, "
                                          r"got 'yes'"):
        load_config(path)


def test_unquoted_times_stay_times(tmp_path):
    # YAML 1.1 reads 10:30 as 10 * 60 + 30 = 630 and 9:30 as 570: minutes by accident.
    path = write_config(tmp_path, """
name: x
data: {path: bars.csv}
alerts: [{name: a, when: "close > 1", between: [[9:30, 10:30], [13:05, 14:00]]}]
""")
    assert load_config(path).alerts[0].between == ((9 * 60 + 30, 10 * 60 + 30),
                                                   (13 * 60 + 5, 14 * 60))


def test_a_number_is_not_a_time():
    with pytest.raises(ConfigError, match=r"alerts\[0\]\.between\[0\]: expected a time like "
                                          r"\"09:30\", got 630"):
        load_config(with_alert(between=[["09:30", 630]]))


def test_yaml_1_2_numbers(tmp_path):
    # 1.2: 010 is ten (1.1: octal 8); 1_000 is not a number (1.1: 1000).
    path = write_config(tmp_path, """
name: x
data: {path: bars.csv}
alerts: [{name: a, when: "close > 1", cooldown: 010, skip_first: 1_000}]
""")
    with pytest.raises(ConfigError, match=r"alerts\[0\]\.skip_first: .*got '1_000'"):
        load_config(path)
    path.write_text(path.read_text().replace("1_000", "15"))
    assert load_config(path).alerts[0].cooldown == Cooldown(bars=10)


def test_duplicate_key_names_its_line(tmp_path):
    path = write_config(tmp_path, """name: x
data:
  path: bars.csv
  symbols: [AAA]
  symbols: [BBB]
alerts: [{name: a, when: "close > 1"}]
""")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line 5: duplicate key 'symbols', first at line 4 (")
    assert "\n" not in message


def test_duplicate_key_exits_2_with_one_line(tmp_path, capsys):
    path = write_config(tmp_path, "name: x\nname: y\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{path}: line 2: duplicate key 'name', first at line 1 (a later value would "
                   "silently replace the first; keep one)"]


@pytest.mark.parametrize("text, minutes", [
    ("30m", 30), ("30min", 30), ("30 mins", 30), ("0.5h", 30), ("1.5h", 90), ("1800s", 30),
    ("1d", 1440),
])
def test_cooldown_and_forward_read_one_duration_grammar(text, minutes):
    cfg = load_config(with_alert(cooldown=text, forward=[text]))
    alert = cfg.alerts[0]
    assert alert.cooldown == Cooldown(duration_ns=minutes * 60 * 10**9)
    assert alert.forward[0].duration_ns == minutes * 60 * 10**9


def test_skip_first_reads_the_same_grammar():
    assert load_config(with_alert(skip_first="0.25h")).alerts[0].skip_first == 15
