#!/usr/bin/env python3
"""`make bench`: the service's speed against this machine's limit, in one run.

Starts the service as `make run` does (gunicorn + qcluster) against the
bundled simulator, fills it, and drives it with wrk from loopback. nginx
serves the same image file as a static file in the same run, and rounds
interleave (nginx, service, nginx, service, ...), so every figure is also a
ratio to nginx that holds when the machine's speed drifts. Prints a table
with each target and whether it is met, and writes it as JSON.

Usage: .venv/bin/python bench/run.py [--rounds 3] [--seconds 5] [--json bench/results.json]
Needs wrk and nginx (Debian packages; `make bench` installs them).
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.waiters import added_latency, waiters  # noqa: E402
from imagecache.examples import chart_query  # noqa: E402
from imagecache.hashing import query_hash  # noqa: E402
from imagecache.simulator import KentikSimulator  # noqa: E402
from tests.e2e.conftest import EMAIL, TOKEN  # noqa: E402
from tests.e2e.service import Service, free_port  # noqa: E402

# A 1800x900 chart: about 60 KB of PNG, as Kentik's real ones weigh.
IMAGE_QUERY = chart_query("bench-60kb", "png", width=1800, height=900)


def wrk(url: str, seconds: float, connections: int = 32, script: Path | None = None) -> float:
    """Requests per second that wrk gets from a URL."""
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{round(seconds)}s", "--latency", url]
    if script is not None:
        argv[1:1] = ["-s", str(script)]
    output = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    if "Non-2xx or 3xx responses" in output:
        raise RuntimeError(f"wrk saw errors from {url}:\n{output}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not match:
        raise RuntimeError(f"wrk gave no figure for {url}:\n{output}")
    return float(match.group(1))


class Nginx:
    """nginx on a loopback port: a static file server, or a caching proxy."""

    def __init__(self, workdir: Path, server_block: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(workdir, 0o755)
        conf = workdir / "nginx.conf"
        conf.write_text(
            f"""
worker_processes 2;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    types {{ image/png png; }}
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    proxy_cache_path {workdir}/cache levels=1:2 keys_zone=images:10m max_size=1g inactive=1h;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        {server_block}
    }}
}}
"""
        )
        self.process = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", str(workdir), "-g", "daemon off; user root;"],
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{self.port}/", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("nginx did not start")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGQUIT)
        self.process.wait(10)


def proxy_block(upstream: str) -> str:
    """The README's nginx configuration in front of the service."""
    return f"""
        location / {{
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache images;
            proxy_cache_lock on;
            proxy_read_timeout 200s;
            add_header X-Cache-Status $upstream_cache_status;
        }}
"""


def service_rss(service: Service) -> int:
    """Total resident memory of every process of the service, in bytes."""
    assert service.process is not None
    group = os.getpgid(service.process.pid)
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            pid = int(status.parent.name)
            if os.getpgid(pid) != group:
                continue
            match = re.search(r"VmRSS:\s+(\d+) kB", status.read_text())
        except (OSError, ProcessLookupError, ValueError):
            continue
        if match:
            total += int(match.group(1)) * 1024
    return total


def fill_info(service: Service, fetch_id: int, count: int) -> None:
    """`count` live entries sharing one ready fetch, straight into the database."""
    expires = "2099-01-01 00:00:00"
    if service.env["DATABASE_URL"].startswith("sqlite"):
        rows = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " SELECT printf('%064x_4070908800.%06d', i, i), ?, ?, ? FROM n"
        )
        service.sql(
            f"INSERT INTO imagecache_entry (id, fetch_id, created_at, expires_at) {rows}",
            (count, fetch_id, "2026-01-01 00:00:00", expires),
        )
    else:
        service.sql(
            "INSERT INTO imagecache_entry (id, fetch_id, created_at, expires_at)"
            " SELECT lpad(to_hex(i), 64, '0') || '_4070908800.' || lpad(i::text, 6, '0'),"
            " ?, now(), ? FROM generate_series(1, ?) AS i",
            (fetch_id, expires + "+00", count),
        )


