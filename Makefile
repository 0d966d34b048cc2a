# make quick : set up .venv (if needed) and run the quick experiment through `dvc repro`
# make test  : set up .venv (if needed), lint (ruff) and run the test suite
# make lint  : ruff check only
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# Raw data: $ROBEX_DATA, else ./data (torchvision downloads there), else an offline mirror beside the clone.
ROBEX_DATA ?= $(if $(wildcard data/.),data,$(if $(wildcard ../shared/data/.),../shared/data,data))
export ROBEX_DATA
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup quick lint test test-slow test-all mlflow-ui

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

setup: $(VENV)/.installed

quick: setup
	$(BIN)/dvc repro

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts

test: lint
	$(BIN)/python -m pytest -q -m "not slow"

# the end-to-end tests `make test` leaves out (~5 min on 2 cores); CI runs them after `make test`
test-slow: setup
	$(BIN)/python -m pytest -q -m slow

test-all: setup
	$(BIN)/python -m pytest -q

mlflow-ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000
