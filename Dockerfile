# Kentik Image Cache, on Python 3.11 (3.12 and 3.13 are tested too).
# Another base (a registry mirror, a local image) with --build-arg PYTHON_IMAGE=...
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /venv
# As the Makefile does: the pinned set under its constraints, then kentik-api
# without its stale == pins (requirements/kentik.txt).
COPY requirements/base.txt requirements/kentik.txt requirements/constraints.txt /tmp/requirements/
RUN /venv/bin/pip install -c /tmp/requirements/constraints.txt -r /tmp/requirements/base.txt \
    && /venv/bin/pip install --no-deps -r /tmp/requirements/kentik.txt

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
RUN useradd --system --uid 10001 --home-dir /app imagecache \
    && mkdir -p /cache && chown imagecache /cache
COPY --from=build /venv /venv
WORKDIR /app
COPY . /app
RUN SECRET_KEY=build-only ALLOWED_HOSTS=build KT_AUTH_EMAIL=build KT_AUTH_TOKEN=build \
    python manage.py collectstatic --noinput
# The entry point starts as root only to give /cache to RUN_AS, then drops to it.
ENV RUN_AS=imagecache
VOLUME ["/cache"]
EXPOSE 8000
# With a Host from ALLOWED_HOSTS: Django refuses 127.0.0.1 unless it is allowed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "config/healthcheck.py"]
ENTRYPOINT ["/app/config/entrypoint.sh"]
CMD ["serve"]
