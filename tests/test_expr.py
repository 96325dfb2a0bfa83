"""The rule language: whitelist parsing, errors that point into the text, three-valued logic."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtester import expr
from backtester.errors import ConfigError


def ctx_of(close, **extra):
    close = np.asarray(close, dtype=np.float64)
    arrays = {"open": close, "high": close, "low": close, "close": close,
              "volume": np.ones_like(close), "session": np.zeros(len(close), np.int64),
              "minute_of_day": np.zeros(len(close), np.int64),
              "timestamp": np.arange(len(close), dtype=np.int64)}
    arrays.update({k: np.asarray(v, dtype=np.float64) for k, v in extra.items()})
    return expr.Context(arrays)


def value(text, ctx, **kw):
    node = expr.parse(text, **kw)
    return expr.evaluate([node], ctx)[node]


def test_equal_subexpressions_are_one_node():
    a = expr.parse("rsi(14) < 30 and rsi(14) > 10")
    rsi_nodes = {n for n in expr.walk(a) if isinstance(n, expr.Ind)}
    assert len(rsi_nodes) == 1
    assert expr.parse("sma(close, 20)") == expr.parse("sma(20)") or \
        str(expr.parse("sma(close, 20)")).startswith("sma(")


def test_chained_comparison_is_a_conjunction():
    ctx = ctx_of([10, 25, 35])
    np.testing.assert_array_equal(value("20 < close < 30", ctx), [0, 1, 0])


def test_percent_literal_is_a_fraction():
    ctx = ctx_of([1.0])
    np.testing.assert_allclose(value("close * 1.5%", ctx), [0.015])
    np.testing.assert_allclose(value("close * 2 %", ctx), [0.02])


def test_three_valued_logic_never_fires_on_unknown():
    ctx = ctx_of([np.nan, 1.0, 5.0])
    np.testing.assert_array_equal(value("not (close < 3)", ctx), [np.nan, 0, 1])
    # false and unknown = false; true or unknown = true
    np.testing.assert_array_equal(value("close < 3 and false", ctx), [0, 0, 0])
    np.testing.assert_array_equal(value("close < 3 or true", ctx), [1, 1, 1])
    np.testing.assert_array_equal(value("close < 3 and true", ctx), [np.nan, 1, 0])
    assert not expr.is_true(value("not (close < 3)", ctx))[0]


def test_division_by_zero_is_missing_not_infinite():
    ctx = ctx_of([0.0, 2.0])
    np.testing.assert_array_equal(value("1 / close > 0", ctx), [np.nan, 1])


def test_crosses_above_fires_exactly_at_the_cross_bar():
    # a crosses above b at bar 3 (equal at bar 2 is not above; Pine's ta.crossover)
    ctx = ctx_of([0, 0, 0, 0, 0, 0], a=[1, 2, 3, 4, 3, 5], b=[3, 3, 3, 3, 3, 3])
    # The fields a/b are not rule fields; evaluate the function on raw arrays instead.
    spec = expr.FUNCTIONS["crosses_above"]
    out = spec.evaluate([ctx._arrays["a"], ctx._arrays["b"]], (), ctx)
    np.testing.assert_array_equal(out, [np.nan, 0, 0, 1, 0, 1])


def test_crosses_below_and_prev_on_close():
    ctx = ctx_of([5, 4, 3, 2, 3, 1])
    np.testing.assert_array_equal(value("crosses_below(close, 3)", ctx), [np.nan, 0, 0, 1, 0, 1])
    np.testing.assert_array_equal(value("prev(close, 2)", ctx), [np.nan, np.nan, 5, 4, 3, 2])
    np.testing.assert_array_equal(value("change(close, 1)", ctx), [np.nan, -1, -1, -1, 1, -2])


def test_window_functions_on_known_bars():
    ctx = ctx_of([1, 2, 3, 2, 3, 4, 5])
    np.testing.assert_array_equal(value("rising(close, 2)", ctx), [np.nan, np.nan, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(value("count(close > 2, 3)", ctx),
                                  [np.nan, np.nan, 1, 1, 2, 2, 3])
    np.testing.assert_array_equal(value("within(close == 2, 2)", ctx),
                                  [np.nan, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(value("held(close >= 3, 2)", ctx),
                                  [np.nan, 0, 0, 0, 0, 1, 1])


def test_warmup_of_nested_calls_adds_up():
    rsi_bars, _ = expr.warmup(expr.parse("rsi(14)"))
    sma_rsi, _ = expr.warmup(expr.parse("sma(rsi(14), 5)"))
    assert sma_rsi >= rsi_bars + 4
    assert expr.warmup(expr.parse("prev(close, 7) > 1")) == (7, 0)
    both = expr.warmup(expr.parse("rsi(14) < 30 and prev(close, 3) > 1"))
    assert both[0] == rsi_bars


def test_definitions_are_substituted_and_cycles_reported():
    node = expr.parse("oversold and close > 1", defines={"oversold": "rsi(14) < 30"})
    assert "rsi(14) < 30" in str(node)
    with pytest.raises(ConfigError, match="definition cycle a -> b -> a"):
        expr.parse("a", defines={"a": "b", "b": "a"})


def test_a_cycle_behind_an_already_parsed_definition_is_still_reported():
    # `base` is parsed (and kept) through `left` before `right` walks into the cycle.
    defines = {"base": "close", "left": "base + 1", "right": "base + loop", "loop": "right"}
    with pytest.raises(ConfigError, match="definition cycle right -> loop -> right"):
        expr.parse("left + right > 0", defines=defines)


def chain_of_definitions(levels):
    """d0 = close; each next level uses the one before twice: 2**levels paths, levels + 1 nodes."""
    return {"d0": "close", **{f"d{i}": f"d{i - 1} + d{i - 1}" for i in range(1, levels + 1)}}


@pytest.mark.parametrize("levels", [2, 40])
def test_a_definition_used_twice_is_one_shared_node_even_forty_levels_deep(levels):
    node = expr.parse_condition(f"d{levels} > 0", defines=chain_of_definitions(levels))
    sums = [n for n in expr.walk(node) if isinstance(n, expr.Arith)]
    assert len(sums) == levels
    assert all(n.left is n.right for n in sums)


def test_forty_levels_of_definitions_compute_each_level_once():
    node = expr.parse("d40 / 2 ** 40 > 0.5", defines=chain_of_definitions(40))
    values = expr.evaluate([node], ctx_of([0.25, 1.0]))
    np.testing.assert_array_equal(values[node], [0, 1])
    assert len(values) == len(list(expr.walk(node))) < 50  # one array per distinct node


def test_pickled_nodes_carry_no_process_specific_hash():
    node = expr.parse("rsi(14) < 30 and close > sma(50)")
    hash(node)
    copy = pickle.loads(pickle.dumps(node))
    assert "_hash" not in copy.__dict__      # string hashes differ between processes
    assert copy == node and {node: 1}[copy] == 1


@pytest.mark.parametrize("name, why", [
    ("close", "is a bar field"), ("hl2", "is a bar field"), ("day_open", "is a function"),
    ("prev", "is a function"), ("rsi", "is an indicator"), ("vwap", "is an indicator"),
    ("true", "is a condition literal"), ("False", "is a condition literal"),
    ("and", "is a reserved word"), ("None", "is a reserved word"),
    ("__pct__", "is reserved for internal names"),
])
def test_definition_names_may_not_shadow_built_ins(name, why):
    with pytest.raises(ConfigError) as err:
        expr.parse("close > 1", source="c.yaml", defines={name: "close > 2"})
    assert str(err.value).startswith(f"c.yaml: define.{name}: '{name}' {why}")
    assert "cannot be redefined" in str(err.value)


@pytest.mark.parametrize("text", ["__pct__(close) > 1", "__pct__() > 1", "__pct__(x=1) > 1",
                                  "__pct__(1, 2) > 1", "__pct__(5) > 1", "__pct__(1.5%) > 1",
                                  "close > __pct__"])
def test_the_internal_percent_name_typed_by_a_user_is_unknown(text):
    with pytest.raises(ConfigError, match=r"^c.yaml: when: unknown (function|name) '__pct__'"):
        expr.parse(text, source="c.yaml")


@pytest.mark.parametrize("text, column", [("5 % 2 > 1", 3), ("5%2 > 1", 2), ("5 %(2) > 1", 3),
                                          ("close % 2 > 1", 7), ("1 < 7 % close", 7),
                                          ("5% x > 1", 2)])
def test_percent_sign_used_as_remainder_says_so(text, column):
    with pytest.raises(ConfigError) as err:
        expr.parse(text, source="c.yaml")
    assert str(err.value) == (f"c.yaml: when: '%' is not a remainder operator at column {column} "
                              "('%' is only a percent sign after a number: 2% is 0.02; rules have "
                              "no modulo)")


def test_percent_sign_before_a_keyword_or_operator_is_still_a_percent():
    ctx = ctx_of([0.5, 3.0, 10.0])
    np.testing.assert_array_equal(value("close > 2% * 100 and close < 5%*100", ctx), [0, 1, 0])
    np.testing.assert_array_equal(value("(close > 500%) or close < 60 %", ctx), [1, 0, 1])


@pytest.mark.parametrize("text, words", [
    ("rsii(14) < 30", "unknown function 'rsii' at column 1 (did you mean 'rsi'?)"),
    ("clse > 1", "unknown name 'clse' at column 1 (did you mean 'close'?)"),
    ("macd(12, 26, 9).signl > 0", "has no output 'signl'"),
    ("rsi(0) < 30", "rsi(0): period must be an integer >= 2, got 0 at column 1"),
    ("sma(2.5) > 1", "sma(2.5): period must be an integer"),
    ("close.__class__", "only allowed on an indicator call"),
    ("__import__('os')", "unknown function '__import__'"),
    ("(lambda: 1)()", "only named functions"),
    ("close[0] > 1", "subscripts are not allowed"),
    ("[x for x in close]", "comprehensions are not allowed"),
    ("'a' > 1", "str literals are not allowed"),
    ("close and 1", "expected a condition"),
    ("(close > 1) + 2", "expected a number"),
    ("prev(close, 1.5)", "must be an integer"),
])
def test_rejected_rules_say_why(text, words):
    with pytest.raises(ConfigError) as err:
        expr.parse_condition(text, source="c.yaml", field="alerts[0].when")
    assert str(err.value).startswith("c.yaml: alerts[0].when: ")
    assert words in str(err.value)


def test_syntax_error_points_a_caret_at_the_column():
    with pytest.raises(ConfigError) as err:
        expr.parse("rsi(14) < < 30", source="c.yaml", field="alerts[2].when")
    assert "at column" in str(err.value)
    assert err.value.detail.splitlines()[1].index("^") > 4


def test_rule_must_be_a_condition():
    with pytest.raises(ConfigError, match="is a number, not a condition"):
        expr.parse_condition("rsi(14)")


_ALPHABET = st.sampled_from(list("abcdefghijklmnopqrstuvwxyz_0123456789()[]{}.,:;+-*/%<>=!&|^~@'\" \n\t#\\"))
_TOKENS = st.sampled_from(["rsi(14)", "close", "sma(", ")", " and ", " or ", "not ", "<", ">",
                           "30", "1.5%", "macd(12, 26, 9)", ".signal", "__class__", "lambda",
                           "import os", "crosses_above(", ",", "prev(", "**", "[0]", "'x'",
                           "exec(", "open", "(", "define", "1e308", "-", "9" * 400,
                           "bars_since(", "value_when(", "default=", "max_bars=", "k=", "=",
                           "day_open", "prev_day_close", "minutes_to_close", "\n", "é", "**",
                           # internal names and the percent rewriting they come from
                           "__pct__(", "__pct__", "__pct__()", "__pct__(close)",
                           "__pct__(x=1)", "__pct__(1, 2)", "%", " % ", "5", "1e999", "x=", ".5",
                           "true", "None", "__import__(", "macd(12, 12, 9)", "rsi(0)"])


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.text(_ALPHABET, max_size=60), st.lists(_TOKENS, max_size=12).map("".join),
                 st.text(max_size=40)))
def test_fuzzed_rules_parse_or_raise_our_error_only(text):
    try:
        expr.parse(text, source="fuzz", field="when", defines={"define": "close > 1"})
    except ConfigError as err:
        assert str(err).startswith("fuzz: when")
        assert "\n" not in str(err) and " at column " in str(err)
        assert err.detail.splitlines()[-1].strip() == "^"
