# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test check install clean

$(BIN)/perf-engine: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/perf-engine

## The main job, embedded: starts its own broker and Redis, a worker and a simulated platform.
demo: install
	$(BIN)/perf-engine demo $(DEMO_ARGS)

## Everything CI runs: fresh venv, Redis if needed, ruff, mypy --strict, pytest.
test:
	bash .ci/run

## The same checks in the existing venv (fast, for development).
check: install
	PYTHON=$(BIN)/python scripts/check

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
