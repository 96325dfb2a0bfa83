"""Fuzzing the two front doors, the rule parser and the config loader: whatever the input, the
result is a parsed rule or config, or one `BacktestError` of one bounded line; never another
exception, a hang or a second line.

Inputs come from grammars of the real vocabulary (fields, indicators, functions, every config
section and key), then are mutated: a subtree swapped for a value of any type, characters
inserted, deleted or replaced in the text. Hypothesis shrinks a failure to a small input and
keeps it in its example database, so it is replayed first on the next run. The budget is
`FUZZ_EXAMPLES` examples per test: small in `make test`, large in `make fuzz`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtester import expr, indicators
from backtester.config import Config, load_config
from backtester.errors import BacktestError
from backtester.plan import compile_plan

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
MAX_MESSAGE = 1000   # characters: a message quotes only short excerpts of user data


def assert_one_bounded_line(error: BacktestError) -> None:
    text = str(error)
    assert text and "\n" not in text and "\r" not in text, repr(text)
    assert len(text) <= MAX_MESSAGE, text[:200]
    assert "Traceback" not in text


# ------------------------------------------------------------------------ rules

NAMES = sorted(expr.FIELDS) + sorted(expr.FUNCTIONS) + sorted(indicators.REGISTRY) + [
    "d1", "d2", "true", "false", "__class__", "__import__", "lambda", "None", "os", "x"]
NUMBERS = st.one_of(st.integers(-3, 300).map(str), st.sampled_from(
    ["0", "1.5", "1e308", "1e999", "-0", ".5", "2.5%", "0.1%", "9" * 40, "nan", "inf"]))
DEFINES = {"d1": "close - open", "d2": "rsi(14) < 30 or d1 > 0"}


def calls(args):
    name = st.sampled_from(sorted(expr.FUNCTIONS) + sorted(indicators.REGISTRY) + ["foo", "eval"])
    keyword = st.sampled_from(["", "", "period=", "default=", "max_bars=", "k=", "x="])
    arg = st.tuples(keyword, args).map("".join)
    output = st.sampled_from(["", "", ".signal", ".lower", ".upper", ".k", ".nope", ".__dict__"])
    return st.tuples(name, st.lists(arg, max_size=4), output).map(
        lambda t: f"{t[0]}({', '.join(t[1])}){t[2]}")


def combine(parts):
    binary = st.sampled_from([" + ", " - ", " * ", " / ", " ** ", " < ", " <= ", " > ", " >= ",
                              " == ", " != ", " and ", " or ", " % ", " // ", " & "])
    return st.one_of(
        calls(parts),
        st.tuples(parts, binary, parts).map("".join),
        parts.map(lambda p: f"({p})"), parts.map(lambda p: f"not {p}"),
        parts.map(lambda p: f"-{p}"))


RULES = st.recursive(st.one_of(st.sampled_from(NAMES), NUMBERS), combine, max_leaves=12)


@st.composite
def mutated(draw, texts, alphabet=None):
    """A text from `texts` with a few characters inserted, deleted or replaced."""
    text = draw(texts)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        what = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(st.text(alphabet=alphabet, min_size=1, max_size=3))
        if what == "insert":
            text = text[:at] + char + text[at:]
        elif what == "delete":
            text = text[:at] + text[at + 1:]
        else:
            text = text[:at] + char + text[at + len(char):]
    return text


RULE_CHARS = st.sampled_from(list("()[]{}.,:;+-*/%<>=!&|^~@'\"#\\ \t\n_0123456789aeiz") +
                             ["\x00", "\u202e", "é", "\ufeff"])


@FUZZ
@given(st.one_of(RULES, mutated(RULES, RULE_CHARS)))
def test_any_rule_parses_or_is_one_line_error(text):
    try:
        node = expr.parse(text, source="fuzz.yaml", field="alerts[0].when", defines=DEFINES)
    except BacktestError as error:
        assert_one_bounded_line(error)
        assert str(error).startswith("fuzz.yaml: alerts[0].when: ")
        return
    assert isinstance(node, expr.Node)
    assert len(expr._src(node)) <= expr._SHOWN
    expr.warmup(node)


# ------------------------------------------------------------------------ configs

def any_value(leaves=None):
    leaves = leaves or st.one_of(
        st.none(), st.booleans(), st.integers(-10**12, 10**12),
        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
        st.sampled_from(["", "auto", "09:30", "25:00", "2024-02-30", "30min", "99999999999d",
                         "5 bars", "-1", "close > 1", "month", "{bars: 5}", "XNYS", "UTC"]))
    return st.recursive(leaves, lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.dictionaries(st.text(max_size=8), kids, max_size=3)), max_leaves=6)


VALID = {
    "name": "fuzz",
    "data": {"path": "bars.csv", "symbols": ["AAA"], "start": "2024-03-04", "end": "2024-03-05",
             "timezone": "America/New_York", "calendar": "XNYS", "bar_stamp": "open"},
    "define": {"d1": "close - open"},
    "alerts": [{"name": "a", "when": "rsi(14) < 30 and d1 > 0", "between": ["09:30", "10:30"],
                "days": ["mon", "fri"], "skip_first": 5, "skip_last": "15min",
                "exclude_dates": ["2024-03-15"], "cooldown": "30min", "once_per_day": False,
                "rearm_when": "rsi(14) > 50", "forward": [5, "30min", "eod"],
                "trade": {"side": "long", "entry": "next_open", "take_profit": "1%",
                          "stop_loss": "0.5%", "max_bars": 60, "exit_when": "rsi(14) > 70"}}],
    "schedule": {"cluster_by": "month"},
    "execution": {"backend": "sequential", "n_jobs": 1, "compare_sequential": False,
                  "batch_size": "auto"},
    "output": {"dir": "out"},
    "stats": {"bootstrap": 0, "periods_per_year": 252},
}


def paths(value, prefix=()):
    """Every path (tuple of keys and indices) into `value`."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from paths(child, (*prefix, i))


