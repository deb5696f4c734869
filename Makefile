# labelgate: `make run` starts the demo stack, `make test` runs every check.
SHELL := /bin/bash
.DEFAULT_GOAL := help

OPA_VERSION   := 1.22.3
TOOLS         := $(CURDIR)/.tools/bin
VENV          := $(CURDIR)/.venv
PY            := $(VENV)/bin/python
OPA           := $(TOOLS)/opa
REGAL         := $(TOOLS)/regal
GHZ_VERSION   := 0.120.0
GHZ           := $(TOOLS)/ghz
HELM_VERSION  := 4.3.2
HELM          := $(TOOLS)/helm
UV_VERSION    := 0.13.9
REGO_COVERAGE := 95
# The policy input's JSON Schema, which `opa check` type-checks the policies against (the
# pack's `# METADATA schemas` annotation names it schema.input).
REGO_SCHEMAS  := proto/labelgate/v1/schema/opa
PYTHON        ?= python3
export PATH := $(TOOLS):$(VENV)/bin:$(PATH)
export LABELGATE_OPA := $(OPA)

.PHONY: help run test check lint rego-test pytest proto proto-check bench bench-quick tools venv clean
.PHONY: deploy-check lock k8s-render soak app

help:
	@echo "make run    - demo backend (and gateway in front of it) on loopback"
	@echo "make test   - install what is needed, then lint, Rego tests with coverage, pytest"
	@echo "make check  - the edit loop: ruff, mypy, opa fmt/check, and the in-process tests (under a minute)"
	@echo "make lint | rego-test | pytest | proto | bench | tools | venv | app | clean"
	@echo "make soak   - the soak drill, DURATION seconds (default 600)"
	@echo "make deploy-check (chart, manifests, Dockerfile, compose, configs) | lock | k8s-render"

