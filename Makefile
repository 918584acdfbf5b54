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
.PHONY: help install dashboard lint test reliability up bench wheel images clean

help:
	@echo "make up       start the embedded stack (installs into .venv first)"
	@echo "make test     lint + the whole test suite (real Postgres, MinIO, Kubernetes API)"
	@echo "make lint     ruff + mypy + import contracts"
	@echo "make reliability  tokens, hostile input, SSRF, faults, load (table + build/reliability.json)"
	@echo "make bench    every benchmark (runtime, gateway, pipeline, mirror, cold start): one table + bench/results/latest.json; BENCH_FULL=1 for longer runs"
	@echo "make install  create .venv and install modelserve with all extras; build the dashboard"
	@echo "make wheel    dist/modelserve-*.whl, carrying the manifests and the built dashboard"
	@echo "make images   the container images $(IMAGE_REGISTRY)/{runtime,functions}:$(IMAGE_TAG) (docker)"

# Reinstall when the dependency list changes; the editable install picks up
# code changes by itself. llama-cpp-python comes from .ci/llama-wheel: the one
# generic-CPU build (GGML_NATIVE=OFF) of this machine, which the runtime image
# installs too; naming the wheel makes pip use it for every llama-cpp-python
# requirement (the bench extra's too).
$(STAMP): pyproject.toml .ci/llama-wheel
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "modelserve needs Python >= 3.11, found " + sys.version.split()[0]'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	wheel=$$(.ci/llama-wheel $(BIN)/python) \
		&& $(BIN)/python -m pip install --quiet --no-deps --force-reinstall "$$wheel" \
		&& $(BIN)/python -m pip install --quiet --progress-bar off -e ".[all]" "$$wheel"
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

# Benchmarks: bench/run.py runs every script in turn (quick; BENCH_FULL=1 for longer),
# prints one markdown table and writes bench/results/latest.json; never part of `make test`.
bench: install
	$(BIN)/python bench/run.py

# The wheel carries config/ and dashboard/dist through modelserve/config and modelserve/web.
wheel: install
	$(BIN)/python -m pip wheel --no-deps --quiet -w dist .

# The container images, tagged as kserve/ and config/ name them. Where the official
# base images cannot be pulled, .ci/make-bases makes local stand-ins first (cached
# in docker's store by recipe hash). What the host already has goes into the build
# context instead of being fetched again inside each build: wheels/ gets the
# host's wheelhouse (.ci/wheelhouse: every dependency, the llama-cpp-python build
# among them, so llama.cpp is not compiled again) and the functions image takes
# dashboard/dist as `make install` built it (PYTHON_DEPS=wheels, DASHBOARD=dist;
# a plain `docker build` uses the package index and npm). The wheelhouse is made
# while the bases are. The CUDA image is built only where its nvidia/cuda bases are
# at hand. --network=host: apt, pip and npm inside the build reach the mirrors as
# the host does.
IMAGE_REGISTRY ?= ghcr.io/modelserve
IMAGE_TAG      ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
DOCKER         ?= docker
CUDA_BASES     := nvidia/cuda:12.4.1-devel-ubuntu22.04 nvidia/cuda:12.4.1-runtime-ubuntu22.04
HOST_ARGS      := --build-arg PYTHON_DEPS=wheels --build-arg DASHBOARD=dist

images: $(STAMP) $(DASH_BUILD)
	@command -v $(DOCKER) >/dev/null && $(DOCKER) info >/dev/null 2>&1 \
		|| { echo "make images needs a running docker daemon" >&2; exit 1; }
	@mkdir -p build
	.ci/wheelhouse $(BIN)/python > build/wheelhouse.path & wheelhouse=$$!; \
	bases=$$(.ci/make-bases --auto); made=$$?; wait $$wheelhouse && [ $$made = 0 ] \
		&& rm -f wheels/*.whl && cp "$$(cat build/wheelhouse.path)"/*.whl wheels/ \
		&& args=$$(for b in $$bases; do printf -- '--build-arg %s ' "$$b"; done) \
		&& $(DOCKER) build --network=host $$args $(HOST_ARGS) -f runtime/Dockerfile \
			-t $(IMAGE_REGISTRY)/runtime:$(IMAGE_TAG) . \
		&& $(DOCKER) build --network=host $$args $(HOST_ARGS) -f functions/Dockerfile \
			-t $(IMAGE_REGISTRY)/functions:$(IMAGE_TAG) .
	@if ( for b in $(CUDA_BASES); do $(DOCKER) image inspect $$b >/dev/null 2>&1 \
			|| $(DOCKER) pull -q $$b >/dev/null 2>&1 || exit 1; done ); then \
		$(DOCKER) build --network=host -f runtime/Dockerfile.cuda \
			-t $(IMAGE_REGISTRY)/runtime:$(IMAGE_TAG)-cuda .; \
	else echo "not building $(IMAGE_REGISTRY)/runtime:$(IMAGE_TAG)-cuda: its bases ($(CUDA_BASES)) cannot be pulled here"; fi

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache \
		$(DASH)/node_modules $(DASH)/dist wheels/*.whl
