"""Bracket-trade rules on hand-made bars with known answers, spec parsing and the
one-position-at-a-time pass."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtester.errors import ConfigError
from backtester.trades import (
    REASONS,
    Commission,
    Level,
    TradeSpec,
    lookahead,
    parse_trade,
    select_non_overlapping,
    simulate,
)

MINUTE = 60_000_000_000


def bars(rows, session=None):
    """Arrays from (open, high, low, close) rows, one minute apart."""
    data = np.asarray(rows, dtype=np.float64)
    n = len(data)
    return {
        "timestamp": np.arange(n, dtype=np.int64) * MINUTE,
        "open": data[:, 0], "high": data[:, 1], "low": data[:, 2], "close": data[:, 3],
        "session": np.zeros(n, np.int32) if session is None else np.asarray(session, np.int32),
    }


def run(spec, rows, signals=(0,), session=None, data_end=True, **kwargs):
    result = simulate(spec, np.asarray(signals, dtype=np.int64), **bars(rows, session),
                      data_end=data_end, **kwargs)
    result["reason_name"] = [REASONS[code] for code in result["reason"]]
    return result


BRACKET = TradeSpec(take_profit=Level("percent", 0.01), stop_loss=Level("percent", 0.01),
                    max_bars=10)
FLAT = (100.0, 100.2, 99.8, 100.0)


# ---- exit rules ------------------------------------------------------------------------------

def test_take_profit_touched_fills_at_the_level():
    r = run(BRACKET, [FLAT, FLAT, (100, 100.5, 99.5, 100), (100, 101.2, 99.5, 101)])
    assert r["reason_name"] == ["tp"]
    assert r["entry_idx"][0] == 1 and r["exit_idx"][0] == 3
    assert r["exit_price"][0] == pytest.approx(101.0)
    assert r["gross_return"][0] == pytest.approx(0.01)
    assert r["bars_held"][0] == 3


def test_stop_loss_touched_fills_at_the_level():
    r = run(BRACKET, [FLAT, FLAT, (100, 100.5, 98.9, 99)])
    assert r["reason_name"] == ["sl"]
    assert r["exit_price"][0] == pytest.approx(99.0)
    assert r["mae"][0] == pytest.approx(-0.01)


def test_both_levels_in_one_bar_takes_the_stop_and_flags_it():
    r = run(BRACKET, [FLAT, FLAT, (100, 101.5, 98.5, 100)])
    assert r["reason_name"] == ["sl"]
    assert r["exit_price"][0] == pytest.approx(99.0)
    assert r["both_touched"].tolist() == [True]


def test_gap_through_the_stop_fills_at_the_open():
    r = run(BRACKET, [FLAT, FLAT, (97.0, 97.5, 96.0, 97.2)])
    assert r["reason_name"] == ["sl_gap"]
    assert r["exit_price"][0] == 97.0
    assert r["bars_held"][0] == 1  # the entry bar; the gap bar is left at its open


def test_gap_through_the_target_fills_at_the_open_even_if_the_bar_then_falls():
    r = run(BRACKET, [FLAT, FLAT, (102.0, 102.5, 98.0, 99.0)])
    assert r["reason_name"] == ["tp_gap"]
    assert r["exit_price"][0] == 102.0
    assert not r["both_touched"][0]


def test_time_exit_at_the_open_after_max_bars_wins_over_a_level_touched_later_that_bar():
    spec = TradeSpec(take_profit=Level("percent", 0.01), stop_loss=Level("percent", 0.01),
                     max_bars=2)
    # entry bar 1, held bars 1 and 2; bar 3 opens inside the bracket and then hits the stop
    r = run(spec, [FLAT, FLAT, FLAT, (100.3, 100.4, 98.0, 98.5)])
    assert r["reason_name"] == ["time"]
    assert r["exit_idx"][0] == 3 and r["exit_price"][0] == 100.3
    assert r["bars_held"][0] == 2


def test_session_close_exits_at_the_close_of_the_sessions_last_bar():
    spec = TradeSpec(session_close=True)
    rows = [FLAT, FLAT, (100, 100.6, 99.9, 100.5), FLAT, FLAT]
    r = run(spec, rows, session=[0, 0, 0, 1, 1])
    assert r["reason_name"] == ["session_close"]
    assert r["exit_idx"][0] == 2 and r["exit_price"][0] == 100.5
    assert r["bars_held"][0] == 2


def test_session_close_with_max_bars_takes_whichever_comes_first():
    spec = TradeSpec(session_close=True, max_bars=1)
    r = run(spec, [FLAT, FLAT, (100.1, 100.2, 99.9, 100), FLAT], session=[0, 0, 0, 0])
    assert r["reason_name"] == ["time"] and r["exit_idx"][0] == 2


def test_close_entry_on_the_sessions_last_bar_exits_at_that_close():
    spec = TradeSpec(entry="close", session_close=True)
    r = run(spec, [FLAT, FLAT, FLAT], signals=[1], session=[0, 0, 1])
    assert r["reason_name"] == ["session_close"]
    assert r["entry_idx"][0] == r["exit_idx"][0] == 1
    assert r["bars_held"][0] == 0


def test_stops_on_entry_bar_false_ignores_the_entry_bars_own_range():
    rows = [FLAT, (100, 100.2, 98.0, 99.5), (99.5, 99.6, 99.4, 99.5)]
    assert run(BRACKET, rows)["reason_name"] == ["sl"]
    spec = TradeSpec(take_profit=Level("percent", 0.01), stop_loss=Level("percent", 0.01),
                     max_bars=1, stops_on_entry_bar=False)
    r = run(spec, rows)
    assert r["reason_name"] == ["time"] and r["exit_price"][0] == 99.5
    assert r["mae"][0] == pytest.approx(-0.02)  # the entry bar was still held


def test_bracket_from_signal_close_measures_levels_from_the_signal_bars_close():
    spec = TradeSpec(take_profit=Level("percent", 0.01), stop_loss=Level("percent", 0.01),
                     max_bars=5, bracket_from="signal_close")
    # signal close 100 -> TP 101, even though the fill is at 100.5
    r = run(spec, [FLAT, (100.5, 101.1, 100.4, 101.0)])
    assert r["reason_name"] == ["tp"] and r["exit_price"][0] == pytest.approx(101.0)
    # a fill that opens beyond the signal-close target exits at once, at the fill
    r = run(spec, [FLAT, (101.5, 101.6, 101.0, 101.2)])
    assert r["reason_name"] == ["tp_gap"] and r["exit_idx"][0] == 1
    assert r["bars_held"][0] == 0 and r["gross_return"][0] == 0.0


def test_short_side_mirrors_the_levels():
    spec = TradeSpec(side="short", take_profit=Level("percent", 0.01),
                     stop_loss=Level("percent", 0.01), max_bars=5)
    r = run(spec, [FLAT, FLAT, (100, 100.3, 98.9, 99)])
    assert r["reason_name"] == ["tp"] and r["exit_price"][0] == pytest.approx(99.0)
    assert r["gross_return"][0] == pytest.approx(0.01)
    r = run(spec, [FLAT, FLAT, (100, 101.2, 99.9, 101)])
    assert r["reason_name"] == ["sl"] and r["gross_return"][0] == pytest.approx(-0.01)
    assert r["mfe"][0] == pytest.approx(0.002) and r["mae"][0] == pytest.approx(-0.01)


def test_atr_levels_use_the_atr_at_the_signal_bar():
    spec = TradeSpec(take_profit=Level("atr", 2.0, 3), stop_loss=Level("atr", 1.0, 3), max_bars=5)
    atr = {3: np.array([0.5, 5.0, 5.0])}
    r = run(spec, [FLAT, FLAT, (100, 101.1, 99.6, 101)], atr=atr)
    assert r["reason_name"] == ["tp"] and r["exit_price"][0] == pytest.approx(101.0)


def test_absolute_price_levels():
    spec = TradeSpec(take_profit=Level("price", 0.5), stop_loss=Level("price", 0.25), max_bars=5)
    r = run(spec, [FLAT, FLAT, (100, 100.2, 99.7, 99.8)])
    assert r["reason_name"] == ["sl"] and r["exit_price"][0] == pytest.approx(99.75)


def test_trailing_stop_follows_the_high_after_the_bar_and_exits_on_a_pullback():
    spec = TradeSpec(trailing_stop=Level("percent", 0.01), max_bars=10)
    rows = [FLAT, (100, 100.1, 99.5, 100),        # entry 100, trail 99 (not touched)
            (100, 103.0, 99.2, 102.5),            # new high 103; trail moves to 101.97 after
            (102.5, 102.8, 101.5, 102)]           # low 101.5 < 101.97 -> trail
    r = run(spec, rows)
    assert r["reason_name"] == ["trail"]
    assert r["exit_price"][0] == pytest.approx(103.0 * 0.99)
    assert r["exit_idx"][0] == 3


def test_trailing_stop_is_not_triggered_by_the_bar_that_made_the_new_high():
    spec = TradeSpec(trailing_stop=Level("percent", 0.01), max_bars=2)
    # high 105 then low 103 in the same bar: 103 < 105 * 0.99 but the order is unknown
    r = run(spec, [FLAT, FLAT, (103.2, 105, 103, 104), (104, 104.1, 103.9, 104)])
    assert r["reason_name"] == ["time"]


def test_trail_after_arms_the_trailing_stop_only_after_the_given_profit():
    spec = TradeSpec(trailing_stop=Level("percent", 0.005), trail_after=Level("percent", 0.02),
                     max_bars=10)
    rows = [FLAT, FLAT, (100, 101, 99.0, 100.5),   # would hit a 0.5% trail, but not armed
            (100.5, 102.5, 100.5, 102),            # +2.5% arms it; trail = 102.5 * 0.995
            (102, 102.1, 101.9, 102)]              # low 101.9 < 101.9875 -> trail
    r = run(spec, rows)
    assert r["reason_name"] == ["trail"] and r["exit_idx"][0] == 4
    assert r["exit_price"][0] == pytest.approx(102.5 * 0.995)


def test_trail_gap_fills_at_the_open_and_the_tighter_of_stop_and_trail_applies():
    spec = TradeSpec(trailing_stop=Level("percent", 0.01), stop_loss=Level("percent", 0.05),
                     max_bars=10)
    r = run(spec, [FLAT, FLAT, (100, 104, 99.5, 103.5), (101.0, 101.5, 100.5, 101)])
    assert r["reason_name"] == ["trail"] and r["exit_price"][0] == 101.0


def test_exit_when_true_at_a_bar_exits_at_the_next_open():
    spec = TradeSpec(exit_when="rsi(14) > 70", max_bars=10)
    mask = np.array([True, False, True, False, False])  # the signal bar's own flag is ignored
    r = run(spec, [FLAT, FLAT, FLAT, (100.7, 101, 100, 100.5), FLAT], exit_signal=mask)
    assert r["reason_name"] == ["signal"]
    assert r["exit_idx"][0] == 3 and r["exit_price"][0] == 100.7
    assert r["bars_held"][0] == 2


def test_entry_on_close_fills_at_the_signal_close_and_checks_from_the_next_bar():
    spec = TradeSpec(entry="close", take_profit=Level("percent", 0.01), max_bars=1)
    r = run(spec, [(99, 99.5, 98, 100), (100.2, 101.5, 100, 101)])
    assert r["entry_idx"][0] == 0 and r["entry_price"][0] == 100.0
    assert r["reason_name"] == ["tp"] and r["exit_idx"][0] == 1


def test_max_bars_counts_held_bars_so_both_entries_exit_at_the_same_open():
    # entry: close fills at bar 0's close and is exposed from bar 1 on; next_open fills at
    # bar 1's open. Both hold bars 1 and 2 and leave at bar 3's open (docs/trades.md).
    rows = [FLAT, FLAT, FLAT, (100.3, 100.4, 99.9, 100), FLAT]
    for entry in ("close", "next_open"):
        r = run(TradeSpec(entry=entry, max_bars=2), rows)
        assert r["reason_name"] == ["time"], entry
        assert r["exit_idx"][0] == 3 and r["exit_price"][0] == 100.3, entry
        assert r["bars_held"][0] == 2, entry


def test_exit_when_counts_from_the_first_close_after_the_fill():
    mask = np.array([True, True, False, False, False])
    # entry: close at bar 0's close: the exit flag of that same close (the entry decision's
    # bar) is not acted on; bar 1's flag is, at bar 2's open
    r = run(TradeSpec(entry="close", exit_when="x", max_bars=10), [FLAT] * 5, exit_signal=mask)
    assert r["reason_name"] == ["signal"] and r["exit_idx"][0] == 2
    # next_open at bar 1's open: bar 1 is held, so its close's flag exits at bar 2's open
    r = run(TradeSpec(exit_when="x", max_bars=10), [FLAT] * 5, exit_signal=mask)
    assert r["reason_name"] == ["signal"] and r["exit_idx"][0] == 2 and r["bars_held"][0] == 1


def test_commission_and_slippage_are_charged_on_both_fills():
    spec = TradeSpec(max_bars=1, slippage=Level("percent", 0.001),
                     commission=Commission(per_share=0.01, percent=0.001, minimum=0.5),
                     quantity=100)
    r = run(spec, [FLAT, FLAT, (110, 110, 110, 110)])
    entry, exit_ = 100 * 1.001, 110 * 0.999
    assert r["entry_price"][0] == pytest.approx(entry)
    assert r["exit_price"][0] == pytest.approx(exit_)
    costs = max(0.5, 100 * (0.01 + 0.001 * entry)) + max(0.5, 100 * (0.01 + 0.001 * exit_))
    assert r["net_return"][0] == pytest.approx(exit_ / entry - 1 - costs / (entry * 100))


def test_commission_minimum_applies_to_small_fills():
    spec = TradeSpec(max_bars=1, commission=Commission(minimum=1.0))
    r = run(spec, [FLAT, FLAT, FLAT])
    assert r["net_return"][0] == pytest.approx(-2.0 / 100)


def test_trade_running_off_the_data_exits_at_the_last_close():
    r = run(TradeSpec(max_bars=10), [FLAT, FLAT, (100, 100.5, 99.9, 100.4)])
    assert r["reason_name"] == ["end_of_data"] and r["exit_price"][0] == 100.4
    assert r["bars_held"][0] == 2


def test_halo_too_short_is_an_error_not_a_shortened_trade():
    with pytest.raises(ValueError, match="halo"):
        run(TradeSpec(max_bars=10), [FLAT, FLAT, FLAT], data_end=False)


def test_next_open_signal_on_the_last_bar_makes_no_trade():
    r = run(BRACKET, [FLAT, FLAT], signals=[0, 1])
    assert r["signal_idx"].tolist() == [0]


def test_mfe_and_mae_cover_the_held_bars_and_the_exit_price():
    spec = TradeSpec(max_bars=2)
    r = run(spec, [FLAT, (100, 102, 99, 101), (101, 101.5, 97, 98), (98.5, 120, 50, 99)])
    assert r["mfe"][0] == pytest.approx(0.02) and r["mae"][0] == pytest.approx(-0.03)


def test_nan_atr_level_never_triggers():
    spec = TradeSpec(stop_loss=Level("atr", 1.0, 14), max_bars=1)
    r = run(spec, [FLAT, FLAT, FLAT], atr={14: np.full(3, np.nan)})
    assert r["reason_name"] == ["time"]


def test_missing_atr_is_a_clear_error():
    with pytest.raises(ValueError, match=r"atr\[14\]"):
        run(TradeSpec(stop_loss=Level("atr", 1.0), max_bars=1), [FLAT, FLAT])


# ---- split invariance ------------------------------------------------------------------------

def random_bars(seed, n):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    open_ = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0, 0.001, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.002, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.002, n)))
    session = (np.arange(n) // 37).astype(np.int32)
    return {"timestamp": np.arange(n, dtype=np.int64) * MINUTE, "open": open_, "high": high,
            "low": low, "close": close, "session": session}


SPLIT_SPEC = TradeSpec(take_profit=Level("percent", 0.006), stop_loss=Level("atr", 1.5, 5),
                       trailing_stop=Level("percent", 0.004), trail_after=Level("percent", 0.002),
                       exit_when="x", max_bars=25, session_close=True, stops_on_entry_bar=False)


@settings(deadline=None, max_examples=40)
@given(seed=st.integers(0, 1000), cuts=st.lists(st.integers(1, 399), unique=True, max_size=5))
def test_trades_match_one_pass_whatever_the_cluster_layout(seed, cuts):
    n = 400
    data = random_bars(seed, n)
    atr = {5: np.abs(np.random.default_rng(seed).normal(0.3, 0.1, n))}
    exit_signal = np.random.default_rng(seed + 1).random(n) < 0.05
    signals = np.flatnonzero(np.random.default_rng(seed + 2).random(n) < 0.2)
    whole = simulate(SPLIT_SPEC, signals, **data, atr=atr, exit_signal=exit_signal, data_end=True)
    halo, _ = lookahead(SPLIT_SPEC, (), MINUTE)
    pieces = []
    for start, end in zip([0, *sorted(cuts)], [*sorted(cuts), n]):
        read_end = min(n, end + halo)
        part = {k: v[start:read_end] for k, v in data.items()}
        mine = signals[(signals >= start) & (signals < end)] - start
        r = simulate(SPLIT_SPEC, mine, **part, atr={5: atr[5][start:read_end]},
                     exit_signal=exit_signal[start:read_end], data_end=read_end == n)
        for key in ("signal_idx", "entry_idx", "exit_idx"):
            r[key] = r[key] + start
        pieces.append(r)
    for key, column in whole.items():
        np.testing.assert_array_equal(np.concatenate([p[key] for p in pieces]), column)


# ---- one position at a time ------------------------------------------------------------------

def test_select_non_overlapping_skips_signals_while_a_trade_is_open():
    taken = select_non_overlapping(np.array([0, 5, 9]), np.array([6, 8, 12]))
    assert taken.tolist() == [True, False, True]


def test_a_trade_exiting_during_the_signal_bar_no_longer_blocks():
    taken = select_non_overlapping(np.array([0, 6, 7]), np.array([6, 7, 9]))
    assert taken.tolist() == [True, True, True]


def test_select_non_overlapping_restarts_per_group():
    taken = select_non_overlapping(np.array([0, 3, 1, 4]), np.array([10, 10, 10, 10]),
                                   group=np.array([0, 0, 1, 1]))
    assert taken.tolist() == [True, False, True, False]


def test_select_non_overlapping_on_empty_input():
    assert select_non_overlapping(np.array([], np.int64), np.array([], np.int64)).size == 0


# ---- parsing ---------------------------------------------------------------------------------

def test_parse_trade_reads_levels_in_every_form():
    spec = parse_trade({"take_profit": "1%", "stop_loss": "2atr", "trailing_stop": "atr(20)*1.5",
                        "trail_after": "2 * atr", "slippage": 0.01, "max_bars": 60},
                       "rsi.yaml", "alerts[0].trade")
    assert spec.take_profit == Level("percent", 0.01)
    assert spec.stop_loss == Level("atr", 2.0, 14)
    assert spec.trailing_stop == Level("atr", 1.5, 20)
    assert spec.trail_after == Level("atr", 2.0, 14)
    assert spec.slippage == Level("price", 0.01)
    assert spec.atr_periods == (14, 20)
    assert parse_trade({"stop_loss": "2 ATR", "max_bars": 1}, "f", "t").stop_loss.kind == "atr"


def test_parse_trade_reads_options_and_commission():
    spec = parse_trade({"side": "short", "entry": "close", "bracket_from": "signal_close",
                        "stops_on_entry_bar": False, "overlap": "allow", "session_close": True,
                        "commission": {"per_share": 0.005, "percent": "0.1%", "minimum": 1},
                        "exit_when": "rsi(14) > 70"}, "f", "t")
    assert (spec.side, spec.entry, spec.bracket_from, spec.overlap) == (
        "short", "close", "signal_close", "allow")
    assert spec.commission == Commission(per_share=0.005, percent=0.001, minimum=1.0)
    assert spec.max_bars is None and spec.session_close


@pytest.mark.parametrize(("raw", "field", "text"), [
    ({"take_proft": "1%", "max_bars": 5}, "t.take_proft", "did you mean 'take_profit'"),
    ({"take_profit": "1 pct", "max_bars": 5}, "t.take_profit", "cannot read"),
    ({"take_profit": -1, "max_bars": 5}, "t.take_profit", "> 0"),
    ({"stop_loss": True, "max_bars": 5}, "t.stop_loss", "expected a level"),
    ({"max_bars": 0}, "t.max_bars", "max_bars >= 1"),
    ({"max_bars": 2.5}, "t.max_bars", "max_bars >= 1"),
    ({"side": "flat", "max_bars": 5}, "t.side", "long, short"),
    ({"session_close": "yes"}, "t.session_close", "true or false"),
    ({"trailing_stop": "1%", "exit_when": "x"}, "t.max_bars", "finite horizon"),
    ({"trail_after": "1%", "max_bars": 5}, "t.trail_after", "needs a trailing_stop"),
    ({"commission": {"fee": 1}, "max_bars": 5}, "t.commission.fee", "unknown key"),
    ({"commission": {"percent": "x%"}, "max_bars": 5}, "t.commission.percent", ">= 0"),
    ("1%", "t", "expected a mapping"),
])
def test_parse_trade_rejects_bad_input_naming_the_field(raw, field, text):
    with pytest.raises(ConfigError, match=text) as info:
        parse_trade(raw, "cfg.yaml", "t")
    assert info.value.field == field
    assert str(info.value).startswith(f"cfg.yaml: {field}: ")


def test_missing_horizon_error_explains_the_design():
    with pytest.raises(ConfigError) as info:
        parse_trade({"exit_when": "rsi(14) > 70"}, "cfg.yaml", "alerts[0].trade")
    assert "look-ahead halo" in str(info.value) and "session_close" in str(info.value)


def test_lookahead_covers_the_time_exit_bar():
    assert lookahead(TradeSpec(max_bars=60), (), MINUTE) == (61, False)
    assert lookahead(TradeSpec(session_close=True), (), MINUTE) == (1, True)
    assert lookahead(TradeSpec(max_bars=5, session_close=True), (), MINUTE) == (6, False)


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 10)), max_size=30))
def test_select_non_overlapping_equals_an_event_by_event_loop(events):
    events = sorted(events)
    signal_time = np.array([s for s, _ in events], dtype=np.int64)
    exit_time = signal_time + np.array([d for _, d in events], dtype=np.int64)
    expected, open_until = [], None
    for signal, exit_ in zip(signal_time.tolist(), exit_time.tolist()):
        free = open_until is None or open_until <= signal
        expected.append(free)
        if free:
            open_until = exit_
    assert select_non_overlapping(signal_time, exit_time).tolist() == expected
