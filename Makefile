# Every target creates .venv itself when it is missing, so a fresh clone needs only
# Python 3.11 and make: `make demo` and `make test` do all the set-up.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: all test lint lint-unit format typecheck pytest reliability demo sandbox bench bench-full bench-profile clean schemas

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

lint: $(VENV)/.installed-dev lint-unit
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The systemd unit, where systemd-analyze exists (skipped, saying so, where it does not):
# `verify` must pass without a word (a misspelt key is only a warning to it) and `security` must
# rate it at most $(UNIT_EXPOSURE_MAX) (its --threshold counts in tenths). `verify` also checks that every Exec*= program exists; ExecStart= names
# /opt/drgreen-poller/bin/drgreen-poller, where the README's install steps put it, which a
# checkout does not have. So verify reads a copy of the unit in a temporary directory with
# that prefix pointed at this checkout's $(BIN)/: the same console script, installed by pip the
# same way, and every other line as shipped.
UNIT := systemd/drgreen-poller.service
UNIT_EXPOSURE_MAX := 1.5
lint-unit: $(VENV)/.installed
	@if ! command -v systemd-analyze >/dev/null 2>&1; then \
		echo "lint-unit: systemd-analyze not found: unit checks skipped"; exit 0; fi; \
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT || exit 1; \
	sed 's|/opt/drgreen-poller/bin/|$(CURDIR)/$(BIN)/|g' $(UNIT) > "$$tmp/drgreen-poller.service" || exit 1; \
	said=$$(systemd-analyze verify "$$tmp/drgreen-poller.service" 2>&1); code=$$?; \
	if [ $$code -ne 0 ] || [ -n "$$said" ]; then \
		echo "$$said" >&2; echo "lint-unit: systemd-analyze verify $(UNIT) failed" >&2; exit 1; fi; \
	echo "lint-unit: systemd-analyze verify $(UNIT): ok"; \
	threshold=$$(echo "$(UNIT_EXPOSURE_MAX)" | awk '{ print int($$1 * 10 + 0.5) }'); \
	report=$$(systemd-analyze security --offline=true --threshold=$$threshold --no-pager $(UNIT)); \
	code=$$?; echo "lint-unit: $$(echo "$$report" | tail -n 1)"; \
	if [ $$code -ne 0 ]; then echo "lint-unit: $(UNIT) is rated above $(UNIT_EXPOSURE_MAX)" >&2; fi; \
	exit $$code

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

# Every script in bench/ (not the _helpers), each printing its table and appending its run to
# BENCHMARKS.md: `make bench` at the quick profile (under 5 minutes in all on 2 cores),
# `make bench-full` at the sizes the targets name, on SQLite and on PostgreSQL with one and two
# instances (an hour or more on 2 cores: the scale script alone runs 4 sizes × 3 stores; each
# script takes --backend sqlite|postgresql|both and --instances to run a part). Every script
# takes --profile quick|full (bench/_common.py's profile_arguments).
BENCH_SCRIPTS = $(sort $(filter-out bench/_%,$(wildcard bench/*.py)))

bench: $(VENV)/.installed-dev
	@$(MAKE) --no-print-directory bench-profile PROFILE=quick

bench-full: $(VENV)/.installed-dev
	@$(MAKE) --no-print-directory bench-profile PROFILE=full

bench-profile:
	@start=$$(date +%s); \
	for script in $(BENCH_SCRIPTS); do \
		echo "== $$script --profile $(PROFILE)"; began=$$(date +%s); \
		$(BIN)/python $$script --profile $(PROFILE) || exit 1; \
		echo "== $$script: $$(( $$(date +%s) - began )) s"; \
	done; \
	echo "bench: $(words $(BENCH_SCRIPTS)) scripts, $(PROFILE) profile, $$(( $$(date +%s) - start )) s"

# The event schemas: schemas/ is the source; the package ships a copy (a test keeps them equal).
schemas:
	rm -rf drgreen_poller/schemas
	cp -r schemas drgreen_poller/schemas

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage build dist *.egg-info
