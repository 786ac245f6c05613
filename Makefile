# otel-audit developer entry points. Everything installs into ./.venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test lint unit run bench docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The whole suite: lint, unit and integration tests. Integration tests start the
# local Elasticsearch (and build the Collector) through the project's own code.
test: lint
	$(PY) -m pytest

unit: $(STAMP)
	$(PY) -m pytest -m "not integration and not collector"

run: $(STAMP)
	$(PY) -m otel_audit.cli demo

bench: $(STAMP)
	$(PY) -m bench

docs: $(STAMP)
	$(PY) -m otel_audit.cli schema docs --write

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
