"""GIL-holding share of cluster time, compiled evaluator vs the reference interpreter.

A child process runs every cluster of a workload on one thread, twice per evaluator, under
`py-spy record` (`pip install py-spy`, the dev extra): once sampling only while the thread holds
the GIL (`--gil`), once always. The share is the samples with `run_cluster` on the stack in the
first recording over those in the second, each normalised by its run's cluster seconds. That is
the serial fraction that caps threads: with share s, two threads reach at most 1 / (s + (1 - s)
/ 2) (Amdahl).

Workloads: `scaling` (bench/scaling.py's 16 alerts, one cluster per symbol and month) and
`weeks` (bench/clusters.py's 4 alerts, one cluster per symbol and week, ~2k bars each).

Usage: ``python bench/gil.py [--symbols 4] [--days 250] [--workload scaling,weeks]``. Prints a
Markdown table and writes bench/out/gil.md. Goal (issue 11): under 5% with the compiled path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

RATE = 250


def workload(name: str, symbols: int, days: int):
    import clusters  # bench/clusters.py
    import scaling  # bench/scaling.py

    from backtester import api
    barset = clusters.make_bars(symbols, days)
    if name == "weeks":
        config = clusters.config("week")
    else:
        config = clusters.config("month")
        config["alerts"] = scaling.ALERTS
    prep = api.prepare(config, bars=barset, backend="sequential")
    return prep, clusters.work(prep)


def child(args) -> None:
    from backtester import cluster
    cluster.DEFAULT_EVALUATOR = args.evaluator
    prep, items = workload(args.workload, args.symbols, args.days)
    sessions = prep.bars.sessions
    for c, b in items[:2]:
        cluster.run_cluster(prep.plan, c, b, sessions)   # kernels loaded before the clock
    Path(args.ready).write_text("ready")
    while not Path(args.go).exists():
        time.sleep(0.01)
    seconds = 0.0
    began = time.perf_counter()
    while time.perf_counter() - began < args.seconds:
        for c, b in items:
            seconds += cluster.run_cluster(prep.plan, c, b, sessions).seconds
    print(json.dumps({"cluster_seconds": seconds}))


def record(args, evaluator: str, gil: bool, folder: Path) -> tuple[int, float]:
    """(samples with run_cluster on the stack, cluster seconds) of one recorded child run."""
    ready, go, raw = folder / "ready", folder / "go", folder / f"{evaluator}-{gil}.txt"
    for f in (ready, go):
        f.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", "--evaluator", evaluator, "--workload",
         args.workload, "--symbols", str(args.symbols), "--days", str(args.days),
         "--seconds", str(args.seconds), "--ready", str(ready), "--go", str(go)],
        stdout=subprocess.PIPE, text=True)
    while not ready.exists():
        if proc.poll() is not None:
            raise SystemExit("the child failed")
        time.sleep(0.05)
    spy = subprocess.Popen(
        [args.py_spy, "record", "-r", str(RATE), "-f", "raw", "-o", str(raw), "--pid",
         str(proc.pid), "--nonblocking", *(["--gil"] if gil else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)   # py-spy attached
    go.write_text("go")
    out, _ = proc.communicate()
    spy.wait(timeout=60)
    seconds = json.loads(out.strip().splitlines()[-1])["cluster_seconds"]
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "run_cluster" in stack:
            samples += int(count)
    return samples, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=4)
    parser.add_argument("--days", type=int, default=250)
    parser.add_argument("--seconds", type=float, default=8.0, help="per recording")
    parser.add_argument("--workload", default="scaling,weeks")
    parser.add_argument("--evaluators", default="interpreter,fused")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--evaluator", default="fused", help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    parser.add_argument("--go", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    args.py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(args.py_spy).exists():
        raise SystemExit("py-spy is missing: pip install py-spy (the dev extra)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = ["# GIL-holding share of cluster time", "",
             f"py-spy at {RATE} Hz on one thread running every cluster for ~{args.seconds:g} s per "
             f"recording; {args.symbols} synthetic symbols x {args.days} days; load average "
             f"{load:.2f} at the start.", "",
             "| workload | evaluator | GIL samples/s of cluster time | all samples/s | GIL share | "
             "Amdahl bound at 2 threads |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    with tempfile.TemporaryDirectory(dir=os.environ.get("GIL_RAW_DIR")) as tmp:
        for name in args.workload.split(","):
            args.workload = name
            for evaluator in args.evaluators.split(","):
                gil, gil_s = record(args, evaluator, True, Path(tmp))
                every, every_s = record(args, evaluator, False, Path(tmp))
                share = (gil / gil_s) / (every / every_s)
                lines.append(f"| {name} | {evaluator} | {gil / gil_s:.0f} | {every / every_s:.0f} | "
                             f"{share:.1%} | {1 / (share + (1 - share) / 2):.2f}x |")
                print(lines[-1], flush=True)
    report = "\n".join(lines) + "\n"
    print(report)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gil.md").write_text(report)


if __name__ == "__main__":
    main()
