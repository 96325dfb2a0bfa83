"""`define` chains are a graph, not a tree: 60 definitions each using the previous one twice
(2**60 terms written out) validate, describe and run. Each step runs in a thread with a
deadline far above its cost, so an expansion coming back fails the test instead of hanging it."""

import threading
from pathlib import Path

import pytest

from backtester import expr, synth
from backtester.cli import main
from backtester.config import load_config
from backtester.plan import compile_plan

DEADLINE = 120.0   # seconds; linear work takes well under one, 2**60 terms never finish
N = 60


def within_deadline(fn, *args):
    """`fn(*args)`, run in a daemon thread; fails the test if it is not done by DEADLINE."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            out["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(DEADLINE)
    assert not worker.is_alive(), f"{fn.__name__} did not finish in {DEADLINE:.0f}s"
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.fixture
def chain(tmp_path, monkeypatch) -> Path:
    synth.generate(["SYNA"], "2024-03-04", "2024-03-05", seed=5).to_parquet(tmp_path / "b.parquet")
    defines = "".join(f"  a{i}: a{i - 1} + a{i - 1}\n" for i in range(1, N + 1))
    rule = f"a{N} > 0 and sma(a{N}, 3) > a{N - 1} and crosses_above(a{N}, a{N - 2})"
    (tmp_path / "chain.yaml").write_text(
        "name: chain\ndata: {path: b.parquet}\ndefine:\n  a0: close / 1000000\n" + defines
        + f"alerts:\n  - {{name: a, when: '{rule}'}}\n"
        "execution: {backend: sequential}\noutput: {dir: out}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "chain.yaml"


def test_sixty_chained_definitions_compile_to_a_graph_of_sixty_sums(chain):
    plan = within_deadline(compile_plan, load_config(chain))
    sums = [n for root in plan.roots for n in expr.walk(root) if isinstance(n, expr.Arith)]
    assert len(sums) == N + 1   # a1..a60 once each, and a0's division


def test_a_chain_is_described_in_a_few_bounded_lines(chain, capsys):
    assert within_deadline(main, ["validate", "chain.yaml"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("chain.yaml: ok (1 alert")
    assert max(map(len, out)) < 300
    assert out[1].startswith("alert a: ((((") and out[1].endswith("...")


def test_a_chain_runs_and_its_indicator_columns_get_distinct_bounded_names(chain, capsys):
    assert within_deadline(main, ["run", "chain.yaml"]) == 0
    plan = compile_plan(load_config(chain))
    names = [name for name, _ in plan.alerts[0].columns]
    assert len(names) == 1 and names[0].startswith("sma(") and names[0].endswith("...#0")
    assert len(names[0]) < 130
    assert (chain.parent / "out").is_dir()


def test_a_rule_too_long_to_quote_is_cut_in_the_error():
    defines = {f"a{i}": f"a{i - 1} + a{i - 1}" for i in range(1, N + 1)} | {"a0": "close"}
    with pytest.raises(Exception) as caught:
        within_deadline(lambda: expr.parse_condition(f"a{N}", defines=defines))
    message = str(caught.value)
    assert "is a number, not a condition" in message and len(message) < 400
