#!/usr/bin/env python3
"""This tree's service beside an earlier checkout's, on the figures of
`make bench` that clients feel and that one run cannot compare across days:
a cached GET, `/info` with 10,000 entries and identical POSTs on 32
connections.

Both services run at once, as `bench/run.py` starts one (the same simulator,
the same data), and their rounds interleave (this, the other, this, ...),
so that the machine's drift weighs on both alike. Each figure is the
median of the rounds, and the ratio this / other.

Usage: .venv/bin/python bench/against.py --against ../checkout
           [--rounds 7] [--seconds 5]

The embedded profile only: two services on one Redis would share its queue.
"""

import argparse
import functools
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    IMAGE_QUERY,
    POST_QUERY,
    fill_info,
    profile_environment,
    wrk,
    wrk_post_script,
)
from imagecache.hashing import query_hash  # noqa: E402
from imagecache.simulator.server import KentikSimulator  # noqa: E402
from tests.harness.data import E2E_EMAIL, E2E_TOKEN  # noqa: E402
from tests.harness.service import Service  # noqa: E402


def started(root: Path, work: Path, sim_url: str) -> tuple[Service, str]:
    """A service of the tree at `root`, filled as `make bench` fills it, and
    the path of its ready image."""
    with profile_environment("embedded"):
        service = Service(
            work, sim_url, ENTRY_WAIT_TIMEOUT=120, WEB_ACCESS_LOG=0, REUSE_MAX_AGE=3600
        )
    service.root = root
    service.env["KT_AUTH_EMAIL"], service.env["KT_AUTH_TOKEN"] = E2E_EMAIL, E2E_TOKEN
    service.start()
    entry_id = service.post(IMAGE_QUERY, ttl=3600)
    image = service.get_image(entry_id)
    assert image.status_code == 200, image.text
    ((fetch_id,),) = service.sql(
        "SELECT id FROM imagecache_fetch WHERE query_hash = ?", (query_hash(IMAGE_QUERY),)
    )
    fill_info(service, fetch_id, 10_000)
    return service, f"/image/{entry_id}"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--against", type=Path, required=True, help="the other checkout")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        KentikSimulator(email=E2E_EMAIL, token=E2E_TOKEN) as sim,
    ):
        work = Path(tmp)
        script = wrk_post_script(work / "post.lua", {"api_query": POST_QUERY, "ttl": 3600})
        services = {
            "this": started(ROOT, work / "this", sim.url),
            "other": started(args.against.resolve(), work / "other", sim.url),
        }
        try:
            measures: dict[str, Callable[[], float]] = {}
            for name, (service, image_path) in services.items():
                measures[f"get {name}"] = functools.partial(
                    wrk, service.url + image_path, args.seconds
                )
                measures[f"info {name}"] = functools.partial(
                    wrk, service.url + "/info", args.seconds
                )
                measures[f"posts {name}"] = functools.partial(
                    wrk, service.url + "/requests", args.seconds, script=script
                )
            rates: dict[str, list[float]] = {name: [] for name in measures}
            for _ in range(args.rounds):
                for name, measure in measures.items():
                    rates[name].append(measure())
        finally:
            for service, _ in services.values():
                service.drop()
    print(f"embedded: this tree against {args.against}, {args.rounds} rounds of {args.seconds:g} s")
    for figure in ("get", "info", "posts"):
        this, other = rates[f"{figure} this"], rates[f"{figure} other"]
        ratio = statistics.median(this) / statistics.median(other)
        print(
            f"{figure}: this {statistics.median(this):,.1f} req/s {[round(r) for r in this]},"
            f" other {statistics.median(other):,.1f} req/s {[round(r) for r in other]};"
            f" this / other {ratio:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
