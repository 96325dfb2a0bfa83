"""Alert and trade statistics, and their readable `summary.md`.

`compute_stats` turns the run's alerts, taken trades and forward returns into one JSON-ready dict
(plain Python numbers, ``None`` where a value is undefined, never NaN or inf); `render_markdown`
prints it. Both are pure functions of their arguments.

Definitions (also printed at the end of `summary.md`)
-----------------------------------------------------
- Fires by hour are in the exchange time zone (`timezone`); fires by weekday count the
  weekday of the trading day (the session, see below), so under ``24/5`` a fire at Sunday 18:00
  New York is Monday's.
- Forward horizons use only complete rows (``complete_L``); the hit rate is the share of
  positive returns. The 95% intervals are opt-in (``stats: {bootstrap: 2000}`` in the config;
  `n_resamples` here, 0 = off, the default, and the intervals are None): percentile bootstraps
  of the mean and the median (fewer resamples above 2,000 values to bound the cost
  (``resamples`` says how many), drawn by a compiled kernel seeded from `seed`, the alert's name
  and the horizon, so the same inputs give the same intervals). They are off by default
  because their cost grows with resamples x events (seconds on 100k+ alerts) while every point
  statistic is a few vectorised passes.
- Trade returns are net of costs (the ``return`` column). Win: return > 0, loss: return < 0.
  Profit factor: sum of wins / |sum of losses| (``None`` when there are no losses).
  Expectancy: the mean return per trade.
- The account (`build_account`, stated in docs/statistics.md with a worked example): each alert
  with a trade gets equal capital, split equally over the symbols of the data, one sleeve per
  (alert, symbol); the overall figures are equal capital per alert. A trade invests, at its
  entry, 1/k of its sleeve's equity, or the sleeve's cash if that is less, where k is the most
  trades the sleeve ever holds at once (1 with ``overlap: skip``, so a sleeve's trades compound);
  the account can never invest more than it holds. Open trades are marked to market at every
  bar close from the bars (``gross`` move from the fill); costs land at the exit, where the
  trade's net return is realised. Without bars (`compute_stats` called without `bars`) the
  account is valued at entries and exits only and exposure is None.
- Total return: final equity - 1. Max drawdown: the worst fall of the marked equity from its
  running peak (the starting 1.0 included), as a negative fraction, so open trades count.
- The period is the data's, not the alerts': `start`/`end` are the first and last bar of the
  data (`data_period`), so a strategy that fired only in March of a year of data is annualised
  over the year, as holding cash the rest of it.
- The clock: periods per year come from the calendar (`periods_per_year`: 252 for an exchange,
  365 for ``24/7``, 260 for ``24/5``; ``stats: {periods_per_year: N}`` overrides). Annualised
  return: ``(1 + total) ** (periods / trading_days) - 1``, trading days being the sessions of
  the period; ``None`` below `MIN_ANNUALISED_DAYS` (28) calendar days' worth, where annualising
  magnifies noise. Sharpe = mean / std (ddof 1) of daily returns x sqrt(periods); Sortino =
  mean / downside deviation (root mean square of negative daily returns over all days) x
  sqrt(periods); risk-free rate 0. Daily returns are the account's equity from one trading day's
  last bar to the next's; sessions of the period without bars count as 0. The trading day is
  the session each bar carries, never the calendar date: under ``24/5`` (and ``us_futures``,
  or ``data.day_starts: "17:00"``) it rolls at 17:00 New York, so Monday 16:00 and Monday 18:00
  are different days and Monday 18:00 and Tuesday 09:00 the same. Without bars, times take the
  session of `sessions` (the bars' table) open last at or before them, and only with neither
  the local calendar date.
- Exposure: the time-weighted (per bar of the grid) share of the account's equity held in open
  positions, between 0 and 1.
- By symbol: per traded symbol, its trades and its sleeves' account (equal capital per alert).
  Benchmark: buy and hold of every symbol with equal capital over the same bars, on the same
  clock.
- Longest losing streak: most consecutive losing trades in exit order.
- ``both_touched``: trades whose exit bar touched both stop and target, where the result rests on
  the stop-first assumption.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from numba import njit

__all__ = ["Account", "build_account", "compute_stats", "data_period", "periods_per_year",
           "render_markdown", "stats_frame"]

TRADING_DAYS_PER_YEAR = 252   # an exchange calendar's periods per year (`periods_per_year`)
CALENDAR_PERIODS = {"24/7": 365, "24/5": 260}
MIN_ANNUALISED_DAYS = 28
_BOOTSTRAP_DRAWS = 4_000_000  # ~0.04 s per interval: caps resamples beyond 2k values (>= 200)
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def compute_stats(alerts: pd.DataFrame, trades: pd.DataFrame, forward: pd.DataFrame,
                  horizons: Sequence, *, timezone: str, start: pd.Timestamp | None,
                  end: pd.Timestamp | None, trading_days: int | None, seed: int = 0,
                  n_bars: int | None = None, n_resamples: int = 0, bars=None,
                  sides: Mapping[str, float] | None = None,
                  periods: tuple[float, str] | None = None,
                  account: Account | None = None, sessions=None) -> dict:
    """Statistics overall and per alert, as ``{"overall": {...}, "alerts": {name: {...}},
    "by_symbol": {...}, "benchmark": {...} | None, "definitions": {...}}``.

    `alerts` has ``timestamp`` (tz-aware), ``symbol``, ``alert``; `trades` the taken trades
    (``alert, symbol, signal_time, entry_time, entry_price, exit_time, exit_price, reason,
    bars_held, return, gross_return, mfe, mae, both_touched``); `forward` one row per alert event
    with ``alert`` and ``ret_L, mfe_L, mae_L, complete_L`` per horizon label. Any of them may be
    empty. `start`, `end` and `trading_days` describe the data, not the events: its first and
    last bar and its number of sessions (`data_period` reads them off a `BarSet`; None where
    there are no bars). `bars` (the `BarSet`) marks the account to market at every bar close
    and gives the benchmark; without it the account is valued at entries and exits only.
    `sides` maps each alert with a trade to +1 (long) or -1 (short); `periods` is
    ``(periods_per_year, where it came from)`` (default: `periods_per_year` of `bars`'
    calendar, 252 without bars); `account` a `build_account` result to reuse; `sessions` the
    `SessionTable` that names trading days (default: `bars`' own; without either, trading days
    are local calendar dates). See the module
    docstring for each definition. For example ``compute_stats(alerts, trades, forward,
    horizons, timezone="America/New_York", **data_period(bars), bars=bars,
    n_bars=bars.n_bars)["overall"]["trades"]["win_rate"]``.
    """
    labels = [h.label for h in horizons]
    if sessions is None and bars is not None:
        sessions = bars.sessions
    alerts = _localised(alerts, "timestamp", timezone)
    if not alerts.empty and "timestamp" in alerts:
        alerts["_weekday"] = _trading_weekday(alerts["timestamp"], sessions)
    trades = _localised(trades, "exit_time", timezone)
    span_start, span_end = (None if t is None else _stamp(t, timezone) for t in (start, end))
    days = None if trading_days is None else int(trading_days)
    if periods is None:
        periods = periods_per_year(sessions)
    if account is None:
        account = build_account(trades, bars, sides, sessions)
    context = {"labels": labels, "seed": seed, "n_bars": n_bars, "days": days,
               "span": (span_start, span_end), "n_resamples": n_resamples,
               "periods": periods[0], "account": account}
    names = sorted(set(_column(alerts, "alert")) | set(_column(trades, "alert"))
                   | set(_column(forward, "alert")))
    # One block per alert plus the overall one, on threads: the bootstrap kernel releases the
    # GIL and seeds numba's per-thread generator inside each call, so the intervals are the same
    # whichever thread draws them. Each thread gets its own frames (split off here).
    parts = {str(name): (_rows(alerts, name), _rows(trades, name), _rows(forward, name))
             for name in names}
    with ThreadPoolExecutor(max_workers=max(1, min(len(parts) + 1, os.cpu_count() or 1))) as pool:
        overall = pool.submit(_block, "", alerts, trades, forward, context)
        per_alert = {name: pool.submit(_block, name, *frames, context)
                     for name, frames in parts.items()}
    return {
        "overall": overall.result(),
        "alerts": {name: future.result() for name, future in per_alert.items()},
        "by_symbol": _by_symbol(trades, account, context),
        "benchmark": None if bars is None else _benchmark(bars, context),
        "definitions": {
            "timezone": timezone, "annualisation_days": periods[0],
            "periods_per_year": periods[0], "periods_per_year_source": periods[1],
            "account": ACCOUNT_CONVENTION,
            "marked_to_market": account.marked,
            "trading_days": days, "n_bars": n_bars, "bootstrap_resamples": n_resamples,
            "seed": seed,
            "period_start": None if span_start is None else span_start.isoformat(),
            "period_end": None if span_end is None else span_end.isoformat(),
        },
    }


ACCOUNT_CONVENTION = ("equal capital per alert; within an alert, equal capital per symbol "
                      "(a sleeve each); a trade invests 1/k of its sleeve's equity at entry "
                      "(k: the most trades the sleeve holds at once) or its cash if less; "
                      "marked to market at bar closes")


def periods_per_year(sessions=None, override: float | None = None) -> tuple[float, str]:
    """``(periods per year, why)`` for annualising daily figures: `override` (the config's
    ``stats.periods_per_year``) if given; 365 for the ``24/7`` calendar, 260 for ``24/5``; for
    ``calendar: none`` read off the sessions' weekdays (365 when both Saturday and Sunday have
    sessions, 260 when one of them has, else 252); 252 for an exchange calendar or no data.

    For example ``periods_per_year(bars.sessions)`` is ``(252, "calendar XNYS: ...")`` for
    NYSE bars.
    """
    if override is not None:
        return float(override), "stats.periods_per_year"
    if sessions is None:
        return float(TRADING_DAYS_PER_YEAR), "default: exchange trading days"
    calendar = sessions.calendar
    if calendar in CALENDAR_PERIODS:
        return float(CALENDAR_PERIODS[calendar]), f"calendar {calendar}"
    if calendar == "none":
        weekdays = set(pd.DatetimeIndex(np.asarray(sessions.dates, "datetime64[D]"))
                       .day_of_week.unique().tolist()) if len(sessions) else set()
        weekend = len(weekdays & {5, 6})
        periods = (TRADING_DAYS_PER_YEAR, 260, 365)[weekend]
        return float(periods), f"calendar none: sessions on {weekend} weekend day(s) a week"
    return float(TRADING_DAYS_PER_YEAR), f"calendar {calendar}: exchange trading days"


def data_period(barset) -> dict:
    """``{"start", "end", "trading_days"}`` of a `BarSet`, for `compute_stats`: the first and
    last bar's open (exchange time) over all symbols, and the sessions from the first bar's to
    the last bar's in the session table (so holidays are not counted). None values without bars.

    For example, XNYS 1-minute bars from 2024-01-02 to 2024-12-31 give 252 trading days.
    """
    nonempty = [b for b in barset.bars.values() if len(b)]
    if not nonempty:
        return {"start": None, "end": None, "trading_days": None}
    first = min(int(b.timestamp[0]) for b in nonempty)
    last = max(int(b.timestamp[-1]) for b in nonempty)
    sessions = (max(int(b.session[-1]) for b in nonempty)
                - min(int(b.session[0]) for b in nonempty) + 1)
    return {"start": pd.Timestamp(first, tz="UTC").tz_convert(barset.timezone),
            "end": pd.Timestamp(last, tz="UTC").tz_convert(barset.timezone),
            "trading_days": sessions}


OVERALL = "(all)"
"""The row label of the all-alerts row in `stats_frame` (no alert name can contain '(')."""

_TRADE_COLUMNS = ("count", "wins", "losses", "win_rate", "avg_win", "avg_loss", "profit_factor",
                  "expectancy", "total_return", "annualized_return", "max_drawdown", "sharpe",
                  "sortino", "exposure", "avg_bars_held", "longest_losing_streak",
                  "both_touched")
_FORWARD_COLUMNS = ("n", "incomplete", "hit_rate", "mean", "median", "mean_mfe", "mean_mae")


def stats_frame(stats: dict) -> pd.DataFrame:
    """`compute_stats`' result as a DataFrame: one row per alert, indexed by ``alert``, after a
    first row `OVERALL` (``"(all)"``) for all alerts together.

    Columns: ``fires``; the trade statistics, prefixed ``trades`` for the count and named as in
    the dict otherwise (``win_rate``, ``profit_factor``, ``sharpe``, ...), plus ``exits_<reason>``
    counts; per forward horizon ``L``: ``fwd_L_n``, ``fwd_L_incomplete``, ``fwd_L_hit_rate``,
    ``fwd_L_mean``, ``fwd_L_mean_ci_low`` / ``_high``, ``fwd_L_median``,
    ``fwd_L_median_ci_low`` / ``_high``, ``fwd_L_mean_mfe``, ``fwd_L_mean_mae``. Undefined
    values (None in the dict) are NaN. Fires by hour and weekday stay in the dict. For example
    ``stats_frame(s).loc["(all)", "win_rate"]``.
    """
    blocks = [(OVERALL, stats["overall"]), *stats.get("alerts", {}).items()]
    reasons = sorted({r for _, b in blocks for r in b["trades"]["reasons"]})
    rows = []
    for name, block in blocks:
        trades = block["trades"]
        row = {"alert": name, "fires": block["fires"], "trades": trades["count"]}
        row.update({key: trades[key] for key in _TRADE_COLUMNS if key != "count"})
        row.update({f"exits_{r}": trades["reasons"].get(r, 0) for r in reasons})
        for label, fwd in block["forward"].items():
            for key in _FORWARD_COLUMNS:
                row[f"fwd_{label}_{key}"] = fwd[key]
            for key in ("mean", "median"):
                low, high = fwd[f"{key}_ci95"] or (None, None)
                row[f"fwd_{label}_{key}_ci_low"] = low
                row[f"fwd_{label}_{key}_ci_high"] = high
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("alert")
    return frame.apply(lambda column: pd.to_numeric(column.astype(object).where(
        column.notna(), np.nan)))


def render_markdown(stats: dict, *, title: str) -> str:
    """`summary.md`: an overview table of all alerts, then per alert (and overall) the fires by
    hour and weekday, forward returns per horizon and the trade statistics, then definitions."""
    lines = [f"# {title}", ""]
    blocks = [("All alerts", stats["overall"])] + list(stats.get("alerts", {}).items())
    d = stats.get("definitions", {})
    periods = d.get("periods_per_year") or TRADING_DAYS_PER_YEAR
    lines += ["| alert | fires | trades | win rate | expectancy | total return | max drawdown "
              "| Sharpe | both touched |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: "
              "| ---: | ---: |"]
    for name, block in blocks:
        t = block["trades"]
        lines.append(f"| {name} | {block['fires']} | {t['count']} | {_pct(t['win_rate'])} | "
                     f"{_pct(t['expectancy'], 3)} | {_pct(t['total_return'])} | "
                     f"{_pct(t['max_drawdown'])} | {_num(t['sharpe'])} | {t['both_touched']} |")
    for name, block in blocks:
        lines += ["", f"## {name}", "", f"Fires: {block['fires']}"]
        if block["fires_by_hour"]:
            hours = block["fires_by_hour"]
            lines += ["", "Fires by hour (exchange time):", "",
                      "| " + " | ".join(f"{h}h" for h in hours) + " |",
                      "|" + " ---: |" * len(hours),
                      "| " + " | ".join(str(v) for v in hours.values()) + " |"]
            days = block["fires_by_weekday"]
            lines += ["", "Fires by weekday (of the trading day):", "", "| " + " | ".join(days) + " |",
                      "|" + " ---: |" * len(days),
                      "| " + " | ".join(str(v) for v in days.values()) + " |"]
        if block["forward"]:
            lines += ["", "### Forward returns (from the signal bar's close)", "",
                      "| horizon | n | incomplete | hit rate | mean | mean 95% CI | median "
                      "| median 95% CI | mean MFE | mean MAE |",
                      "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: |"]
            for label, f in block["forward"].items():
                lines.append(
                    f"| {label} | {f['n']} | {f['incomplete']} | {_pct(f['hit_rate'])} | "
                    f"{_pct(f['mean'], 3)} | {_interval(f['mean_ci95'])} | "
                    f"{_pct(f['median'], 3)} | {_interval(f['median_ci95'])} | "
                    f"{_pct(f['mean_mfe'], 3)} | {_pct(f['mean_mae'], 3)} |")
        t = block["trades"]
        lines += ["", "### Trades", ""]
        if not t["count"]:
            lines.append("No trades.")
            continue
        rows = [
            ("trades", t["count"]), ("win rate", _pct(t["win_rate"])),
            ("average win", _pct(t["avg_win"], 3)), ("average loss", _pct(t["avg_loss"], 3)),
            ("profit factor", _num(t["profit_factor"])),
            ("expectancy per trade", _pct(t["expectancy"], 3)),
            ("total return (account)", _pct(t["total_return"])),
            ("annualised return", _pct(t["annualized_return"])),
            ("max drawdown", _pct(t["max_drawdown"])),
            (f"Sharpe (daily, x sqrt {periods:g})", _num(t["sharpe"])),
            (f"Sortino (daily, x sqrt {periods:g})", _num(t["sortino"])),
            ("exposure", _pct(t["exposure"])), ("average bars held", _num(t["avg_bars_held"])),
            ("longest losing streak", t["longest_losing_streak"]),
            ("both stop and target touched (stop taken)", t["both_touched"]),
            ("exit reasons", ", ".join(f"{k} {v}" for k, v in t["reasons"].items()) or "-"),
        ]
        lines += ["| metric | value |", "| --- | ---: |"]
        lines += [f"| {k} | {v} |" for k, v in rows]
    lines += _by_symbol_markdown(stats.get("by_symbol") or {})
    lines += _benchmark_markdown(stats.get("benchmark"))
    lines += [
        "", "## Definitions", "",
        f"- Times are in {d.get('timezone', 'the exchange time zone')}; period "
        f"{d.get('period_start') or '-'} to {d.get('period_end') or '-'}, "
        f"{d.get('trading_days') or 0} trading days; {periods:g} periods a year "
        f"({d.get('periods_per_year_source', 'default')}).",
        "- Forward returns use complete horizons only; hit rate = share of positive returns; "
        + (f"95% CIs are percentile bootstraps ({d.get('bootstrap_resamples')} resamples, "
           f"seed {d.get('seed')})." if d.get("bootstrap_resamples") else
           "no confidence intervals (turn them on with `stats: {bootstrap: 2000}`)."),
        "- Trade returns are net of commission and slippage. The account: "
        f"{d.get('account', ACCOUNT_CONVENTION)}"
        + ("." if d.get("marked_to_market", True) else " (valued at entries and exits only)."),
        "- Max drawdown is the worst fall of the account's equity from its running peak.",
        "- Sharpe and Sortino use the account's daily returns (trading days without bars count "
        f"as 0), risk-free rate 0, annualised with sqrt({periods:g}); annualised return uses "
        "the same clock (trading days / periods a year).",
        "- Exposure = time-weighted share of the account's equity in open positions (0-100%).",
        "- Both touched: the exit bar reached stop and target; the stop was assumed first.",
        "",
    ]
    return "\n".join(lines)


def _by_symbol_markdown(by_symbol: dict) -> list[str]:
    if not by_symbol:
        return []
    lines = ["", "## By symbol", "", "| symbol | trades | win rate | expectancy | total return "
             "| max drawdown | exposure |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for symbol, b in by_symbol.items():
        lines.append(f"| {symbol} | {b['trades']} | {_pct(b['win_rate'])} | "
                     f"{_pct(b['expectancy'], 3)} | {_pct(b.get('total_return'))} | "
                     f"{_pct(b.get('max_drawdown'))} | {_pct(b.get('exposure'))} |")
    return lines


def _benchmark_markdown(benchmark: dict | None) -> list[str]:
    if not benchmark:
        return []
    return ["", "## Benchmark", "", f"{benchmark['convention']}.", "",
            "| total return | annualised return | max drawdown | Sharpe | Sortino |",
            "| ---: | ---: | ---: | ---: | ---: |",
            f"| {_pct(benchmark['total_return'])} | {_pct(benchmark['annualized_return'])} | "
            f"{_pct(benchmark['max_drawdown'])} | {_num(benchmark['sharpe'])} | "
            f"{_num(benchmark['sortino'])} |"]


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------

def _block(name: str, alerts: pd.DataFrame, trades: pd.DataFrame, forward: pd.DataFrame,
           context: dict) -> dict:
    return {
        "fires": len(alerts),
        "fires_by_hour": _fires_by_hour(alerts),
        "fires_by_weekday": _fires_by_weekday(alerts),
        "forward": {label: _forward_block(forward, label, name, i, context)
                    for i, label in enumerate(context["labels"])},
        "trades": _trade_block(name, trades, context),
    }


def _fires_by_hour(alerts: pd.DataFrame) -> dict:
    if alerts.empty:
        return {}
    counts = alerts["timestamp"].dt.hour.value_counts().sort_index()
    return {f"{int(hour):02d}": int(count) for hour, count in counts.items()}


def _fires_by_weekday(alerts: pd.DataFrame) -> dict:
    if alerts.empty:
        return {}
    weekday = alerts["_weekday"] if "_weekday" in alerts else alerts["timestamp"].dt.day_of_week
    counts = weekday.value_counts()
    return {day: int(counts.get(i, 0)) for i, day in enumerate(_WEEKDAYS)
            if i < 5 or counts.get(i, 0)}


def _forward_block(forward: pd.DataFrame, label: str, name: str, index: int,
                   context: dict) -> dict:
    column = f"ret_{label}"
    if forward.empty or column not in forward:
        values = np.empty(0)
        total = 0
        mfe = mae = np.empty(0)
    else:
        complete = forward.get(f"complete_{label}", pd.Series(True, index=forward.index))
        complete = complete.fillna(False).astype(bool).to_numpy()
        values = forward[column].to_numpy(dtype=np.float64)[complete]
        finite = np.isfinite(values)
        values = values[finite]
        total = len(forward)
        mfe = _finite(forward.get(f"mfe_{label}"), complete)
        mae = _finite(forward.get(f"mae_{label}"), complete)
    seed = int(np.random.SeedSequence([context["seed"], zlib.crc32(name.encode()), index])
               .generate_state(1)[0] % (2**31))
    mean_ci, median_ci = _bootstrap(values, seed, context["n_resamples"])
    return {
        "n": int(len(values)),
        "incomplete": int(total - len(values)),
        "hit_rate": _float(np.mean(values > 0)) if len(values) else None,
        "mean": _float(np.mean(values)) if len(values) else None,
        "median": _float(np.median(values)) if len(values) else None,
        "mean_ci95": mean_ci,
        "resamples": _resamples(len(values), context["n_resamples"]) if mean_ci else 0,
        "median_ci95": median_ci,
        "mean_mfe": _float(np.mean(mfe)) if len(mfe) else None,
        "mean_mae": _float(np.mean(mae)) if len(mae) else None,
    }


def _bootstrap(values: np.ndarray, seed: int, n_resamples: int
               ) -> tuple[list | None, list | None]:
    """Percentile 95% intervals of the mean and the median over `n_resamples` resamples."""
    if len(values) < 2 or n_resamples < 1:
        return None, None
    means, medians = _bootstrap_nb(np.sort(values), _resamples(len(values), n_resamples), seed)
    intervals = []
    for stat in (means, medians):
        low, high = np.percentile(stat, [2.5, 97.5])
        intervals.append([_float(low), _float(high)])
    return intervals[0], intervals[1]


def _resamples(n: int, n_resamples: int) -> int:
    """`n_resamples`, lowered for very large samples so one interval draws at most
    `_BOOTSTRAP_DRAWS` values (never below 200 resamples)."""
    return max(min(n_resamples, 200), min(n_resamples, _BOOTSTRAP_DRAWS // n))


@njit(cache=True, nogil=True)
def _bootstrap_nb(sorted_values, n_resamples, seed):
    """Means and medians of `n_resamples` resamples (with replacement) of `sorted_values`.
    Equivalent to ``v[rng.integers(0, n, (B, n))]`` then ``.mean(1)`` / ``median(1)``, but the
    median comes from counting draws per sorted position, O(n) per resample without sorting."""
    np.random.seed(seed)
    n = len(sorted_values)
    means = np.empty(n_resamples)
    medians = np.empty(n_resamples)
    counts = np.zeros(n, dtype=np.int64)
    low_rank = (n - 1) // 2
    high_rank = n // 2
    for b in range(n_resamples):
        counts[:] = 0
        total = 0.0
        for _ in range(n):
            i = min(int(np.random.random() * n), n - 1)
            counts[i] += 1
            total += sorted_values[i]
        means[b] = total / n
        seen = 0
        low_value = np.nan
        for i in range(n):
            if counts[i] == 0:
                continue
            if seen <= low_rank < seen + counts[i]:
                low_value = sorted_values[i]
            if seen <= high_rank < seen + counts[i]:
                medians[b] = 0.5 * (low_value + sorted_values[i])
                break
            seen += counts[i]
    return means, medians


def _trade_block(name: str, trades: pd.DataFrame, context: dict) -> dict:
    block = {
        "count": 0, "wins": 0, "losses": 0, "win_rate": None, "avg_win": None, "avg_loss": None,
        "profit_factor": None, "expectancy": None, "total_return": 0.0,
        "annualized_return": None, "max_drawdown": 0.0, "sharpe": None, "sortino": None,
        "exposure": 0.0 if context["account"].marked else None, "avg_bars_held": None,
        "longest_losing_streak": 0, "both_touched": 0, "reasons": {},
    }
    if trades.empty:
        return block
    order = trades.sort_values(["exit_time", "entry_time"], kind="stable")
    returns = order["return"].to_numpy(dtype=np.float64)
    returns = returns[np.isfinite(returns)]
    wins, losses = returns[returns > 0], returns[returns < 0]
    held = order["bars_held"].to_numpy(dtype=np.float64)
    block.update({
        "count": int(len(order)),
        "wins": int(len(wins)),
        "losses": int(len(losses)),
        "win_rate": _float(len(wins) / len(returns)) if len(returns) else None,
        "avg_win": _float(wins.mean()) if len(wins) else None,
        "avg_loss": _float(losses.mean()) if len(losses) else None,
        "profit_factor": _float(wins.sum() / -losses.sum()) if len(losses) else None,
        "expectancy": _float(returns.mean()) if len(returns) else None,
        "avg_bars_held": _float(held.mean()),
        "longest_losing_streak": _longest_run(returns < 0),
        "both_touched": int(order["both_touched"].fillna(False).astype(bool).sum())
        if "both_touched" in order else 0,
        "reasons": {str(k): int(v) for k, v in order["reason"].value_counts().items()}
        if "reason" in order else {},
    })
    account = context["account"]
    key = name or OVERALL
    if key in account.equity:
        block.update(_curve_figures(account.equity[key], account.invested[key], account.day,
                                    context, marked=account.marked))
    return block


def _curve_figures(equity: np.ndarray, invested: np.ndarray, day: np.ndarray, context: dict,
                   *, marked: bool) -> dict:
    """Total and annualised return, max drawdown, Sharpe, Sortino and exposure of one equity
    curve (starting capital 1.0) on the account's grid."""
    if not len(equity):
        return {}
    total = float(equity[-1] - 1.0)
    sharpe, sortino = _ratios(_day_returns(equity, day), context["days"], context["periods"])
    return {
        "total_return": _float(total),
        "annualized_return": _annualised(total, context),
        "max_drawdown": _float(min(0.0, float(_drawdown(equity).min()))),
        "sharpe": sharpe, "sortino": sortino,
        "exposure": _float(_share(invested, equity).mean()) if marked else None,
    }


