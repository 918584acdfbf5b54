# modelserve: `make up` starts the embedded stack, `make test` runs everything.
# Every target installs what it needs into .venv first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.modelserve-installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install lint test up clean

help:
	@echo "make up       start the embedded stack (installs into .venv first)"
	@echo "make test     lint + the whole test suite (real Postgres, MinIO, Kubernetes API)"
	@echo "make lint     ruff + mypy + import contracts"
	@echo "make install  create .venv and install modelserve with all extras"

# Reinstall when the dependency list changes; the editable install picks up
# code changes by itself.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "modelserve needs Python >= 3.11, found " + sys.version.split()[0]'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	CMAKE_BUILD_PARALLEL_LEVEL=$${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
		$(BIN)/python -m pip install --quiet --progress-bar off -e ".[all]"
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install lint
	$(BIN)/pytest $(PYTEST_ARGS)

up: install
	$(BIN)/modelserve up

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
