# Kentik Image Cache, on Python 3.11 (3.12 and 3.13 are tested too).
# The base is pinned to a patch release, so that a rebuild brings no new
# Python; a digest (`...-slim-bookworm@sha256:...`) pins it further, and another
# base (a registry mirror, a local image) goes in with --build-arg PYTHON_IMAGE=...
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /src
COPY pyproject.toml uv.lock ./
# uv, the release pyproject.toml requires, in this stage only. Then exactly
# what uv.lock holds for the service, each file checked against its hash:
# no dev group, no simulator extra (Pillow), and not the project itself, which
# runs from /app. `--locked` fails the build if the lock is behind pyproject.toml.
RUN python -m venv /uv \
    && /uv/bin/pip install "uv$(sed -n 's/^required-version = "\(.*\)"$/\1/p' pyproject.toml)" \
    && /uv/bin/uv sync --locked --no-dev --no-install-project --python "$(command -v python)"

FROM ${PYTHON_IMAGE}
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    CACHE_PATH=/cache \
    BIND=0.0.0.0 \
    PORT=8000 \
    FORWARDED_ALLOW_IPS=
# gunicorn believes X-Forwarded-* (the scheme Django sees) from no address:
# a deployment names its proxy, e.g. FORWARDED_ALLOW_IPS=172.18.0.1.
# The service's user and group, 10001 both: Kubernetes' runAsUser and fsGroup
# (deploy/kubernetes/) name the same numbers. It owns the cache volume only;
# the code and the venv stay root's, read-only to it.
RUN groupadd --system --gid 10001 imagecache \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home imagecache \
    && mkdir -p /cache && chown 10001:10001 /cache
COPY --from=build /venv /venv
WORKDIR /app
# What runs, and nothing else: no tests, benchmarks or docs (.dockerignore
# also keeps them and the simulator out of the build context).
COPY manage.py ./
COPY config ./config
COPY imagecache ./imagecache
COPY templates ./templates
RUN SECRET_KEY=build-only ALLOWED_HOSTS=build KT_AUTH_EMAIL=build KT_AUTH_TOKEN=build \
    python manage.py collectstatic --noinput \
    && python -m compileall -q config imagecache
# Numeric, so that Kubernetes' runAsNonRoot can tell it is not root. Started
# with --user 0 instead, the entry point gives /cache to RUN_AS (a host
# directory mounted there is root's), then drops to it.
ENV RUN_AS=imagecache
USER 10001:10001
VOLUME ["/cache"]
EXPOSE 8000
# With a Host from ALLOWED_HOSTS: Django refuses 127.0.0.1 unless it is allowed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "config/healthcheck.py"]
ENTRYPOINT ["/app/config/entrypoint.sh"]
CMD ["serve"]
