# modelserve: `make up` starts the embedded stack, `make test` runs everything.
# Every target installs what it needs into .venv first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.modelserve-installed
PYTEST_ARGS ?=
NPM    ?= npm
DASH   := dashboard
DASH_MODULES := $(DASH)/node_modules/.package-lock.json
DASH_BUILD   := $(DASH)/dist/index.html
DASH_SOURCES := $(shell find $(DASH)/src -type f 2>/dev/null) $(DASH)/index.html \
	$(DASH)/vite.config.ts $(DASH)/tsconfig.json

.DEFAULT_GOAL := help
.PHONY: help install dashboard lint test reliability up bench wheel clean

help:
	@echo "make up       start the embedded stack (installs into .venv first)"
	@echo "make test     lint + the whole test suite (real Postgres, MinIO, Kubernetes API)"
	@echo "make lint     ruff + mypy + import contracts"
	@echo "make reliability  tokens, hostile input, SSRF, faults, load (table + build/reliability.json)"
	@echo "make bench    runtime vs llama.cpp servers, gateway overhead (tables + bench/results/*.json)"
	@echo "make install  create .venv and install modelserve with all extras; build the dashboard"
	@echo "make wheel    dist/modelserve-*.whl, carrying the manifests and the built dashboard"

# Reinstall when the dependency list changes; the editable install picks up
# code changes by itself.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "modelserve needs Python >= 3.11, found " + sys.version.split()[0]'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	CMAKE_BUILD_PARALLEL_LEVEL=$${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
		$(BIN)/python -m pip install --quiet --progress-bar off -e ".[all]"
	@touch $(STAMP)

# The dashboard: `npm ci` from the committed lock file (which lists every platform's
# optional packages, so a fresh install changes nothing) when it changes, a Vite
# build when a source does.
$(DASH_MODULES): $(DASH)/package.json $(DASH)/package-lock.json
	@node -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a<20||(a===20&&b<19)) { console.error("the dashboard needs Node.js >= 20.19, found "+process.versions.node); process.exit(1) }'
	cd $(DASH) && $(NPM) ci --no-audit --no-fund --loglevel=error
	@touch $(DASH_MODULES)

$(DASH_BUILD): $(DASH_MODULES) $(DASH_SOURCES)
	cd $(DASH) && $(NPM) run --silent build

dashboard: $(DASH_BUILD)

install: $(STAMP) $(DASH_BUILD)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	cd $(DASH) && $(NPM) run --silent typecheck

test: install lint
	cd $(DASH) && $(NPM) run --silent test
	$(BIN)/pytest $(PYTEST_ARGS)

# Hostile tokens, input, SSRF, faults and load against the real components: one
# table, build/reliability.json. FUZZ_S= and LOAD_S= lengthen the fuzz and load runs.
reliability: install
	$(BIN)/pytest -m reliability tests/reliability --fuzz-seconds=$${FUZZ_S:-0} \
		--load-seconds=$${LOAD_S:-20} $(PYTEST_ARGS)

up: install
	$(BIN)/modelserve up

# Benchmarks print a table and write JSON to bench/results/; never part of `make test`.
bench: install
	$(BIN)/python bench/runtime.py
	$(BIN)/python bench/gateway.py

# The wheel carries config/ and dashboard/dist through modelserve/config and modelserve/web.
wheel: install
	$(BIN)/python -m pip wheel --no-deps --quiet -w dist .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache \
		$(DASH)/node_modules $(DASH)/dist
