# llmops platform: `make run` starts everything locally, `make test` installs and runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install proto proto-check lint format test test-unit run stop infra-up infra-down infra-status \
        bench asyncapi clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml package.json
	@echo "==> installing Python environment in $(VENV) (first run downloads ~1 GB of wheels)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar on -q --upgrade pip
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	@echo "==> installing buf (npm @bufbuild/buf)"
	npm install --no-audit --no-fund --loglevel=error
	touch $(STAMP)

install: $(STAMP) ## create the virtualenv and install the platform, dev tools and buf

proto: $(STAMP) ## regenerate Python code from proto/ into gen/python
	PYTHON=$(PY) scripts/gen_proto.sh

proto-check: $(STAMP) ## fail if gen/python is not what proto/ generates
	@tmp=$$(mktemp -d) && PYTHON=$(PY) scripts/gen_proto.sh $$tmp && \
	  diff -r -q gen/python/llmops $$tmp/llmops && echo "generated code is up to date"; \
	  rc=$$?; rm -rf $$tmp; exit $$rc

lint: $(STAMP) proto-check ## ruff, mypy, buf lint, buf breaking against main
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services tests bench
	cd proto && ../node_modules/.bin/buf lint
	@if git rev-parse --verify -q main >/dev/null; then \
	  cd proto && ../node_modules/.bin/buf breaking --against '../.git#branch=main,subdir=proto'; \
	else echo "no main branch yet: buf breaking skipped"; fi

format: $(STAMP) ## apply ruff formatting and import sorting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: $(STAMP) ## install, start what the tests need (real Kafka, Weaviate, Triton, chdb) and run all tests
	$(BIN)/pytest -ra

test-unit: $(STAMP) ## unit tests only (no servers)
	$(BIN)/pytest -ra tests/unit

infra-up: $(STAMP) ## start Kafka, Weaviate and Triton on loopback (state in .llmops/)
	$(PY) -m shared.infra up

infra-down: $(STAMP) ## stop the local infrastructure
	$(PY) -m shared.infra down

infra-status: $(STAMP)
	$(PY) -m shared.infra status

run: $(STAMP) ## start infrastructure and every service, print the endpoints
	$(BIN)/llmops up

stop: $(STAMP) ## stop services and infrastructure started by `make run`
	$(BIN)/llmops down

bench: $(STAMP) ## run the benchmarks and print the README table
	$(PY) -m bench

asyncapi: $(STAMP) ## write the AsyncAPI document of the topic catalog to docs/asyncapi.json
	$(PY) -m shared.asyncapi docs/asyncapi.json

clean: ## remove the virtualenv and local state (caches in ~/.cache/llmops stay)
	rm -rf $(VENV) node_modules .llmops
