# The two commands a new user needs: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup services demo test test-fast chaos bench lint typecheck dashboards clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the project with its dev extras

services:  ## install Debian's redis-server and influxdb when missing (binaries only)
	@bash scripts/ensure-services.sh

demo: setup  ## run the whole pipeline on a simulated bot workload, no set-up needed
	@bash scripts/ensure-services.sh || echo "demo: continuing without local servers (fakeredis, file sink)"
	$(BIN)/telemetry demo

test: setup services  ## the test suite, against real redis-server and influxd it starts itself
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: setup  ## unit tests only (no servers)
	$(BIN)/python -m pytest -q -m 'not chaos and not slow' -k 'not real'

chaos: setup services  ## long fault-injection soaks
	$(BIN)/python -m pytest -q -m chaos -p no:cacheprovider

bench: setup services  ## benchmarks side by side; figures land in bench/RESULTS.md
	$(BIN)/python -m bench

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check . || true

typecheck: setup
	$(BIN)/mypy

dashboards: setup
	$(BIN)/telemetry dashboards build

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
