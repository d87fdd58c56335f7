#!/usr/bin/env python3
"""Measures how fast the service recovers a fetch that was in flight when
its processes were killed with -9, on the real service (as `make run` starts
it) against the bundled simulator:

1. every process of the service killed mid-fetch, then restarted: seconds
   from the restart to the image (minus the simulator's delay);
2. the django-q2 worker holding the fetch killed alone, a client waiting:
   seconds from the kill to the image (minus the simulator's delay).

Usage: .venv/bin/python bench/recovery.py [--rounds 3] [--json out.json]
"""

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from imagecache.hashing import query_hash  # noqa: E402
from imagecache.simulator.server import KentikSimulator  # noqa: E402
from tests.harness.data import E2E_EMAIL, E2E_TOKEN, unique_query  # noqa: E402
from tests.harness.service import Service, wait_for  # noqa: E402

DELAY = 2.0


def whole_service(sim: KentikSimulator, workdir: Path, n: int) -> float:
    service = Service(workdir, sim.url, KENTIK_API_TIMEOUT=10)
    service.env["KT_AUTH_EMAIL"], service.env["KT_AUTH_TOKEN"] = E2E_EMAIL, E2E_TOKEN
    service.start()
    try:
        api_query = unique_query(f"crash-{n}-{time.time()}")
        entry_id = service.post(api_query)
        wait_for(lambda: sim.calls()["in_flight"] >= 1)
        service.kill()
        restarted = time.monotonic()
        service.start()
        response = service.get_image(entry_id)
        assert response.status_code == 200, response.text
        return time.monotonic() - restarted - DELAY
    finally:
        service.drop()


def worker_alone(sim: KentikSimulator, workdir: Path, n: int) -> float:
    service = Service(workdir, sim.url, KENTIK_API_TIMEOUT=10)
    service.env["KT_AUTH_EMAIL"], service.env["KT_AUTH_TOKEN"] = E2E_EMAIL, E2E_TOKEN
    service.start()
    try:
        api_query = unique_query(f"worker-{n}-{time.time()}")
        entry_id = service.post(api_query)

        def owner() -> str | None:
            rows = service.sql(
                "SELECT lease_owner FROM imagecache_fetch WHERE query_hash = ?"
                " AND state = 'fetching'",
                (query_hash(api_query),),
            )
            return rows[0][0] if rows else None

        pid = int(wait_for(owner).rsplit(":", 1)[1])
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        response = service.get_image(entry_id)
        assert response.status_code == 200, response.text
        return time.monotonic() - killed - DELAY
    finally:
        service.drop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    results: dict[str, list[float]] = {"whole_service_killed": [], "worker_killed": []}
    with KentikSimulator(email=E2E_EMAIL, token=E2E_TOKEN, delay=DELAY) as sim:
        for n in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                results["whole_service_killed"].append(whole_service(sim, Path(tmp), n))
            with tempfile.TemporaryDirectory() as tmp:
                results["worker_killed"].append(worker_alone(sim, Path(tmp), n))
    figures = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "simulator_delay_s": DELAY,
        **{
            name: {
                "rounds": len(values),
                "recovery_s_median": round(statistics.median(values), 2),
                "recovery_s_max": round(max(values), 2),
            }
            for name, values in results.items()
        },
    }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
