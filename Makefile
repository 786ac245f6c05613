# otel-audit developer entry points. Everything installs into ./.venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test lint unit run bench docs clean collector

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

# The whole suite: lint, unit and integration tests. The Collector is built (or found in
# its cache) first, outside any test's timeout; integration tests start the local
# Elasticsearch through the project's own code.
test: lint collector
	$(PY) -m pytest

unit: $(STAMP)
	$(PY) -m pytest -m "not integration and not collector"

run: $(STAMP)
	$(PY) -m otel_audit.cli demo

bench: $(STAMP)
	$(PY) -m bench

docs: $(STAMP)
	$(PY) -m otel_audit.cli schema docs --write

# The OpenTelemetry Collector (otelcol-audit), built with ocb from the Go module proxy and
# cached under ~/.cache/otel-audit/collector (OTEL_AUDIT_CACHE_DIR); prints the binary path.
collector:
	bash scripts/build-collector.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
