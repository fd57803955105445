# tq — developer entry points. `make` (or `make help`) lists them.
#
# Every target that runs project code first makes sure `.venv` exists and holds an editable
# install of the project with its dev extras (`make install`); that step re-runs only when
# pyproject.toml changes.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tq-installed
# What ruff lints and formats (only those present, so a missing folder is no error).
PY_PATHS := $(wildcard shared services operator tests bench)
# Extra arguments for the command a target runs, e.g. `make test ARGS='-k dlq -x'`.
ARGS ?=

# The interpreter that creates the venv: python3.11, else python3 when it is 3.11.
PY_IS_311 := import sys; raise SystemExit(sys.version_info[:2] != (3, 11))
PYTHON ?= $(shell for p in python3.11 python3; do \
	$$p -c '$(PY_IS_311)' >/dev/null 2>&1 && command -v $$p && break; done)

.PHONY: help venv install dev test chart-test image image-check lint fmt typecheck bench migrate crd rbac dashboards settings-doc clean

help: ## Show this list of targets (the default)
	@echo "usage: make TARGET [ARGS='...']"
	@echo
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-zA-Z_-]+:[^#]*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(STAMP) ## Create .venv (Python 3.11) with tq installed editable, plus dev tools
	@true

install: $(STAMP) ## Same as venv: (re)install when pyproject.toml changed
	@true

$(STAMP): pyproject.toml
	@if [ -x $(BIN)/python ] && ! $(BIN)/python -c '$(PY_IS_311)' >/dev/null 2>&1; then \
		echo "$(VENV) is not Python 3.11: recreating it"; rm -rf $(VENV); fi
	@if [ ! -x $(BIN)/python ]; then \
		if [ -z "$(PYTHON)" ]; then \
			echo "error: Python 3.11 is required (python3.11, or python3 being 3.11)." >&2; \
			echo "       On Debian: apt-get install python3.11 python3.11-venv" >&2; exit 1; fi; \
		echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); fi
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $@

dev: $(STAMP) ## Run everything locally: private Redis + SQLite under .dev/, migrate, all workers
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/dev.sh $(ARGS)

# -- test processes side by side (pytest-xdist; the suite mostly waits on servers, not on the CPU)
TEST_WORKERS ?= 2

test: $(STAMP) ## Run the whole test suite (starts its own redis-servers): in parallel, then the `serial` tests one at a time
	@command -v redis-server >/dev/null || { \
		echo "error: redis-server is not on PATH; the tests start their own Redis." >&2; \
		echo "       Install it first: sudo apt-get install redis-server" >&2; exit 1; }
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not serial" $(ARGS)
	@# exit code 5: ARGS chose no serial test
	$(BIN)/pytest -q -m serial $(ARGS) || [ $$? -eq 5 ]

chart-test: $(STAMP) ## Check the Helm chart, the image and skaffold.yaml offline (also part of `make test`)
	$(BIN)/pytest -q tests/chart $(ARGS)

image: ## Build the image with podman (root; scripts/image-check.sh --build-only): localhost/tq:VERSION
	scripts/image-check.sh --build-only $(ARGS)

image-check: $(STAMP) ## Build the image with podman and run it: --help, a worker's job, serve's probes (root; CI)
	@command -v redis-server >/dev/null || { echo "error: redis-server is not on PATH" >&2; exit 1; }
	scripts/image-check.sh $(ARGS)

lint: $(STAMP) ## Check code style: ruff check + ruff format --check
	$(BIN)/ruff check $(PY_PATHS)
	$(BIN)/ruff format --check $(PY_PATHS)

fmt: $(STAMP) ## Fix what ruff can fix and reformat the code
	$(BIN)/ruff check --fix $(PY_PATHS)
	$(BIN)/ruff format $(PY_PATHS)

typecheck: $(STAMP) ## Type-check tq, tq_services and tq_operator with mypy
	$(BIN)/mypy $(ARGS)

bench: $(STAMP) ## Run the benchmarks (bench/run.sh): JSON lines and a summary
	PATH="$(CURDIR)/$(BIN):$$PATH" bash bench/run.sh $(ARGS)

migrate: $(STAMP) ## Create or upgrade the database at TQ_DATABASE_URL
	$(BIN)/tq migrate

crd: $(STAMP) ## Regenerate the QueueConfig and JobSchedule CRDs, the chart's default schedules, the values schema
	$(BIN)/python -m tq_services.schedule_manifest
	$(BIN)/python -m tq_operator.crd --examples

rbac: $(STAMP) ## Regenerate the operator's ClusterRole (charts/tq/files/operator-rbac.yaml)
	$(BIN)/python -m tq_operator.rbac

dashboards: $(STAMP) ## Regenerate the Grafana dashboards (charts/tq/files/dashboards) from the registry
	$(BIN)/python -m tq_services.dashboards

settings-doc: $(STAMP) ## Regenerate the README's configuration tables from the settings classes
	$(BIN)/python -m tq_cli.settings_doc

clean: ## Remove .venv, caches and build outputs (keeps .dev/ data)
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
	rm -rf *.egg-info shared/*.egg-info services/*.egg-info operator/*.egg-info
	find . -path ./.git -prune -o -path ./.dev -prune -o -type d -name __pycache__ -print0 \
		| xargs -0 rm -rf
