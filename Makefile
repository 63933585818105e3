# Everything a fresh machine needs, from python3 and make alone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

export INGEST_HOME ?= $(CURDIR)/.ingest
export DAGSTER_HOME ?= $(INGEST_HOME)/dagster_home
DEMO_PARTITION ?= 2024-06-01
DEV_PORT ?= 3000

.PHONY: install demo test dev dev-sandbox bench worker lint format dagster-home clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# DAGSTER_HOME gets the repo's dagster.yaml: PostgreSQL storage when DAGSTER_PG_URL is set,
# otherwise SQLite in DAGSTER_HOME (see ingest_assets/instance_storage.py).
dagster-home:
	@mkdir -p "$(DAGSTER_HOME)"
	@cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"

# The demo and dev-sandbox add the third example dataset (GitHub issues, served by the sandbox)
# on top of the shipped sources; INGEST_SOURCES_FILE set by hand wins.
EXAMPLE_SOURCES := $(CURDIR)/ingest_assets/examples/github_issues.yaml

demo: export INGEST_SOURCES_FILE ?= $(EXAMPLE_SOURCES)
demo: install dagster-home
	$(BIN)/python -m ingest_assets.demo --partition $(DEMO_PARTITION)

test: install
	$(BIN)/python -m pytest

dev: install dagster-home
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(DEV_PORT)

# `make dev` offline: the REST sources talk to the loopback sandbox API (INGEST_SANDBOX=1).
dev-sandbox: export INGEST_SANDBOX := 1
dev-sandbox: export INGEST_SOURCES_FILE ?= $(EXAMPLE_SOURCES)
dev-sandbox: dev

# The peers (dlt, ...) live in the optional `bench` extra, installed only for this target.
# Sizes: BENCH_RECORDS (default 1000000) or BENCH_SCALE (e.g. 0.01); BENCH_ONLY=name,name.
$(VENV)/.bench-stamp: pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: $(VENV)/.bench-stamp
	$(BIN)/python benchmarks/run.py

# The worker needs the same broker as the runs (INGEST_CELERY_BROKER) and the same
# DAGSTER_HOME / INGEST_* environment as `make dev`. ingest_assets.celery_app takes its settings
# (broker, late acknowledgement, visibility timeout) from where the executor takes them, as the
# workers of deploy/compose.yaml do.
worker: install dagster-home
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dagster-celery worker start -A ingest_assets.celery_app -- --concurrency=1

lint: install
	$(BIN)/ruff check ingest_assets ingest_assets_tests benchmarks
	$(BIN)/ruff format --check ingest_assets ingest_assets_tests benchmarks

format: install
	$(BIN)/ruff format ingest_assets ingest_assets_tests benchmarks
	$(BIN)/ruff check --fix ingest_assets ingest_assets_tests benchmarks

clean:
	rm -rf $(VENV) .ingest .pytest_cache .ruff_cache *.egg-info
