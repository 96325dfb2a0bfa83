# Two commands on a fresh machine: `make backtest` and `make test`. Both build .venv on first use
# (and again only when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/rsi.yaml
ARGS ?=

.PHONY: backtest test lint pytest fuzz bench regress regress-update docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,dask]'
	touch $(STAMP)

backtest: $(STAMP)
	$(PY) -m backtester run $(CONFIG) $(ARGS)

test: lint pytest

lint: $(STAMP)
	$(PY) -m ruff check backtester tests bench

pytest: $(STAMP)
	$(PY) -m pytest

# The rule parser and config loader fuzz (tests/test_fuzz.py) with a long budget; `make test`
# runs the same tests with FUZZ_EXAMPLES' small default. FUZZ_EXAMPLES=N to change it.
FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/test_fuzz.py

bench: $(STAMP)
	$(PY) bench/run_all.py

regress: $(STAMP)
	$(PY) -m backtester regress

regress-update: $(STAMP)
	$(PY) -m backtester regress --update

docs: $(STAMP)
	$(PY) -m backtester docs

clean:
	rm -rf results .pytest_cache .ruff_cache
