# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.base: requirements/base.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements/base.txt
	touch $@

$(VENV)/.dev: requirements/base.txt requirements/dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements/dev.txt
	touch $@ $(VENV)/.base

# schemathesis needs a newer typing-extensions than kentik-api allows: its own venv.
.venv-fuzz/.fuzz: requirements/fuzz.txt
	test -x .venv-fuzz/bin/python || $(PYTHON) -m venv .venv-fuzz
	.venv-fuzz/bin/pip install -q -r requirements/fuzz.txt
	touch $@

install: $(VENV)/.base
install-dev: $(VENV)/.dev .venv-fuzz/.fuzz

## run: install, migrate, and run gunicorn + the worker (+ the Kentik simulator
## when KT_AUTH_EMAIL/KT_AUTH_TOKEN are not set) until Ctrl-C.
run: install
	$(BIN)/python manage.py serve

## test: install, lint, and run the whole suite (unit, API, end-to-end).
test: install-dev lint
	$(BIN)/python -m pytest

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run

clean:
	rm -rf $(VENV) .venv-fuzz var staticfiles .pytest_cache .ruff_cache