def _ratios(values: np.ndarray, days: int | None, periods: float
            ) -> tuple[float | None, float | None]:
    """Sharpe and Sortino of daily returns, padded with flat days to `days`, annualised with
    sqrt(`periods`); risk-free rate 0."""
    values = np.r_[values, np.zeros(max(0, (days or 0) - len(values)))]
    if len(values) < 2:
        return None, None
    mean = values.mean()
    std = values.std(ddof=1)
    downside = math.sqrt(float(np.mean(np.minimum(values, 0.0) ** 2)))
    scale = math.sqrt(periods)
    sharpe = _float(mean / std * scale) if std > 1e-15 * max(1.0, abs(mean)) else None
    sortino = _float(mean / downside * scale) if downside > 0 else None
    return sharpe, sortino


def _annualised(total: float, context: dict) -> float | None:
    """``(1 + total) ** (1 / years) - 1`` on the statistics' clock: years = trading days of
    the period / periods per year (calendar years of the span when the days are unknown);
    None under `MIN_ANNUALISED_DAYS` calendar days' worth, or when the account is wiped out."""
    start, end = context["span"]
    if context["days"] is not None:
        years = context["days"] / context["periods"]
    elif start is not None and end is not None:
        years = (end - start) / pd.Timedelta(days=365.25)
    else:
        return None
    if years < MIN_ANNUALISED_DAYS / 365.25 or total <= -1.0:
        return None
    return _float((1.0 + total) ** (1.0 / years) - 1.0)