def interleaved(rounds: int, measures: dict[str, Any]) -> dict[str, float]:
    """Each measure once per round, in turn; the median of each."""
    results: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            results[name].append(measure())
    return {name: statistics.median(values) for name, values in results.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args(argv)
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            sys.exit(
                f"{tool} is missing: `make bench` installs it (apt-get install wrk nginx-light)"
            )

    with tempfile.TemporaryDirectory() as tmp, KentikSimulator(email=EMAIL, token=TOKEN) as sim:
        work = Path(tmp)
        os.chmod(work, 0o755)
        service = Service(work / "service", sim.url, ENTRY_WAIT_TIMEOUT=120, WEB_ACCESS_LOG=0)
        service.env["KT_AUTH_EMAIL"], service.env["KT_AUTH_TOKEN"] = EMAIL, TOKEN
        service.start()
        static = proxy = None
        try:
            idle_rss = service_rss(service)
            entry_id = service.post(IMAGE_QUERY, ttl=3600)
            image = service.get_image(entry_id)
            assert image.status_code == 200
            ((fetch_id,),) = service.sql(
                "SELECT id FROM imagecache_fetch WHERE query_hash = ?",
                (query_hash(IMAGE_QUERY),),
            )
            static_root = work / "static"
            static_root.mkdir()
            (static_root / "chart.png").write_bytes(image.content)
            os.chmod(static_root, 0o755)
            static = Nginx(work / "nginx-static", f"root {static_root};")
            proxy = Nginx(work / "nginx-proxy", proxy_block(service.url))
            image_path = f"/image/{entry_id}"
            for url in (static.url("/chart.png"), proxy.url(image_path), service.url + image_path):
                got = requests.get(url, timeout=10)
                assert got.content == image.content, f"{url} answered other bytes"

            post_script = work / "post.lua"
            body = json.dumps({"api_query": IMAGE_QUERY, "ttl": 600})
            post_script.write_text(
                'wrk.method = "POST"\n'
                f"wrk.body = {json.dumps(body)}\n"
                'wrk.headers["Content-Type"] = "application/json"\n'
            )
            calls_before = sim.calls()["by_query"].get(query_hash(IMAGE_QUERY), 0)
            rates = interleaved(
                args.rounds,
                {
                    "nginx_static": lambda: wrk(static.url("/chart.png"), args.seconds),
                    "service_get": lambda: wrk(service.url + image_path, args.seconds),
                    "nginx_static_2": lambda: wrk(static.url("/chart.png"), args.seconds),
                    "proxied_get": lambda: wrk(proxy.url(image_path), args.seconds),
                    "identical_posts": lambda: wrk(
                        service.url + "/requests", args.seconds, script=post_script
                    ),
                },
            )
            post_calls = sim.calls()["by_query"].get(query_hash(IMAGE_QUERY), 0) - calls_before
            fill_info(service, fetch_id, 10_000)
            rates["info_10k"] = statistics.median(
                wrk(service.url + "/info", args.seconds) for _ in range(args.rounds)
            )
            latency = added_latency(service, sim, 20, 1.0)
            crowd = waiters(service, sim, args.waiters, 3.0)
            busy_rss = service_rss(service)
        finally:
            for server in (static, proxy):
                if server is not None:
                    server.stop()
            service.drop()

    nginx = statistics.median([rates["nginx_static"], rates["nginx_static_2"]])
    figures = [
        (
            "Cached GET, 60 KB PNG, gunicorn alone",
            rates["service_get"],
            "req/s",
            rates["service_get"] / nginx,
            ">= 0.10x nginx",
            rates["service_get"] / nginx >= 0.10,
        ),
        (
            "Same GET through nginx proxy cache",
            rates["proxied_get"],
            "req/s",
            rates["proxied_get"] / nginx,
            ">= 0.7x nginx",
            rates["proxied_get"] / nginx >= 0.7,
        ),
        (
            "Identical POSTs, 32 connections",
            rates["identical_posts"],
            "req/s",
            rates["identical_posts"] / nginx,
            f">= 400 req/s, 1 call (saw {post_calls})",
            rates["identical_posts"] >= 400 and post_calls == 0,
        ),
        (
            "/info with 10,000 entries",
            rates["info_10k"],
            "req/s",
            rates["info_10k"] / nginx,
            ">= 100 req/s",
            rates["info_10k"] >= 100,
        ),
        (
            f"{args.waiters} waiters: p99 store->answer",
            crowd["store_to_answer_ms_p99"],
            "ms",
            None,
            "all 200, <= 1000 ms",
            crowd["statuses"] == {"200": args.waiters} and crowd["store_to_answer_ms_p99"] <= 1000,
        ),
        (
            "Added wait latency, median",
            latency["added_ms_median"],
            "ms",
            None,
            "<= 60 ms (SQLite), <= 30 ms (PostgreSQL)",
            latency["added_ms_median"] <= (30 if "postgres" in service.env["DATABASE_URL"] else 60),
        ),
        (
            "RSS idle / after the run",
            busy_rss / 2**20,
            "MiB",
            None,
            f"idle {idle_rss / 2**20:.0f} MiB",
            True,
        ),
    ]
    print(f"nginx static: {nginx:.0f} req/s; {os.cpu_count()} cores; {datetime.now():%Y-%m-%d}")
    print(f"{'figure':<42} {'value':>10} {'unit':<6} {'x nginx':>8}  {'target':<36} met")
    for name, value, unit, ratio, target, met in figures:
        ratio_text = f"{ratio:.3f}" if ratio is not None else "-"
        verdict = "yes" if met else "NO"
        print(f"{name:<42} {value:>10.1f} {unit:<6} {ratio_text:>8}  {target:<36} {verdict}")
    result = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "database": service.env["DATABASE_URL"].split(":", 1)[0],
        "nginx_static_rps": nginx,
        "rates": rates,
        "added_wait_latency": latency,
        "concurrent_waiters": crowd,
        "rss_idle_bytes": idle_rss,
        "rss_after_bytes": busy_rss,
        "figures": [
            {"figure": n, "value": v, "unit": u, "ratio_to_nginx": r, "target": t, "met": m}
            for n, v, u, r, t, m in figures
        ],
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
