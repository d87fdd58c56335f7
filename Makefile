# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-embedded test-production bench lint install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.base: requirements/base.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements/base.txt
	touch $@

$(VENV)/.dev: requirements/base.txt requirements/dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements/dev.txt
	touch $@ $(VENV)/.base

# schemathesis and moto need a newer typing-extensions than kentik-api allows: a venv of their own.
.venv-tools/.tools: requirements/tools.txt
	test -x .venv-tools/bin/python || $(PYTHON) -m venv .venv-tools
	.venv-tools/bin/pip install -q -r requirements/tools.txt
	touch $@

install: $(VENV)/.base
install-dev: $(VENV)/.dev .venv-tools/.tools

## run: install, migrate, and run gunicorn + the worker (+ the Kentik simulator
## when KT_AUTH_EMAIL/KT_AUTH_TOKEN are not set) until Ctrl-C.
run: install
	$(BIN)/python manage.py serve

## test: install, lint, and run the whole suite (unit, API, end-to-end) twice:
## on the embedded default (SQLite, ORM broker), then on PostgreSQL + Redis.
test: install-dev lint test-embedded test-production

test-embedded: install-dev
	$(BIN)/python -m pytest

## test-production: the same suite on PostgreSQL and Redis (at their standard
## ports unless TEST_DATABASE_URL / TEST_REDIS_URL say otherwise).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/imagecache
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
## Without them it says so and passes, except under CI, where it fails.
test-production: install-dev
	@if $(BIN)/python -m tests.backends $(TEST_DATABASE_URL) $(TEST_REDIS_URL); then \
	  DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/python -m pytest; \
	else \
	  echo "PostgreSQL or Redis does not answer: the production profile was not tested."; \
	  test -z "$$CI"; \
	fi

## bench: the speed figures against nginx on this machine (bench/run.py), on
## both profiles when PostgreSQL and Redis answer; the tables go in README.md.
## Installs wrk and nginx from Debian if they are missing.
bench: install-dev
	@command -v wrk >/dev/null && command -v nginx >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light)
	$(BIN)/python bench/run.py --write-readme

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run

clean:
	rm -rf $(VENV) .venv-tools var staticfiles .pytest_cache .ruff_cache
