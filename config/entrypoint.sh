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

# Started as root (the image's default), it gives the cache volume to the
# service's user, RUN_AS (a host directory mounted there is root's), then runs
# as that user. Started as any other user (`docker run --user`), it runs as is.
if [ "$(id -u)" = 0 ] && [ -n "${RUN_AS:-}" ]; then
  group="$(id -g "$RUN_AS")"
  mkdir -p "$CACHE_PATH"
  find "$CACHE_PATH" ! -user "$RUN_AS" -exec chown "$RUN_AS:$group" {} +
  exec setpriv --reuid="$RUN_AS" --regid="$group" --init-groups "$0" "$@"
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