ALL_PATHS = [p for p in paths(VALID) if p]


def replaced(value, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        out = dict(value)
        if new is _DROP and not rest:
            out.pop(head, None)
        else:
            out[head] = replaced(value[head], rest, new)
        return out
    out = list(value)
    if new is _DROP and not rest:
        del out[head]
    else:
        out[head] = replaced(value[head], rest, new)
    return out


_DROP = object()


@st.composite
def configs(draw):
    """The valid config with one to three subtrees replaced by any value or dropped."""
    config = VALID
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from([p for p in paths(config) if p]))
        try:
            config = replaced(config, path, draw(st.one_of(st.just(_DROP), any_value())))
        except (KeyError, IndexError, TypeError):   # an earlier change removed the path
            pass
    return config


def yaml_text(config) -> str:
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


YAML_CHARS = st.sampled_from(list(":-[]{},&*!|>'\"%@`#? \t\n0aZ") + ["\x00", "\x85", "\ufeff"])
FOLDER = Path(tempfile.mkdtemp(prefix="backtester-fuzz-"))
(FOLDER / "bars.csv").write_text("timestamp,symbol,open,high,low,close,volume\n"
                                 "2024-03-04 09:30:00,AAA,10,11,9,10.5,100\n", encoding="utf-8")


def load_and_compile(text: str) -> Config | None:
    path = FOLDER / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        config = load_config(path)
        compile_plan(config)
    except BacktestError as error:
        assert_one_bounded_line(error)
        assert str(error).startswith(f"{path}: ") or str(error).startswith(str(path))
        return None
    return config


@FUZZ
@given(configs())
def test_any_config_structure_loads_or_is_one_line_error(config):
    load_and_compile(yaml_text(config))


@FUZZ
@given(mutated(st.just(yaml_text(VALID)), YAML_CHARS))
def test_any_config_text_loads_or_is_one_line_error(text):
    load_and_compile(text)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(VALID) + ["extra"]), any_value(), max_size=8))
def test_any_mapping_given_to_the_api_loads_or_is_one_line_error(raw):
    try:
        compile_plan(load_config(raw))
    except BacktestError as error:
        assert_one_bounded_line(error)


def test_the_unmutated_config_is_valid():
    """The fuzz starts from a config that loads, so its mutations probe one fault at a time."""
    assert load_and_compile(yaml_text(VALID)) is not None
    assert ALL_PATHS
