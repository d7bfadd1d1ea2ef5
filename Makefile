# fleetwatch: `make demo` runs the pipeline on embedded brokers; `make test` runs lint and the suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test lint unit integration bench bench-quick dynamodb-table recovery-init clean

# Recovery partitions for a stateful flow: make recovery-init RECOVERY_DIR=... PARTITIONS=...
RECOVERY_DIR ?= recovery/alerts
PARTITIONS ?= 1

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] < (3, 13), "fleetwatch needs Python 3.11 or 3.12"'
	$(PYTHON) -m venv $(VENV) || ($(PYTHON) -m pip install --user -q virtualenv && $(PYTHON) -m virtualenv $(VENV))
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python -m devtools.demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: install
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every benchmark with its baseline; writes benchmarks/results/{results.json,results.md,plot.png}.
bench: install
	$(BIN)/python -m benchmarks

bench-quick: install
	$(BIN)/python -m benchmarks --quick --out build/bench/quick

# The DynamoDB table of dataflows.store (FLEET_DYNAMODB_TABLE, _REGION, _ENDPOINT_URL).
dynamodb-table: install
	$(BIN)/python -m dataflows.store --create-table

recovery-init: install
	mkdir -p $(RECOVERY_DIR)
	$(BIN)/python -m bytewax.recovery $(RECOVERY_DIR) $(PARTITIONS)

clean:
	rm -rf $(VENV) build demo-run .pytest_cache .mypy_cache .ruff_cache
