# Every target creates .venv itself when it is missing, so a fresh clone needs only
# Python 3.11 and make: `make demo` and `make test` do all the set-up.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: all test lint format typecheck pytest reliability demo sandbox bench clean

all: test

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Runtime install (for the demo); the stamp is refreshed when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

# Development install: the package plus the dev extra.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

pytest: $(VENV)/.installed-dev
	$(BIN)/pytest --cov --cov-report=term

test: lint typecheck pytest

# The reliability suite at full size (crash loop, upstream faults, disk, properties): real
# processes, about 7 minutes. `make test` runs its short form with everything else.
reliability: $(VENV)/.installed-dev
	RELIABILITY_FULL=1 $(BIN)/pytest tests/reliability -p no:cacheprovider -q

demo: $(VENV)/.installed
	$(BIN)/drgreen-poller demo

sandbox: $(VENV)/.installed
	$(BIN)/drgreen-poller sandbox

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/upstream_cost.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage build dist *.egg-info