def _by_symbol(trades: pd.DataFrame, account: Account, context: dict) -> dict:
    """Per traded symbol: trade counts and returns, and its sleeves' account (equal capital
    per alert) on that symbol's own bars."""
    if trades.empty or account is None:
        return {}
    out = {}
    groups = trades.groupby("symbol", sort=True, observed=True)
    for symbol, part in groups:
        returns = part["return"].to_numpy(np.float64)
        returns = returns[np.isfinite(returns)]
        block = {"trades": int(len(part)), "wins": int((returns > 0).sum()),
                 "win_rate": _float((returns > 0).mean()) if len(returns) else None,
                 "expectancy": _float(returns.mean()) if len(returns) else None}
        curve = account.symbols.get(str(symbol))
        if curve is not None:
            stamps, equity, invested = curve
            block["total_return"] = _float(equity[-1] - 1.0) if len(equity) else 0.0
            block["max_drawdown"] = _float(min(0.0, float(_drawdown(equity).min()))) \
                if len(equity) else 0.0
            block["exposure"] = _float(_share(invested, equity).mean()) \
                if account.marked and len(equity) else None
        out[str(symbol)] = block
    return out


def _benchmark(bars, context: dict) -> dict | None:
    """Buy and hold every symbol with equal capital over the same bars: bought at each
    symbol's first open, marked at every close, on the same clock as the account."""
    symbols = [s for s in bars.symbols if len(bars.bars[s])]
    if not symbols:
        return None
    grid, day = _bar_grid(bars, symbols)
    equity = np.zeros(len(grid))
    for symbol in symbols:
        b = bars.bars[symbol]
        at = np.searchsorted(b.timestamp, grid, side="right") - 1
        value = b.close / b.open[0]
        equity += np.where(at >= 0, value[np.maximum(at, 0)], 1.0)
    equity /= len(symbols)
    figures = _curve_figures(equity, equity, day, context, marked=True)
    figures["convention"] = "buy and hold, equal capital per symbol, from each first open"
    return figures