# The built-in detectors and the BYTES tensor kernels in Rust (proxy/native, a pyo3 extension
# built by maturin). The tests require it; `make run` falls back to the same code in Python
# when there is no cargo.
# rustup installs cargo in ~/.cargo/bin, which need not be on PATH.
NATIVE_SOURCES := $(wildcard proxy/native/Cargo.toml proxy/native/Cargo.lock proxy/native/pyproject.toml proxy/native/src/*.rs)
CARGO_PATH     := $(HOME)/.cargo/bin:$(PATH)

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml $(NATIVE_SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	PATH="$(CARGO_PATH)" $(PY) -m pip install --quiet ./proxy/native
	touch $@

tools: $(OPA) opa-module regal $(GHZ) $(HELM)
$(OPA):
	@mkdir -p $(TOOLS)
	@if command -v opa >/dev/null 2>&1 && opa version 2>/dev/null | grep -q '^Version: $(OPA_VERSION)$$'; then \
	  echo "using opa $(OPA_VERSION) from PATH: $$(command -v opa)"; ln -sf "$$(command -v opa)" $(OPA); \
	else \
	  echo "building opa v$(OPA_VERSION) with go install"; \
	  GOBIN=$(TOOLS) go install github.com/open-policy-agent/opa@v$(OPA_VERSION); \
	fi
	@$(OPA) version | head -1

# The embedded engines' compliance tests read OPA's own cases from its module source, which an
# opa taken from PATH does not bring into the module cache (a no-op once it is there).
.PHONY: opa-module
opa-module:
	@go mod download github.com/open-policy-agent/opa@v$(OPA_VERSION)

# helm renders and lints the chart in deploy/helm (tests/deploy); built once, like opa.
$(HELM):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) go install helm.sh/helm/v4/cmd/helm@v$(HELM_VERSION)

# ghz drives the benchmarks (bench/); keep in step with GHZ_VERSION in bench/load.py.
$(GHZ):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) go install github.com/bojand/ghz/cmd/ghz@v$(GHZ_VERSION)

# Regal has no `go install pkg@version` path here (the module proxy refuses its version
# list, which `go install` reads for deprecation notices), so it is built from a pinned
# module in deploy/tools/regal (go.mod + go.sum).
.PHONY: regal
regal:
	@test -x $(REGAL) || (cd deploy/tools/regal && GOBIN=$(TOOLS) go install github.com/open-policy-agent/regal)
	@$(REGAL) version | grep -E '^(Version|OPA Version)' | tr '\n' ' '; echo

proto: venv
	$(PY) proto/generate.py

proto-check: venv
	$(PY) proto/generate.py --check

lint: venv tools proto-check
	$(VENV)/bin/ruff check proxy tests proto bench
	$(VENV)/bin/ruff format --check proxy tests proto bench
	$(VENV)/bin/mypy
	$(OPA) fmt --fail --list rego
	$(OPA) check --strict --schema $(REGO_SCHEMAS) rego
	$(REGAL) lint rego
	$(PY) deploy/lock.py --check
	$(VENV)/bin/hadolint deploy/Dockerfile
	@echo "cargo fmt --check, clippy -D warnings, test (proxy/native)"
	@cd proxy/native && export PATH="$(CARGO_PATH)" && cargo fmt --check \
	  && cargo clippy --locked --quiet -- -D warnings && cargo test --locked --quiet

rego-test: tools
	$(OPA) test rego -v --coverage --threshold $(REGO_COVERAGE) --format json > .rego-coverage.json || \
	  { $(OPA) test rego -v; $(PY) -c "import json;print('coverage', json.load(open('.rego-coverage.json')).get('coverage'))"; exit 1; }
	$(OPA) test rego
	@$(PY) -c "import json;print('rego coverage: %.1f%% (threshold $(REGO_COVERAGE)%%)' % json.load(open('.rego-coverage.json'))['coverage'])"

# Two processes, each taking whole test files (module and session fixtures start once per
# process): the suite is mostly waiting on the processes it starts. On this 2-core machine
# class 10.3 minutes against 20.6 in one process (same tree, same load), which keeps CI
# inside its 30 minutes on a loaded machine. PYTEST_WORKERS=0 runs it in this process.
PYTEST_WORKERS ?= 2
pytest: venv tools
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile

# The benchmark harness is smoke-tested once, by tests/bench (it checks that it works, not
# speed); pytest runs last so its summary line closes the output.
test: lint rego-test pytest

# The fast lane: tests that start no process (pure stages, the pipeline with scripted stages,
# the import layers). For the edit loop; `make test` is what CI runs.
FAST_TESTS := tests/classify tests/enforce tests/oip tests/test_layers.py \
	tests/gateway/test_pipeline.py tests/gateway/test_streams.py tests/gateway/test_bounds.py \
	tests/policy/test_contract.py tests/policy/test_cache.py tests/recording/test_entries.py
check: venv
	$(VENV)/bin/ruff check proxy tests proto bench
	$(VENV)/bin/ruff format --check proxy tests proto bench
	$(VENV)/bin/mypy
	@if [ -x $(OPA) ]; then $(OPA) fmt --fail --list rego && $(OPA) check --strict --schema $(REGO_SCHEMAS) rego; fi
	$(VENV)/bin/pytest -q -p no:cacheprovider $(FAST_TESTS)

# The deploy checks alone (pytest runs tests/deploy too): helm lint/template per profile,
# manifests against the pinned Kubernetes schemas, compose against the Compose Specification,
# hadolint, the lock, and `serve --check-config` on every rendered config.
deploy-check: venv tools
	$(PY) deploy/lock.py --check
	$(VENV)/bin/hadolint deploy/Dockerfile
	$(VENV)/bin/pytest tests/deploy -q

# Re-resolve the image's dependencies (needs PyPI); `make lint` fails while the lock is stale.
lock: venv
	$(PY) -m pip install --quiet uv==$(UV_VERSION)
	$(PY) deploy/lock.py

# deploy/kubernetes/ is the chart rendered with its quickstart profile.
k8s-render: venv tools
	$(PY) -m tests.deploy.support --write

# The demo needs the package only: no test or bench extras (Playwright, matplotlib, ...).
# A venv `make venv` (or `make test`) finished after the last change to these sources has it
# all already, the native extension included: then this marker is only set, nothing installed.
$(VENV)/.installed-app: pyproject.toml $(NATIVE_SOURCES)
	@if [ -f $(VENV)/.installed ] && [ -z "$$(find $^ -newer $(VENV)/.installed)" ]; then \
	  echo "$(VENV) is up to date (make venv): nothing to install"; touch $@; exit 0; \
	fi; \
	set -e; \
	echo "installing the package into $(VENV)"; \
	test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	$(PY) -m pip install --quiet --upgrade pip; \
	$(PY) -m pip install --quiet -e .; \
	if PATH="$(CARGO_PATH)" command -v cargo >/dev/null 2>&1; then \
	  PATH="$(CARGO_PATH)" $(PY) -m pip install --quiet ./proxy/native; \
	else \
	  echo "no cargo found: the Python detectors and tensor code are used (install Rust to build proxy/native)"; \
	fi; \
	touch $@

# The package alone in .venv (what `make run` starts with): for the CLI, e.g. minting tokens.
app: $(VENV)/.installed-app

run: $(VENV)/.installed-app
	$(VENV)/bin/labelgate quickstart

bench: venv tools
	$(PY) -m bench

bench-quick: venv tools
	$(PY) -m bench --quick

# The soak drill (bench/soak.py): DURATION seconds of mixed load with faults on a timeline,
# loopback only; fails on growth, unexpected call outcomes or a broken audit trail.
DURATION ?= 600
soak: venv tools
	$(PY) -m bench.soak --duration $(DURATION)

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache .rego-coverage.json bench/results
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
