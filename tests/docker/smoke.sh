#!/usr/bin/env bash
# The Docker image, built and run as docs/deploying.md says:
#   1. the image runs as uid 10001, holds neither the simulator nor Pillow, and
#      refuses to start without Kentik credentials, naming them;
#   2. `serve` alone against a simulator on the host, a root-owned host
#      directory as /cache (so started with --user 0: the entry point gives it
#      to the image's user), ALLOWED_HOSTS not loopback first: the container
#      turns healthy, the integration client passes, and the cache survives a
#      restart of the container;
#   3. the split roles (`migrate`, `web`, `worker`) on PostgreSQL and Redis at
#      their standard ports, against the same simulator: the client passes,
#      and a worker killed (-9) during a fetch is replaced by one that
#      finishes it and counts the call on its metrics port.
# Needs a Docker engine (and for 3, PostgreSQL and Redis; else 3 is skipped).
# Without a registry, build on a local base: tests/docker/base-image.sh, then
# PYTHON_IMAGE=local/python:3.11-slim tests/docker/smoke.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=.venv/bin/python
IMAGE=kentik-image-cache:smoke
PG=postgres://postgres@127.0.0.1:5432
REDIS=redis://127.0.0.1:6379/9
# The health check's Host is the first entry: a name, as in a deployment; the
# clients here ask 127.0.0.1.
HOSTS=cache.example.com,127.0.0.1
run_id="kic-smoke-$$"
workdir="$(mktemp -d)"
containers=()
simulator=""

cleanup() {
  [ ${#containers[@]} -eq 0 ] || docker rm -f "${containers[@]}" >/dev/null 2>&1 || true
  [ -z "$simulator" ] || kill "$simulator" 2>/dev/null || true
  docker volume rm -f "$run_id" >/dev/null 2>&1 || true
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS ${run_id//-/_}" 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
answers() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
wait_ready() {  # /readyz 200 within 60 s
  for _ in $(seq 120); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz")" = 200 ] && return 0
    sleep 0.5
  done
  echo "not ready on port $1" >&2
  return 1
}
wait_healthy() {  # the image's own HEALTHCHECK says healthy within 60 s
  local status
  for _ in $(seq 60); do
    status=$(docker inspect -f '{{.State.Health.Status}}' "$1")
    [ "$status" = healthy ] && return 0
    [ "$status" = unhealthy ] && break
    sleep 1
  done
  docker inspect -f '{{json .State.Health}}' "$1" >&2
  return 1
}
start() {  # name, role, docker run options...
  local name="$run_id-$1" role="$2"
  shift 2
  containers+=("$name")
  docker run -d --name "$name" --network host --health-interval=2s \
    -e SECRET_KEY=smoke-test-secret-key -e ALLOWED_HOSTS="$HOSTS" "$@" "$IMAGE" "$role" >/dev/null
}
active_count() { curl -s "http://127.0.0.1:$1/info" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["active_count"])'; }

echo "== build"
build_args=()
[ -z "${PYTHON_IMAGE:-}" ] || build_args=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
docker build -q --network host "${build_args[@]}" -t "$IMAGE" . >/dev/null

echo "== uid 10001, no simulator, no Pillow, no start without Kentik credentials"
[ "$(docker run --rm "$IMAGE" id -u)" = 10001 ]
for module in imagecache.simulator PIL; do
  if docker run --rm "$IMAGE" python -c "import $module" 2>/dev/null; then
    echo "the image has $module" >&2
    exit 1
  fi
done
if docker run --rm -e SECRET_KEY=smoke-test-secret-key -e ALLOWED_HOSTS="$HOSTS" "$IMAGE" serve \
  >"$workdir/refused.log" 2>&1; then
  echo "serve started without Kentik credentials" >&2
  exit 1
fi
tail -n 1 "$workdir/refused.log"
grep -q "KT_AUTH_EMAIL and KT_AUTH_TOKEN" "$workdir/refused.log"

sim_port=$(free_port)
"$PY" -m imagecache.simulator --port "$sim_port" --email ops@example.com --token smoke \
  --delay 1 >"$workdir/simulator.log" 2>&1 &
simulator=$!
kentik=(-e KENTIK_API_URL="http://127.0.0.1:$sim_port/api/v5"
  -e KT_AUTH_EMAIL=ops@example.com -e KT_AUTH_TOKEN=smoke)

echo "== serve: embedded, a host directory as /cache, healthy with ALLOWED_HOSTS=$HOSTS"
port=$(free_port)
mkdir "$workdir/cache"  # root's, as a host directory is
start serve serve --user 0 -e PORT="$port" "${kentik[@]}" -v "$workdir/cache:/cache"
wait_ready "$port"
wait_healthy "$run_id-serve"
"$PY" -m tests.harness.run_tests --url "http://127.0.0.1:$port" --concurrent --timeout 60 | tail -n 1
before=$(active_count "$port")
docker restart "$run_id-serve" >/dev/null
wait_ready "$port"
after=$(active_count "$port")
echo "entries before and after a restart: $before $after"
[ "$before" -gt 0 ] && [ "$before" = "$after" ]

if ! answers 5432 || ! answers 6379; then
  echo "== split roles: skipped (PostgreSQL or Redis does not answer)"
  exit 0
fi
echo "== split roles: migrate, web, worker on PostgreSQL and Redis"
psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE ${run_id//-/_}"
redis-cli -n 9 flushdb >/dev/null
port=$(free_port)
docker volume create "$run_id" >/dev/null
split=(-e PORT="$port" -e DATABASE_URL="$PG/${run_id//-/_}" -e REDIS_URL="$REDIS"
  "${kentik[@]}" -v "$run_id:/cache")
docker run --rm --network host -e SECRET_KEY=smoke-test-secret-key -e ALLOWED_HOSTS="$HOSTS" \
  "${split[@]}" "$IMAGE" migrate | tail -n 1
start web web "${split[@]}"
start worker worker "${split[@]}"
wait_ready "$port"
wait_healthy "$run_id-web"
"$PY" -m tests.harness.run_tests --url "http://127.0.0.1:$port" --concurrent --timeout 60 | tail -n 1

query='{"api_query": {"queries": [{"query": {"metric": "bytes", "device_name": ["smoke-kill"]}}], "imageType": "png"}}'
id=$(curl -s -X POST -H 'Content-Type: application/json' -d "$query" "http://127.0.0.1:$port/requests" \
  | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])')
sleep 0.3  # the worker has the fetch; the simulator answers after 1 s
docker kill "$run_id-worker" >/dev/null
metrics_port=$(free_port)
start worker-2 worker "${split[@]}" -e WORKER_METRICS_PORT="$metrics_port"
status=$(curl -s -o "$workdir/image" -w '%{http_code} %{content_type}' "http://127.0.0.1:$port/image/$id")
echo "after the worker was killed: $status"
[ "$status" = "200 image/png" ]
# The new worker made that one call, and says so on its own metrics port.
calls=$(curl -s "http://127.0.0.1:$metrics_port/metrics" | grep '^imagecache_kentik_calls_total{status="200"}')
echo "the new worker's metrics: $calls"
[ "$calls" = 'imagecache_kentik_calls_total{status="200"} 1.0' ]
echo "== the image passed"