def _longest_run(flags: np.ndarray) -> int:
    """The most consecutive True values in `flags`."""
    edges = np.flatnonzero(np.diff(np.r_[0, flags.astype(np.int8), 0]))
    return int((edges[1::2] - edges[::2]).max()) if len(edges) else 0


# ---------------------------------------------------------------------------------------------
# The account
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Account:
    """The account the trade statistics describe (see the module docstring's convention).

    `timestamp` is the time grid (UTC ns, increasing): every bar's time over all symbols when
    the equity is marked to market from bars, else the trades' entry and exit times. `day` gives
    each grid point's trading day (the session index the bars carry; without bars, the index in
    the session table given, or the local date without one). `equity` and
    `invested` map an alert name, and `OVERALL`, to the account's equity (starting at 1.0) and
    the value of its open positions at each grid point. `symbols` holds, per traded symbol,
    ``(timestamp, equity, invested)`` of that symbol's sleeves (equal capital per alert) on the
    symbol's own bars. `marked` says whether open trades were marked at bar closes.
    """

    timestamp: np.ndarray
    day: np.ndarray
    equity: dict[str, np.ndarray]
    invested: dict[str, np.ndarray]
    symbols: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    marked: bool

    def frame(self, timezone: str) -> pd.DataFrame:
        """`equity.parquet`: one row per alert (and ``(all)``) and grid time, with
        ``timestamp, alert, equity, drawdown, exposure`` (drawdown from the running peak,
        exposure = invested / equity at that time)."""
        if not len(self.timestamp) or OVERALL not in self.equity:
            return pd.DataFrame({"timestamp": pd.DatetimeIndex([], tz=timezone),
                                 "alert": pd.Series([], dtype="str"), "equity": [],
                                 "drawdown": [], "exposure": []})
        names = [OVERALL, *[n for n in self.equity if n != OVERALL]]
        n = len(self.timestamp)
        equity = np.concatenate([self.equity[name] for name in names])
        drawdown = np.concatenate([_drawdown(self.equity[name]) for name in names])
        exposure = np.concatenate([_share(self.invested[name], self.equity[name])
                                   for name in names])
        stamps = pd.DatetimeIndex(np.tile(self.timestamp, len(names)).view("datetime64[ns]"),
                                  tz="UTC").tz_convert(timezone)
        alert = pd.array(pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(np.arange(len(names), dtype=np.int32), n)),
            pa.array(names, pa.large_string())).dictionary_decode(),
            dtype=pd.StringDtype("pyarrow", na_value=np.nan))
        return pd.DataFrame({"timestamp": stamps, "alert": alert, "equity": equity,
                             "drawdown": drawdown, "exposure": exposure})


