# Two commands on a fresh machine: `make run` and `make test`.
# Python 3.11, 3.12 or 3.13: `make test PYTHON=/root/.pyenv/versions/3.13.0/bin/python`.
# Another interpreter wants a venv of its own: VENV=.venv-3.13.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-embedded test-production test-unit pins outdated lock bench bench-dashboard docker-smoke k8s-validate lint typecheck install install-dev clean

# Every install comes from uv.lock, the dependencies being declared once, in
# pyproject.toml (docs/development.md, "Dependencies: one lock"). uv itself,
# the release pyproject.toml requires, lives in a venv that every VENV shares.
UV_VERSION := $(shell sed -n 's/^required-version = "==\(.*\)"$$/\1/p' pyproject.toml)
UV_HOME := .venv-uv
UV := $(UV_HOME)/bin/uv
UV_STAMP := $(UV_HOME)/uv-$(UV_VERSION)
# uv syncs $(VENV) (a path relative to the clone) on $(PYTHON), and never
# downloads an interpreter of its own. By the interpreter's own path: uv takes
# a pyenv shim for another interpreter than the venv's, and would rebuild it.
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON := $(shell $(PYTHON) -c 'import sys; print(sys.executable)')
export UV_PYTHON_DOWNLOADS := never

$(UV_STAMP):
	rm -rf $(UV_HOME)
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	touch $@

# `--locked`: a uv.lock that pyproject.toml has moved away from fails the
# install instead of being re-resolved on the way. The venv then holds
# exactly the lock: the service and the simulator's Pillow (`make run`),
# plus the dev group (`make test`). Leaving the dev group out removes it, so
# the stamp that says it is there goes too.
$(VENV)/.simulator: pyproject.toml uv.lock | $(UV_STAMP)
	$(UV) sync --locked --extra simulator --no-dev
	rm -f $(VENV)/.dev
	touch $@

$(VENV)/.dev: pyproject.toml uv.lock | $(UV_STAMP)
	$(UV) sync --locked --extra simulator
	touch $@ $(VENV)/.simulator

install: $(VENV)/.simulator
install-dev: $(VENV)/.dev

## lock: bring uv.lock up to date with pyproject.toml after editing its
## dependencies, keeping every other pin. UPGRADE=1 resolves everything afresh
## to the newest releases pyproject.toml admits; UPGRADE=<name> moves that one.
UPGRADE ?=
lock: | $(UV_STAMP)
	$(UV) lock $(if $(filter 1,$(UPGRADE)),--upgrade,$(if $(UPGRADE),--upgrade-package $(UPGRADE)))

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

## test-unit: the unit and API tests alone (no e2e, no browser), on the
## embedded default: what CI also runs on Python 3.12 and 3.13, and with the
## clock a year ahead.
test-unit: install-dev
	$(BIN)/python -m pytest -m 'not e2e'

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
## both profiles when PostgreSQL and Redis answer; the tables go in bench/README.md.
## Installs wrk and nginx from Debian if they are missing.
bench: install-dev
	@command -v wrk >/dev/null && command -v nginx >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light)
	$(BIN)/python bench/run.py --write-results

## bench-dashboard: issue 13's dashboards (50 viewers, 20 charts, every 30 s for
## 5 minutes) against a rate-limited simulator with a 60 s outage, with the
## Kentik shield on and off (bench/dashboard.py); about 11 minutes.
## DASHBOARD_ARGS='--minutes 1 --viewers 5 --outage 20 --reuse-max-age 15' for a quick run.
DASHBOARD_ARGS ?=
bench-dashboard: install-dev
	$(BIN)/python bench/dashboard.py $(DASHBOARD_ARGS)

## docker-smoke: build the image and run it, alone and in its split roles
## (needs a Docker engine; PYTHON_IMAGE=... for another base, see docs/deploying.md).
docker-smoke: install-dev
	tests/docker/smoke.sh

## k8s-validate: render every kustomization of deploy/kubernetes/ with kubectl
## (the dev group installs it) and validate each object against
## Kubernetes' schemas, with no cluster; the PrometheusRule against
## monitoring/alerts.yml, every variable set against the settings read.
k8s-validate: install-dev
	$(BIN)/python -m pytest -q tests/test_kubernetes.py

TYPED := config imagecache bench deploy manage.py tests

## pins: uv.lock agrees with pyproject.toml, the venv holds exactly the lock,
## and the lock holds kentik-api 1.0.7 but none of its own stale == pins, with
## protobuf and grpcio pinned exactly (tests/pins.py).
pins: install-dev
	@$(UV) lock --check --offline --quiet
	@$(UV) sync --locked --check --extra simulator --offline --quiet
	@$(BIN)/python -m tests.pins

## outdated: the packages of the venv (installed from uv.lock) that have a
## newer release on the package index. kentik-api is left out: 1.0.7 is its
## last release, and its own == pins are older than ours on purpose
## (pyproject.toml's override-dependencies); `make pins` watches those.
outdated: install-dev
	@$(UV) pip list --outdated --python $(BIN)/python --exclude-editable --exclude kentik-api

lint: install-dev pins
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(TYPED)
	$(BIN)/python manage.py makemigrations --check --dry-run

## typecheck: mypy alone (its settings are in pyproject.toml).
typecheck: install-dev
	$(BIN)/mypy $(TYPED)

clean:
	rm -rf $(VENV) $(UV_HOME) var staticfiles .pytest_cache .ruff_cache .mypy_cache
