"""The one duration grammar every config field that takes a wall-clock duration reads.

A duration is a positive number (decimals allowed) and a unit: ``ns``, ``us``, ``ms``, ``s``
(``sec``, ``second``), ``m`` / ``min`` (``minute``), ``h`` (``hr``, ``hour``), ``d``
(``day``), each also in the plural; spaces between number and unit are allowed and case is
ignored. `cooldown`, `skip_first`, `skip_last` and `forward` all read durations with
`parse_duration_ns`, so ``30m``, ``30min`` and ``0.5h`` mean the same everywhere.

For example::

    >>> parse_duration_ns("1.5h") == 90 * 60 * 10**9
    True
    >>> parse_duration_ns("15 bars") is None
    True
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["DURATION_EXAMPLE", "parse_duration_ns"]

DURATION_EXAMPLE = "30s, 30min, 1.5h or 1d"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]+)\s*$")
_UNIT_NS = {
    **dict.fromkeys(("ns", "nanosecond", "nanoseconds"), 1),
    **dict.fromkeys(("us", "microsecond", "microseconds"), 1_000),
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), 1_000_000),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 10**9),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60 * 10**9),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600 * 10**9),
    **dict.fromkeys(("d", "day", "days"), 86400 * 10**9),
}


def parse_duration_ns(value: Any) -> int | None:
    """`value` as a whole number of nanoseconds when it is a duration string (``'30min'``,
    ``'1.5h'``, ``'90 s'``), else None (numbers, bar counts and other words are not durations;
    the caller decides what those mean). A duration that rounds to 0 ns is None too."""
    if not isinstance(value, str):
        return None
    m = _DURATION.match(value.lower())
    if not m or m.group(2) not in _UNIT_NS:
        return None
    ns = int(round(float(m.group(1)) * _UNIT_NS[m.group(2)]))
    return ns if ns > 0 else None