def build_account(trades: pd.DataFrame, bars=None, sides: Mapping[str, float] | None = None,
                  sessions=None) -> Account:
    """The account of `trades` (the run's taken trades), marked to market at every bar close
    of `bars` (a `BarSet`) when given, else valued only at entries and exits.

    Its trading days (`Account.day`) are the sessions the bars carry; without bars, those of
    `sessions` (a `SessionTable`: each time takes the last session opened at or before it), and
    only without either the local calendar dates of the trades' time zone.

    Each alert that trades (`sides`' keys: alert name -> +1 long / -1 short; by default the
    alerts in `trades`, sides read off their returns) gets equal capital, split equally over the
    symbols (all symbols of `bars`, else those traded): one sleeve per (alert, symbol). A trade
    invests, at its entry, 1/k of its sleeve's equity or the sleeve's cash if that is less,
    where k is the most trades the sleeve ever holds at once (1 with ``overlap: skip``), so a
    sleeve never invests more than it holds. See `sleeve_equity_nb`.
    """
    trades = trades if trades is not None else pd.DataFrame()
    has_trades = not trades.empty and "entry_time" in trades
    names = list(sides) if sides is not None else (
        sorted(trades["alert"].unique().tolist()) if has_trades else [])
    if bars is not None and len(bars.bars):
        symbols = list(bars.symbols)
        times = {s: bars.bars[s].timestamp for s in symbols}
        closes = {s: bars.bars[s].close for s in symbols}
        grid, day = _bar_grid(bars, symbols)
        marked = True
    else:
        symbols = sorted(trades["symbol"].unique().tolist()) if has_trades else []
        entry_ns = _ns(trades["entry_time"]) if has_trades else np.zeros(0, np.int64)
        exit_ns = _ns(trades["exit_time"]) if has_trades else np.zeros(0, np.int64)
        times, closes = {}, {}
        for symbol in symbols:
            rows = (trades["symbol"] == symbol).to_numpy()
            times[symbol] = np.unique(np.r_[entry_ns[rows], exit_ns[rows]])
            closes[symbol] = np.full(len(times[symbol]), np.nan)
        grid = np.unique(np.concatenate([np.zeros(0, np.int64), *times.values()]))
        day = np.zeros(len(grid), np.int64)
        if len(grid) and sessions is not None and len(sessions):
            day = _session_at(sessions, grid)
        elif len(grid) and has_trades:
            zone = trades["exit_time"].dt.tz
            local = pd.DatetimeIndex(grid.view("datetime64[ns]"), tz="UTC")
            local = local.tz_convert(zone).tz_localize(None) if zone is not None else local
            day = local.to_numpy().astype("datetime64[D]").astype(np.int64)
        marked = False
    equity_sum = {name: np.zeros(len(grid)) for name in names}
    invested_sum = {name: np.zeros(len(grid)) for name in names}
    per_symbol: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    groups = trades.groupby(["alert", "symbol"], sort=True, observed=True).indices \
        if has_trades else {}
    placed = {s: None if len(times[s]) == len(grid) else
              np.searchsorted(times[s], grid, side="right") - 1 for s in {s for (_, s) in groups}}
    for (name, symbol), rows in groups.items():
        if name not in equity_sum:
            continue
        part = trades.iloc[np.sort(rows)]
        stamps = times[symbol]
        entry_row = np.searchsorted(stamps, _ns(part["entry_time"]))
        exit_row = np.searchsorted(stamps, _ns(part["exit_time"]))
        order = np.argsort(entry_row, kind="stable")
        entry_price = part["entry_price"].to_numpy(np.float64)[order]
        side = _sides(part, sides, name)[order]
        net = part["return"].to_numpy(np.float64)[order]
        entry_row, exit_row = entry_row[order], exit_row[order]
        slots = max(1, _most_open_nb(entry_row, exit_row))
        equity, invested = sleeve_equity_nb(closes[symbol], entry_row, exit_row, entry_price,
                                            side, np.nan_to_num(net), slots)
        at = placed[symbol]
        if at is None:   # the symbol has a bar at every grid time (the common case)
            equity_sum[name] += equity - 1.0
            invested_sum[name] += invested
        else:
            seen = at >= 0
            equity_sum[name] += np.where(seen, equity[np.maximum(at, 0)], 1.0) - 1.0
            invested_sum[name] += np.where(seen, invested[np.maximum(at, 0)], 0.0)
        held = per_symbol.get(symbol)
        if held is None:
            held = (stamps, np.zeros(len(stamps)), np.zeros(len(stamps)))
            per_symbol[symbol] = held
        held[1][:] += equity - 1.0
        held[2][:] += invested
    width = max(1, len(symbols))
    equity = {name: 1.0 + equity_sum[name] / width for name in names}
    invested = {name: invested_sum[name] / width for name in names}
    if names:
        equity[OVERALL] = sum(equity.values()) / len(names)
        invested[OVERALL] = sum(invested[n] for n in names) / len(names)
    alerts_count = max(1, len(names))
    symbols_out = {s: (t, 1.0 + e / alerts_count, i / alerts_count)
                   for s, (t, e, i) in per_symbol.items()}
    return Account(timestamp=grid, day=day, equity=equity, invested=invested,
                   symbols=symbols_out, marked=marked)


