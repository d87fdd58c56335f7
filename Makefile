# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-embedded test-production bench docker-smoke lint typecheck install install-dev clean

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

# mypy and the stubs need typing-extensions>=4.6, and kentik-api pins 4.3.0: a
# venv of their own too (requirements/typing.txt says what goes in it).
TYPING_SKIP := ^(-r |kentik-api==|typing-extensions==|ruff==)
.venv-typing/.typing: requirements/base.txt requirements/dev.txt requirements/typing.txt
	test -x .venv-typing/bin/python || $(PYTHON) -m venv .venv-typing
	grep -hvE '$(TYPING_SKIP)' requirements/base.txt requirements/dev.txt > .venv-typing/pins.txt
	.venv-typing/bin/pip install -q -r .venv-typing/pins.txt -r requirements/typing.txt
	.venv-typing/bin/pip install -q --no-deps $$(grep -h '^kentik-api==' requirements/base.txt)
	touch $@

install: $(VENV)/.base
install-dev: $(VENV)/.dev .venv-tools/.tools .venv-typing/.typing

## run: install, migrate, and run gunicorn + the worker (+ the Kentik simulator
## when KT_AUTH_EMAIL/KT_AUTH_TOKEN are not set) until Ctrl-C.
run: install
	$(BIN)/python manage.py serve

## test: install, lint (ruff, mypy), and run the whole suite (unit, API,
## end-to-end) twice: on the embedded default (SQLite, ORM broker), then on
## PostgreSQL + Redis.
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

## docker-smoke: build the image and run it, alone and in its split roles
## (needs a Docker engine; PYTHON_IMAGE=... for another base, see the README).
docker-smoke: install-dev
	tests/docker/smoke.sh

TYPED := config imagecache bench manage.py tests

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	.venv-typing/bin/mypy $(TYPED)
	$(BIN)/python manage.py makemigrations --check --dry-run

## typecheck: mypy alone (its settings are in pyproject.toml).
typecheck: .venv-typing/.typing
	.venv-typing/bin/mypy $(TYPED)

clean:
	rm -rf $(VENV) .venv-tools .venv-typing var staticfiles .pytest_cache .ruff_cache .mypy_cache
