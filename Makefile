# otel-audit developer entry points. Everything installs into ./.venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The native protobuf decoder (native/, Rust) is built with cargo, looked up on PATH and in
# rustup's ~/.cargo/bin. Cargo's build directory is kept in the project's cache, so a fresh
# clone on a machine that built it before rebuilds in seconds; CARGO_TARGET_DIR, when set,
# gives a checkout a build directory of its own (two checkouts building at once would
# otherwise hand each other their extension).
CARGO_PATH    := $(HOME)/.cargo/bin:$$PATH
NATIVE_TARGET := $(or $(CARGO_TARGET_DIR),$(or $(OTEL_AUDIT_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/otel-audit)/native-target)
NATIVE_SRC    := native/pyproject.toml native/Cargo.toml native/Cargo.lock \
                 native/otel_audit_native.pyi $(wildcard native/src/*.rs)

.PHONY: install test lint unit run bench fuzz-integrity docs clean collector sdk sdk-test bench-sdk dist browser-deps console-screenshots fuzz drill

install: $(STAMP)

# Without cargo the receiver runs its pure-Python paths (same results, more CPU per event);
# under CI=true a missing toolchain is an error, since CI must exercise the native ones.
$(STAMP): pyproject.toml $(NATIVE_SRC)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@if PATH="$(CARGO_PATH)" command -v cargo >/dev/null; then \
	  PATH="$(CARGO_PATH)" CARGO_TARGET_DIR="$(NATIVE_TARGET)" $(PY) -m pip install --quiet ./native; \
	elif [ "$${CI:-}" = true ]; then \
	  echo "make: cargo not found (PATH, ~/.cargo/bin) and CI=true: native/ must be built" >&2; exit 1; \
	else \
	  echo "make: no cargo, so the pure-Python receiver is installed without native/ (rustup.rs)"; \
	fi
	touch $(STAMP)

# Style, types, and the import contracts in pyproject.toml (imports point only downward).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	$(PY) sdk/generate.py --check

# The whole suite: lint, unit, integration and browser tests, then the integration tests
# that decode OTLP (the receiver's, the end-to-end and the demo's) once more on the
# pure-Python paths (OTEL_AUDIT_NATIVE_DECODER=0), which a machine without cargo runs; the
# fuzz test holds the two decoders to the same answers on every input. The Collector is built (or
# found in its cache) first, outside any test's timeout;
# integration tests start the local Elasticsearch through the project's own code.
test: lint collector sdk-test browser-deps
	$(PY) -m pytest
	OTEL_AUDIT_NATIVE_DECODER=0 $(PY) -m pytest -m "integration and not lifecycle and not drill" \
		-p no:cacheprovider tests/receiver tests/e2e tests/demo

unit: $(STAMP)
	$(PY) -m pytest -m "not integration and not collector and not browser"

run: $(STAMP)
	$(PY) -m otel_audit.cli demo

bench: $(STAMP) sdk
	$(PY) -m bench

# The verifier's property test at fuzzing size: 100,000 single mutations of a sealed store
# (events and block records), each must be detected; prints the case count.
fuzz-integrity: $(STAMP)
	OTEL_AUDIT_FUZZ_CASES=$${OTEL_AUDIT_FUZZ_CASES:-100000} $(PY) -m pytest -s -q -p no:cacheprovider --timeout=0 \
		tests/indexer/integrity/test_classify_property.py -k every_single_mutation

# Fault drills through the real Collector into two receivers on a three-node cluster, one
# table row each (sent, acknowledged, stored, lost, duplicated, recovery, verify): SIGKILLs,
# an Elasticsearch node and then the whole cluster down, a full spool, a slow, flapping and
# half-answering Elasticsearch, and a soak of SOAK_SECONDS (default 1800). DRILLS=a,b picks.
drill: $(STAMP) collector
	$(PY) -m tests.drill

docs: $(STAMP)
	$(PY) -m otel_audit.cli schema docs --write
	$(PY) sdk/generate.py

# The Node.js and Go helpers (sdk/): their dependencies from the npm registry and the Go
# module proxy, pinned by sdk/node/package-lock.json and sdk/go/go.sum.
SDK_NODE_STAMP := sdk/node/node_modules/.installed
$(SDK_NODE_STAMP): sdk/node/package.json sdk/node/package-lock.json
	npm ci --prefix sdk/node --no-audit --no-fund --loglevel=error
	touch $(SDK_NODE_STAMP)

sdk: $(SDK_NODE_STAMP)
	cd sdk/go && go mod download
	cd sdk/go/examples && go mod download

# The helpers' cost per event on top of their SDK's own emit (QUICK=1: small sizes).
bench-sdk: sdk
	cd sdk/node && node bench/emit.bench.js $(if $(QUICK),--quick,)
	cd sdk/go && go test -run '^$$' -bench . -benchmem -benchtime $(if $(QUICK),20000x,2s) .

# Their own tests: the shared validator table, emitting through the real SDKs, types; the
# example services (sdk/*/examples, run by tests/e2e/test_polyglot_e2e.py) vetted.
sdk-test: sdk
	cd sdk/node && npm test --silent
	cd sdk/go && go vet ./... && go test ./...
	cd sdk/go/examples && go vet ./...
	node --check sdk/node/examples/billing.js

# The OpenTelemetry Collector (otelcol-audit), built with ocb from the Go module proxy and
# cached under ~/.cache/otel-audit/collector (OTEL_AUDIT_CACHE_DIR); prints the binary path.
collector:
	bash scripts/build-collector.sh

# The wheel a service installs (`pip install dist/otel_audit-*.whl`): it requires only the
# OpenTelemetry API and SDK; the receiver, query API and CLI need its `server` extra.
dist:
	$(PYTHON) -m pip wheel --quiet --no-deps --wheel-dir dist .
	@ls dist/otel_audit-*.whl

# The console's browser tests drive Debian's Chromium with Playwright (from .[dev]);
# Playwright's own browser download is not used. Installs it when missing (root: CI).
CHROMIUM ?= /usr/bin/chromium
browser-deps:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; \
	  else \
	    echo "make: $(CHROMIUM) missing: sudo apt-get install chromium fonts-dejavu-core" >&2; exit 1; \
	  fi; \
	fi

# Coverage-guided fuzzing of the OTLP decoders (fuzz/README.md): the Rust decoder alone for
# FUZZ_NATIVE_RUNS cases (libFuzzer, built by cargo), then FUZZ_RUNS cases shared by the
# Python harness's targets; prints cases, cases/s, coverage and findings (exit 1 on any).
FUZZ_RUNS ?= 100000
FUZZ_NATIVE_RUNS ?= 1000000
fuzz: $(STAMP)
	PATH="$(CARGO_PATH)" $(PY) -m fuzz --runs $(FUZZ_RUNS) --native-runs $(FUZZ_NATIVE_RUNS)

# Screenshots of every console page for docs/console.md (runs tests/browser).
console-screenshots: $(STAMP) browser-deps
	OTEL_AUDIT_SCREENSHOTS=docs/images $(PY) -m pytest -q tests/browser -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache dist