def _bar_grid(bars, symbols: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every bar time of `symbols` (UTC ns, increasing, each once) and its trading day: the
    session index the bars carry (`SymbolBars.session`), so a ``24/5`` bar at 17:00 New York
    is the next day's and a daily bar stamped at midnight is its session's."""
    stamps = np.concatenate([np.zeros(0, np.int64), *(bars.bars[s].timestamp for s in symbols)])
    days = np.concatenate([np.zeros(0, np.int32), *(bars.bars[s].session for s in symbols)])
    grid, first = np.unique(stamps, return_index=True)
    return grid, days[first].astype(np.int64)


def _session_at(sessions, timestamp_ns: np.ndarray) -> np.ndarray:
    """Index of the last session of `sessions` opened at or before each UTC-ns time (-1
    before the first): the session itself for a time inside one, the one just ended for a time
    after its close."""
    return np.searchsorted(np.asarray(sessions.open_ns, np.int64),
                           np.asarray(timestamp_ns, np.int64), side="right").astype(np.int64) - 1


def _trading_weekday(times: pd.Series, sessions) -> np.ndarray:
    """Weekday (Monday 0) of each time's trading day: its session's date in `sessions`,
    the local date where there is no table or the time precedes its first session."""
    weekday = times.dt.day_of_week.to_numpy(np.int64)
    if sessions is None or not len(sessions) or not len(times):
        return weekday
    at = _session_at(sessions, _ns(times))
    known = at >= 0
    dates = np.asarray(sessions.dates, "datetime64[D]").astype(np.int64)
    weekday[known] = (dates[at[known]] + 3) % 7   # 1970-01-01 was a Thursday
    return weekday


def _ns(times: pd.Series) -> np.ndarray:
    values = pd.DatetimeIndex(times)
    if values.tz is None:
        values = values.tz_localize("UTC")
    return values.tz_convert("UTC").tz_localize(None).as_unit("ns").asi8


def _sides(part: pd.DataFrame, sides: Mapping[str, float] | None, name: str) -> np.ndarray:
    """+1 (long) or -1 (short) per trade: the alert's configured side, else read off the
    returns (``gross = side * (exit - entry) / entry``), long where they cannot tell."""
    if sides is not None and name in sides:
        return np.full(len(part), float(sides[name]))
    move = (part["exit_price"].to_numpy(np.float64) - part["entry_price"].to_numpy(np.float64))
    product = move * part["gross_return"].to_numpy(np.float64)
    return np.where(product < 0, -1.0, 1.0)


@njit(cache=True, nogil=True)
def _most_open_nb(entry_row, exit_row):
    """The most trades open at once (a trade is open from its entry bar to its exit bar,
    both included; trades sorted by entry)."""
    m = len(entry_row)
    best = 0
    ends = np.sort(exit_row)
    j = 0
    for i in range(m):
        while j < m and ends[j] < entry_row[i]:
            j += 1
        best = max(best, i + 1 - j)
    return best


@njit(cache=True, nogil=True)
def sleeve_equity_nb(close, entry_row, exit_row, entry_price, side, net_return, slots):
    """Equity and invested value of one sleeve (starting capital 1.0) after each bar.

    Trades are sorted by `entry_row`. At bar i: trades entered earlier and exiting at i are
    realised at ``notional * (1 + net_return)``; then trades entering at i invest
    ``min(equity / slots, cash)`` (equity as of the previous mark); one that also exits at i
    is realised at once; then open trades are marked at ``close[i]``:
    ``notional * (1 + side * (close / entry_price - 1))`` (a NaN close keeps the last mark).
    Equity = cash + marks; invested = the marks plus the proceeds of trades that exited at i (a
    trade counts as invested from its entry bar to its exit bar), never below 0. Costs land at
    the exit.
    """
    n = len(close)
    m = len(entry_row)
    equity = np.empty(n)
    invested = np.empty(n)
    notional = np.zeros(m)
    value = np.zeros(m)
    open_ids = np.empty(m, dtype=np.int64)
    n_open = 0
    cash = 1.0
    following = 0
    for i in range(n):
        exiting = 0.0
        k = 0
        while k < n_open:
            t = open_ids[k]
            if exit_row[t] <= i:
                proceeds = notional[t] * (1.0 + net_return[t])
                cash += proceeds
                exiting += max(proceeds, 0.0)
                open_ids[k] = open_ids[n_open - 1]
                n_open -= 1
            else:
                k += 1
        while following < m and entry_row[following] <= i:
            t = following
            following += 1
            marked = cash
            for j in range(n_open):
                marked += value[open_ids[j]]
            size = min(marked / slots, cash)
            if size < 0.0:
                size = 0.0
            notional[t] = size
            cash -= size
            if exit_row[t] <= i:
                cash += size * (1.0 + net_return[t])
                exiting += max(size * (1.0 + net_return[t]), 0.0)
            else:
                value[t] = size
                open_ids[n_open] = t
                n_open += 1
        total = 0.0
        held = 0.0
        price = close[i]
        for j in range(n_open):
            t = open_ids[j]
            if price == price:
                value[t] = notional[t] * (1.0 + side[t] * (price / entry_price[t] - 1.0))
            total += value[t]
            held += max(value[t], 0.0)
        equity[i] = cash + total
        invested[i] = held + exiting
    return equity, invested


def _drawdown(equity: np.ndarray) -> np.ndarray:
    """Fall from the running peak (the starting capital 1.0 included), <= 0."""
    if not len(equity):
        return equity
    peak = np.maximum.accumulate(np.maximum(equity, 1.0))
    return equity / peak - 1.0


def _share(invested: np.ndarray, equity: np.ndarray) -> np.ndarray:
    """Invested / equity, within [0, 1] (0 where the equity is gone)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(equity > 0, invested / equity, 0.0)
    return np.clip(share, 0.0, 1.0)


def _day_returns(equity: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Returns from one trading day's last equity to the next's (the first from 1.0)."""
    if not len(equity):
        return np.zeros(0)
    last = np.flatnonzero(np.r_[day[1:] != day[:-1], True])
    closes = equity[last]
    return closes / np.r_[1.0, closes[:-1]] - 1.0


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def _localised(frame: pd.DataFrame | None, column: str, timezone: str) -> pd.DataFrame:
    """A copy with `column` in the exchange time zone (naive times are read as UTC)."""
    if frame is None:
        return pd.DataFrame()
    if frame.empty or column not in frame:
        return frame
    frame = frame.copy()
    times = pd.to_datetime(frame[column])
    if times.dt.tz is None:
        times = times.dt.tz_localize("UTC")
    frame[column] = times.dt.tz_convert(timezone)
    return frame


def _stamp(value, timezone: str) -> pd.Timestamp:
    """`value` as a Timestamp in `timezone` (naive values are read as exchange time)."""
    value = pd.Timestamp(value)
    if value.tzinfo is None:
        value = value.tz_localize(timezone)
    return value.tz_convert(timezone)


def _column(frame: pd.DataFrame, name: str) -> list:
    if frame is None or frame.empty or name not in frame:
        return []
    return frame[name].dropna().unique().tolist()


def _rows(frame: pd.DataFrame, name) -> pd.DataFrame:
    if frame is None or frame.empty or "alert" not in frame:
        return pd.DataFrame()
    return frame[frame["alert"] == name]


def _finite(series: pd.Series | None, mask: np.ndarray) -> np.ndarray:
    if series is None:
        return np.empty(0)
    values = series.to_numpy(dtype=np.float64)[mask]
    return values[np.isfinite(values)]


def _float(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _interval(values: list | None) -> str:
    if not values or values[0] is None or values[1] is None:
        return "-"
    return f"[{values[0] * 100:.3f}%, {values[1] * 100:.3f}%]"
