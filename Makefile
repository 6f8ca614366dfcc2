# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test check check-fast install clean

$(BIN)/perf-engine: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/perf-engine

## The main job, embedded: starts its own broker and Redis, a worker and a simulated platform.
demo: install
	$(BIN)/perf-engine demo $(DEMO_ARGS)

## Everything CI runs, in a venv of its own (.venv-ci): Redis if needed, ruff, mypy
## --strict, the benchmark smoke run, the whole pytest suite.
test:
	bash .ci/run

## The same checks in the developer's .venv.
check: install
	PYTHON=$(BIN)/python scripts/check

## The unit and property tests that need no broker and start no servers (under a minute),
## in two processes.
check-fast: install
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q -n 2 -m "not kafka and not slow"

clean:
	rm -rf $(VENV) .venv-ci .mypy_cache .ruff_cache .pytest_cache .hypothesis
