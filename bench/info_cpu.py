#!/usr/bin/env python3
"""`/info` with 10,000 entries under wrk, as `make bench` measures it, and
the CPU it costs each side: the service's processes and the database's
server processes (every `postgres` process of the host: run it on a quiet
one), per request. Rounds alternate between this checkout and `--against`,
each on a fresh service.

Usage: .venv/bin/python bench/info_cpu.py [--rounds 2] [--seconds 8] [--against CHECKOUT]
       DATABASE_URL=postgres://postgres@127.0.0.1:5432/imagecache \
       REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/info_cpu.py
"""

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.query_cpu import cpu_ms  # noqa: E402
from bench.run import IMAGE_QUERY, fill_info, wrk  # noqa: E402
from bench.waiters import service_pids  # noqa: E402
from imagecache.hashing import query_hash  # noqa: E402
from imagecache.simulator.server import KentikSimulator  # noqa: E402
from tests.harness.data import E2E_EMAIL, E2E_TOKEN  # noqa: E402
from tests.harness.service import Service  # noqa: E402


def server_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().startswith("postgres"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def measure(root: Path, seconds: float) -> dict[str, float]:
    """req/s, and ms of CPU per request of the service and of the database."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        KentikSimulator(email=E2E_EMAIL, token=E2E_TOKEN) as sim,
    ):
        service = Service(Path(tmp), sim.url, ENTRY_WAIT_TIMEOUT=120)
        service.root = root
        service.env["KT_AUTH_EMAIL"], service.env["KT_AUTH_TOKEN"] = E2E_EMAIL, E2E_TOKEN
        service.start()
        try:
            assert service.get_image(service.post(IMAGE_QUERY, ttl=3600)).status_code == 200
            ((fetch_id,),) = service.sql(
                "SELECT id FROM imagecache_fetch WHERE query_hash = ?", (query_hash(IMAGE_QUERY),)
            )
            fill_info(service, fetch_id, 10_000)
            url = service.url + "/info"
            wrk(url, 2)  # the pools' connections made
            sides = {"service": service_pids(service), "database": server_pids()}
            before = {side: cpu_ms(pids) for side, pids in sides.items()}
            rate = wrk(url, seconds)
            requests = rate * round(seconds)  # wrk's own duration
            after = {side: cpu_ms(pids) for side, pids in sides.items()}
        finally:
            service.drop()
    result = {"req/s": rate}
    for side in sides:
        used = sum(t - before[side][pid][1] for pid, (_, t) in after[side].items())
        result[f"{side} ms/request"] = used / requests
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--against", type=Path, help="an earlier checkout, in alternate rounds")
    args = parser.parse_args(argv)
    roots = [ROOT, args.against] if args.against else [ROOT]
    for n in range(args.rounds):
        for root in roots:
            figures = ", ".join(f"{k} {v:.2f}" for k, v in measure(root, args.seconds).items())
            print(f"round {n + 1}, {root}: {figures}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
