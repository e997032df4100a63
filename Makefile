# hypernode-host developer and CI entry points.  `make` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV      := .venv
VENV_BIN  := $(VENV)/bin
VENV_STAMP := $(VENV_BIN)/hypernode-host
PYTHON    := $(shell python3.11 -c 'import sys' >/dev/null 2>&1 && echo python3.11 || echo python3)
JOB_IMAGE := hypernode/job-python:3.11
PYTEST_ARGS ?=
# What ruff checks and formats: the package, its tests and the benchmarks (bench/ruff.toml adds its import groups).
RUFF_PATHS := src tests bench

.PHONY: help services venv demo demo-upstream lint test test-unit fuzz format clean bench bench-exec bench-bridge bench-retention chaos gpu-check

help: ## list the targets
	@echo "hypernode-host make targets:"
	@grep -E '^[a-z][a-z-]*:.*## ' $(firstword $(MAKEFILE_LIST)) \
		| awk 'BEGIN {FS = ":.*## "} {printf "  %-14s %s\n", $$1, $$2}'

services: ## start docker engine + Redis, build the job image (installs packages as root if missing)
	bash scripts/services.sh

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV_BIN)/pip install -q -U pip
	$(VENV_BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(VENV_STAMP) ## create .venv and install the package with dev extras

demo: services venv ## run the local end-to-end demo against the job image
	HN_JOB_IMAGE=$${HN_JOB_IMAGE:-$(JOB_IMAGE)} $(VENV_BIN)/hypernode-host demo

demo-upstream: services venv ## the demo against a backend that behaves as upstream's (spent tokens, a new one)
	HN_JOB_IMAGE=$${HN_JOB_IMAGE:-$(JOB_IMAGE)} $(VENV_BIN)/hypernode-host demo --upstream

lint: venv ## ruff check, ruff format --check (src, tests, bench), mypy (strict)
	$(VENV_BIN)/ruff check $(RUFF_PATHS)
	$(VENV_BIN)/ruff format --check $(RUFF_PATHS)
	$(VENV_BIN)/mypy

test: services venv lint test-unit ## services + lint + the unit tier alone + pytest, the agent image and compose stack too (PYTEST_ARGS="...")
	HN_TEST_IMAGE=$(JOB_IMAGE) $(VENV_BIN)/python -m pytest -q $(PYTEST_ARGS)

test-unit: venv ## the unit tier, with no Docker engine and no Redis reachable (seconds)
	DOCKER_HOST=unix:///nonexistent HN_REDIS_URL=redis://127.0.0.1:1/0 $(VENV_BIN)/python -m pytest -q -m unit

fuzz: venv ## the property tests of hostile input, long: the whole path (HN_FUZZ_EXAMPLES, default 5000) and the escapes
	HN_FUZZ_EXAMPLES=$${HN_FUZZ_EXAMPLES:-5000} $(VENV_BIN)/python -m pytest -q -o timeout=0 \
		tests/integration/test_hostile_path.py tests/unit/test_escapes.py tests/unit/core/test_hostile_values.py

bench: services venv ## every benchmark on the real stack; writes bench/results/
	$(VENV_BIN)/pip install -q -e '.[dev,bench]'
	HN_TEST_IMAGE=$(JOB_IMAGE) $(VENV_BIN)/python bench/run_all.py

bench-exec: services venv ## container run overhead vs raw docker-py; 1 GB log flood
	HN_TEST_IMAGE=$(JOB_IMAGE) $(VENV_BIN)/python bench/exec.py

bench-bridge: services venv ## heartbeat jitter under load, bridge RSS, job frame to container start
	HN_TEST_IMAGE=$(JOB_IMAGE) $(VENV_BIN)/python bench/bridge.py

bench-retention: services venv ## Redis bytes per retained job and per tombstone; memory flat with a short retention
	HN_TEST_IMAGE=$(JOB_IMAGE) $(VENV_BIN)/python bench/retention.py

chaos: services venv ## a few hundred jobs over two slots under random faults; one result each (CHAOS_ARGS="--jobs 300")
	HN_TEST_IMAGE=$(JOB_IMAGE) $(VENV_BIN)/python bench/chaos.py --engine $${CHAOS_ARGS:-}

gpu-check: venv ## NVML discovery and the GPU tests against real NVML (on a GPU machine)
	bash scripts/gpu-check

format: venv ## ruff format + ruff check --fix
	$(VENV_BIN)/ruff format $(RUFF_PATHS)
	$(VENV_BIN)/ruff check --fix $(RUFF_PATHS)

clean: ## remove .venv, caches and build artefacts (not the docker image)
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
