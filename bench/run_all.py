"""Run every benchmark in sequence, each in its own process: what `make bench` does.

Usage: ``python bench/run_all.py [--quick] [--only NAME[,NAME]]``. ``--quick`` shrinks every
benchmark to a smoke test (seconds, not minutes): useful to check that they still run, useless
as figures. Each benchmark prints its Markdown report and writes it under bench/out/; this script
adds a one-line summary per benchmark and exits non-zero if any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent

# name -> (script, full-size arguments, --quick arguments)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "indicators": ("indicators.py", [], ["--bars", "100000", "--repeat", "1"]),
    "trades": ("trades.py", [], ["--bars", "100000", "--signals", "1000", "--repeat", "1"]),
    "rules": ("rules.py", [], ["--quick"]),
    "clusters": ("clusters.py", ["--compare"], ["--quick"]),
    "scaling": ("scaling.py", [], ["--quick"]),
    "peers": ("peers.py", [], ["--quick"]),
    "outputs": ("outputs.py", [], ["--quick"]),
}


def known_flags(arguments: list[str], source: str) -> list[str]:
    """`arguments` without the flags (and their values) that the script's source never names:
    a benchmark added later may not know one."""
    kept, dropping = [], False
    for argument in arguments:
        if argument.startswith("--"):
            dropping = argument not in source
        if not dropping:
            kept.append(argument)
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    args = parser.parse_args(argv)
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = only - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))} "
                     f"(one of {', '.join(BENCHMARKS)})")
    summary = []
    for name, (script, full, quick) in BENCHMARKS.items():
        if only and name not in only:
            continue
        path = BENCH / script
        if not path.exists():
            summary.append((name, "skipped (no bench/" + script + ")", 0.0))
            continue
        extra = known_flags(quick if args.quick else full, path.read_text(encoding="utf-8"))
        command = [sys.executable, str(path), *extra]
        print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
        began = time.perf_counter()
        status = subprocess.call(command, cwd=BENCH.parent)
        seconds = time.perf_counter() - began
        summary.append((name, "ok" if status == 0 else f"FAILED (exit {status})", seconds))
    print("\n=== summary")
    for name, outcome, seconds in summary:
        print(f"{name:<12} {outcome:<28} {seconds:7.1f}s")
    return 1 if any(outcome.startswith("FAILED") for _, outcome, _ in summary) else 0


if __name__ == "__main__":
    sys.exit(main())
