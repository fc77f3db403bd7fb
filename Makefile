# The README's two commands: `make demo` (set up, then run the main job on the built-in default)
# and `make test` (set up, then lint and run the whole test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= results/demo
SEED ?= 0
STAMP := $(VENV)/.pathdep-installed

.PHONY: setup demo bench test lint format clean

setup: $(STAMP)

# torch is pinned and installed first so that pip never pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# The main job: default models (built once, cached), Theorem 3.1, the sim path study and the llm
# protocol on both default architectures, into one report folder ($(OUT)/report.md).
# `make demo SEED=7 OUT=results/demo7` runs another seed.
demo: setup
	$(PY) -m study --out $(OUT) --seed $(SEED)

bench: setup
	$(PY) -m sim bench
	$(PY) benchmarks/main_job.py

test: setup lint
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
