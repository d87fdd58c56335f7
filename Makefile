# Two commands on a fresh machine: `make run` and `make test`.
# Python 3.11, 3.12 or 3.13: `make test PYTHON=/root/.pyenv/versions/3.13.0/bin/python`.
# Another interpreter wants a venv of its own: VENV=.venv-3.13.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-embedded test-production test-unit pins bench bench-dashboard docker-smoke lint typecheck install install-dev constraints clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Every pip install in the venv keeps the versions of requirements/constraints.txt
# (pip reads the venv's own pip.conf), so that nothing can bring kentik-api's
# old == pins back by the way.
$(VENV)/pip.conf: | $(BIN)/python
	printf '[install]\nconstraint = %s\n' "$(CURDIR)/requirements/constraints.txt" > $@

# kentik-api goes in on its own, without its dependencies: see requirements/kentik.txt.
$(VENV)/.base: requirements/base.txt requirements/kentik.txt requirements/constraints.txt | $(VENV)/pip.conf
	$(BIN)/pip install -q -r requirements/base.txt
	$(BIN)/pip install -q --no-deps -r requirements/kentik.txt
	touch $@

$(VENV)/.dev: $(VENV)/.base requirements/dev.txt
	$(BIN)/pip install -q -r requirements/dev.txt
	touch $@

install: $(VENV)/.base
install-dev: $(VENV)/.dev

## constraints: pin every package that base.txt, dev.txt and kentik.txt bring
## in, resolved afresh in a scratch venv (after editing base.txt or dev.txt).
constraints:
	rm -rf $(VENV)-constraints
	$(PYTHON) -m venv $(VENV)-constraints
	$(VENV)-constraints/bin/pip install -q --upgrade pip
	$(VENV)-constraints/bin/pip install -q -r requirements/dev.txt
	$(VENV)-constraints/bin/pip install -q --no-deps -r requirements/kentik.txt
	{ sed -n '/^#/p' requirements/constraints.txt; $(VENV)-constraints/bin/pip freeze --exclude-editable; } > requirements/constraints.txt.new
	mv requirements/constraints.txt.new requirements/constraints.txt
	rm -rf $(VENV)-constraints

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

TYPED := config imagecache bench manage.py tests

## pins: pip check finds nothing amiss but kentik-api's own == lines, and the
## constraints make an install that would bring those pins back fail.
pins: install-dev
	@! $(BIN)/pip check | grep -v '^kentik-api 1.0.7 has requirement '
	@out=$$($(BIN)/pip install --dry-run --ignore-installed kentik-api==1.0.7 2>&1); \
	if echo "$$out" | grep -q ResolutionImpossible; then \
	  echo "pins: the constraints keep kentik-api's old pins out"; \
	else \
	  echo "$$out" | tail -n 20; \
	  echo "pins: requirements/constraints.txt no longer keeps kentik-api's old pins out"; exit 1; \
	fi

lint: install-dev pins
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(TYPED)
	$(BIN)/python manage.py makemigrations --check --dry-run

## typecheck: mypy alone (its settings are in pyproject.toml).
typecheck: install-dev
	$(BIN)/mypy $(TYPED)

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache .ruff_cache .mypy_cache
