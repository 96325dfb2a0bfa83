"""Alert and trade statistics, and their readable `summary.md`.

`compute_stats` turns the run's alerts, taken trades and forward returns into one JSON-ready dict
(plain Python numbers, ``None`` where a value is undefined, never NaN or inf); `render_markdown`
prints it. Both are pure functions of their arguments.

Definitions (also printed at the end of `summary.md`)
-----------------------------------------------------
- Fires by hour and weekday are in the exchange time zone (`timezone`).
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
- The equity curve compounds trade returns in exit order, each trade on the whole equity:
  ``total_return = prod(1 + r) - 1``. Where trades of several alerts or symbols overlap in time
  this is a per-trade compounding, not a portfolio simulation. Max drawdown is the worst fall of
  that curve from its running peak (starting equity 1), as a negative fraction.
- The period is the data's, not the alerts': `start`/`end` are the first and last bar of the
  data (`data_period`), so a strategy that fired only in March of a year of data is annualised
  over the year, as holding cash the rest of it.
- Annualised return: ``(1 + total) ** (1 / years) - 1`` over that period in calendar years;
  ``None`` for periods under `MIN_ANNUALISED_DAYS` (28) calendar days, where annualising
  magnifies noise.
- Daily returns compound the trades exiting on each exchange-local day; sessions of the period
  without an exit count as 0. Trading days are the sessions of the period from the session
  table (`trading_days`: holidays are not trading days). Sharpe = mean / std (ddof 1) x
  sqrt(252); Sortino = mean / downside deviation (root mean square of negative daily returns
  over all days) x sqrt(252); risk-free rate 0.
- Exposure: held bars of the taken trades / `n_bars` (bars in the run summed over symbols);
  ``None`` without `n_bars`. Overall exposure adds all alerts' trades, so it can exceed 1 when
  alerts hold the same symbol at once.
- Longest losing streak: most consecutive losing trades in exit order.
- ``both_touched``: trades whose exit bar touched both stop and target, where the result rests on
  the stop-first assumption.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from numba import njit

__all__ = ["compute_stats", "data_period", "render_markdown", "stats_frame"]

TRADING_DAYS_PER_YEAR = 252
MIN_ANNUALISED_DAYS = 28
_BOOTSTRAP_DRAWS = 4_000_000  # ~0.04 s per interval: caps resamples beyond 2k values (>= 200)
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def compute_stats(alerts: pd.DataFrame, trades: pd.DataFrame, forward: pd.DataFrame,
                  horizons: Sequence, *, timezone: str, start: pd.Timestamp | None,
                  end: pd.Timestamp | None, trading_days: int | None, seed: int = 0,
                  n_bars: int | None = None, n_resamples: int = 0) -> dict:
    """Statistics overall and per alert, as ``{"overall": {...}, "alerts": {name: {...}}}``.

    `alerts` has ``timestamp`` (tz-aware), ``symbol``, ``alert``; `trades` the taken trades
    (``alert, symbol, signal_time, entry_time, entry_price, exit_time, exit_price, reason,
    bars_held, return, gross_return, mfe, mae, both_touched``); `forward` one row per alert event
    with ``alert`` and ``ret_L, mfe_L, mae_L, complete_L`` per horizon label. Any of them may be
    empty. `start`, `end` and `trading_days` describe the data, not the events: its first and
    last bar and its number of sessions (`data_period` reads them off a `BarSet`; None where
    there are no bars). See the module docstring for each definition. For example
    ``compute_stats(alerts, trades, forward, horizons, timezone="America/New_York",
    **data_period(bars), n_bars=bars.n_bars)["overall"]["trades"]["win_rate"]``.
    """
    labels = [h.label for h in horizons]
    alerts = _localised(alerts, "timestamp", timezone)
    trades = _localised(trades, "exit_time", timezone)
    span_start, span_end = (None if t is None else _stamp(t, timezone) for t in (start, end))
    days = None if trading_days is None else int(trading_days)
    context = {"labels": labels, "seed": seed, "n_bars": n_bars, "days": days,
               "span": (span_start, span_end), "n_resamples": n_resamples}
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
        "definitions": {
            "timezone": timezone, "annualisation_days": TRADING_DAYS_PER_YEAR,
            "trading_days": days, "n_bars": n_bars, "bootstrap_resamples": n_resamples,
            "seed": seed,
            "period_start": None if span_start is None else span_start.isoformat(),
            "period_end": None if span_end is None else span_end.isoformat(),
        },
    }


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
            lines += ["", "Fires by weekday:", "", "| " + " | ".join(days) + " |",
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
            ("total return (compounded)", _pct(t["total_return"])),
            ("annualised return", _pct(t["annualized_return"])),
            ("max drawdown", _pct(t["max_drawdown"])),
            ("Sharpe (daily, x sqrt 252)", _num(t["sharpe"])),
            ("Sortino (daily, x sqrt 252)", _num(t["sortino"])),
            ("exposure", _pct(t["exposure"])), ("average bars held", _num(t["avg_bars_held"])),
            ("longest losing streak", t["longest_losing_streak"]),
            ("both stop and target touched (stop taken)", t["both_touched"]),
            ("exit reasons", ", ".join(f"{k} {v}" for k, v in t["reasons"].items()) or "-"),
        ]
        lines += ["| metric | value |", "| --- | ---: |"]
        lines += [f"| {k} | {v} |" for k, v in rows]
    d = stats.get("definitions", {})
    lines += [
        "", "## Definitions", "",
        f"- Times are in {d.get('timezone', 'the exchange time zone')}; period "
        f"{d.get('period_start') or '-'} to {d.get('period_end') or '-'}, "
        f"{d.get('trading_days') or 0} trading days.",
        "- Forward returns use complete horizons only; hit rate = share of positive returns; "
        + (f"95% CIs are percentile bootstraps ({d.get('bootstrap_resamples')} resamples, "
           f"seed {d.get('seed')})." if d.get("bootstrap_resamples") else
           "no confidence intervals (turn them on with `stats: {bootstrap: 2000}`)."),
        "- Trade returns are net of commission and slippage; the equity curve compounds them in "
        "exit order, each trade on the whole equity; max drawdown is from the running peak.",
        "- Sharpe and Sortino use daily returns (trades compounded per exit day, days without "
        "exits count as 0), risk-free rate 0, annualised with sqrt(252).",
        "- Exposure = bars held by the taken trades / bars in the run (all symbols).",
        "- Both touched: the exit bar reached stop and target; the stop was assumed first.",
        "",
    ]
    return "\n".join(lines)


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
        "trades": _trade_block(trades, context),
    }


def _fires_by_hour(alerts: pd.DataFrame) -> dict:
    if alerts.empty:
        return {}
    counts = alerts["timestamp"].dt.hour.value_counts().sort_index()
    return {f"{int(hour):02d}": int(count) for hour, count in counts.items()}


def _fires_by_weekday(alerts: pd.DataFrame) -> dict:
    if alerts.empty:
        return {}
    counts = alerts["timestamp"].dt.day_of_week.value_counts()
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


def _trade_block(trades: pd.DataFrame, context: dict) -> dict:
    block = {
        "count": 0, "wins": 0, "losses": 0, "win_rate": None, "avg_win": None, "avg_loss": None,
        "profit_factor": None, "expectancy": None, "total_return": 0.0,
        "annualized_return": None, "max_drawdown": 0.0, "sharpe": None, "sortino": None,
        "exposure": 0.0 if context["n_bars"] else None, "avg_bars_held": None,
        "longest_losing_streak": 0, "both_touched": 0, "reasons": {},
    }
    if trades.empty:
        return block
    order = trades.sort_values(["exit_time", "entry_time"], kind="stable")
    returns = order["return"].to_numpy(dtype=np.float64)
    returns = returns[np.isfinite(returns)]
    wins, losses = returns[returns > 0], returns[returns < 0]
    equity = np.cumprod(1.0 + returns)
    peak = np.maximum.accumulate(np.r_[1.0, equity])[1:]
    total = float(equity[-1] - 1.0) if len(equity) else 0.0
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
        "total_return": _float(total),
        "annualized_return": _annualised(total, context["span"]),
        "max_drawdown": _float(min(0.0, float(np.min(equity / peak - 1.0)))) if len(equity)
        else 0.0,
        "exposure": _float(held.sum() / context["n_bars"]) if context["n_bars"] else None,
        "avg_bars_held": _float(held.mean()),
        "longest_losing_streak": _longest_run(returns < 0),
        "both_touched": int(order["both_touched"].fillna(False).astype(bool).sum())
        if "both_touched" in order else 0,
        "reasons": {str(k): int(v) for k, v in order["reason"].value_counts().items()}
        if "reason" in order else {},
    })
    block["sharpe"], block["sortino"] = _daily_ratios(order, context["days"])
    return block


def _daily_ratios(trades: pd.DataFrame, days: int | None) -> tuple[float | None, float | None]:
    returns = trades["return"].to_numpy(dtype=np.float64)
    ok = np.isfinite(returns)
    # Exchange-local calendar days as integers; `trades` is in exit order, so each day's exits
    # are one run and compound with one reduceat.
    exit_day = (trades["exit_time"].dt.tz_localize(None).to_numpy()
                .astype("datetime64[D]").astype(np.int64)[ok])
    growth = 1.0 + returns[ok]
    starts = np.flatnonzero(np.r_[True, exit_day[1:] != exit_day[:-1]]) if len(growth) \
        else np.zeros(0, np.int64)
    values = np.multiply.reduceat(growth, starts) - 1.0 if len(growth) else np.zeros(0)
    padding = max(0, (days or 0) - len(values))
    values = np.r_[values, np.zeros(padding)]
    if len(values) < 2:
        return None, None
    mean = values.mean()
    std = values.std(ddof=1)
    downside = math.sqrt(float(np.mean(np.minimum(values, 0.0) ** 2)))
    scale = math.sqrt(TRADING_DAYS_PER_YEAR)
    sharpe = _float(mean / std * scale) if std > 0 else None
    sortino = _float(mean / downside * scale) if downside > 0 else None
    return sharpe, sortino


def _annualised(total: float, span: tuple) -> float | None:
    start, end = span
    if start is None or end is None:
        return None
    years = (end - start) / pd.Timedelta(days=365.25)
    if years < MIN_ANNUALISED_DAYS / 365.25 or total <= -1.0:
        return None
    return _float((1.0 + total) ** (1.0 / years) - 1.0)


def _longest_run(flags: np.ndarray) -> int:
    """The most consecutive True values in `flags`."""
    edges = np.flatnonzero(np.diff(np.r_[0, flags.astype(np.int8), 0]))
    return int((edges[1::2] - edges[::2]).max()) if len(edges) else 0


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
