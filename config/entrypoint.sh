#!/bin/sh
# The container's entry point: one image, several roles.
#   serve    everything in one container (migrate, recover, web, worker): the
#            default; it needs Kentik credentials, as every role does
#   web      gunicorn only
#   worker   re-enqueue what is pending, then the django-q2 cluster (and its
#            metrics on WORKER_METRICS_PORT, if set)
#   migrate  apply migrations and register the schedules (run once per release)
#   recover  re-enqueue pending and abandoned fetches (safe at any time)
# Anything else is run as a command, e.g. `python manage.py prune_cache`.
set -eu
cd "$(dirname "$0")/.."

# The image runs as uid 10001 (its USER, Kubernetes' runAsUser), which owns
# the image's /cache, and so a new named volume there. Started as root
# (`docker run --user 0`), it gives the cache volume to the service's user,
# RUN_AS (a host directory mounted there is root's), then runs as that user.
if [ "$(id -u)" = 0 ] && [ -n "${RUN_AS:-}" ]; then
  group="$(id -g "$RUN_AS")"
  mkdir -p "$CACHE_PATH"
  find "$CACHE_PATH" ! -user "$RUN_AS" -exec chown "$RUN_AS:$group" {} +
  exec setpriv --reuid="$RUN_AS" --regid="$group" --init-groups "$0" "$@"
fi

# A cache this user cannot write would fail later, in a worker, as a
# traceback: say here what to do instead.
if [ -n "${CACHE_PATH:-}" ]; then
  mkdir -p "$CACHE_PATH" 2>/dev/null || true
  if [ ! -w "$CACHE_PATH" ]; then
    echo "CACHE_PATH ($CACHE_PATH) is not writable by uid $(id -u): give it to that user" \
      "(chown $(id -u):$(id -g), or fsGroup in Kubernetes), or start the container with" \
      "--user 0 to have the entry point give it to ${RUN_AS:-the service's user}" >&2
    exit 1
  fi
fi

role="${1:-serve}"
case "$role" in
  serve)
    exec python manage.py serve ;;
  web)
    exec python -m gunicorn -c config/gunicorn.py config.wsgi ;;
  worker)
    exec python manage.py serve --worker ;;
  migrate)
    python manage.py migrate --noinput
    exec python manage.py register_schedules ;;
  recover)
    exec python manage.py recover_pending ;;
  *)
    exec "$@" ;;
esac
