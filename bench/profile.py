#!/usr/bin/env python3
"""Profiles one hot path of the real service with py-spy, as `make bench`
drives it, and prints the functions where the web workers spend their time.

Scenarios: `get` (a ready image, wrk), `chart` (a saved chart's fresh image
of the same query, wrk), `posts` (identical POSTs, wrk), `info`
(`/info` with 10,000 entries, wrk), `waiters` (1,000 clients on one pending
id). py-spy samples gunicorn and its workers (`--subprocesses`) while the
load runs; the collapsed stacks are written next to the summary.

Usage: .venv/bin/python bench/profile.py get [--seconds 10] [--out bench/profiles]
       (py-spy comes from .venv-tools: `make install-dev`)
"""

import argparse
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    IMAGE_QUERY,
    chart_saved,
    fill_info,
    service_pids,
    wrk,
    wrk_post_script,
)
from bench.waiters import waiters  # noqa: E402
from imagecache.api.examples import chart_query  # noqa: E402
from imagecache.hashing import query_hash  # noqa: E402
from imagecache.simulator.server import KentikSimulator  # noqa: E402
from tests.harness.data import E2E_EMAIL, E2E_TOKEN  # noqa: E402
from tests.harness.service import Service  # noqa: E402

PY_SPY = Path(sys.executable).with_name("py-spy")


def gunicorn_pid(service: Service) -> int:
    """The gunicorn master: the first gunicorn among the service's processes."""
    return min(
        pid
        for pid in service_pids(service)
        if b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    )


def summarize(collapsed: Path, top: int) -> str:
    """The functions with the most samples: on the stack (total) and on top (self)."""
    total: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            # A frame whose name holds a newline (py-spy writes it as it is):
            # its stack's lines are dropped, not the whole summary.
            continue
        count = int(count_text)
        # py-spy prefixes each stack with the process and the thread.
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        for frame in set(frames):
            total[frame] += count
        own[frames[-1]] += count
    lines = [f"{samples} busy samples"]
    for title, counter in (("total", total), ("self", own)):
        lines.append(f"-- top {top} by {title} --")
        for frame, count in counter.most_common(top):
            lines.append(f"{100 * count / max(samples, 1):5.1f}%  {frame}")
    return "\n".join(lines)


class Recording:
    """py-spy on gunicorn and its workers for `seconds`, in the background."""

    def __init__(self, pid: int, seconds: float, output: Path) -> None:
        self.output = output
        argv = [str(PY_SPY), "record", "--pid", str(pid), "--subprocesses"]
        argv += ["--rate", "250", "--duration", str(round(seconds)), "--format", "raw"]
        argv += ["--output", str(output), "--nonblocking"]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait(self) -> None:
        _, err = self.process.communicate(timeout=600)
        if self.process.returncode != 0 or not self.output.exists():
            raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("scenario", choices=["get", "chart", "posts", "info", "waiters"])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "profiles")
    args = parser.parse_args(argv)
    if not PY_SPY.exists():
        sys.exit("py-spy is missing: `make install-dev` installs it")
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        KentikSimulator(email=E2E_EMAIL, token=E2E_TOKEN) as sim,
    ):
        service = Service(Path(tmp), sim.url, ENTRY_WAIT_TIMEOUT=120)
        service.env["KT_AUTH_EMAIL"], service.env["KT_AUTH_TOKEN"] = E2E_EMAIL, E2E_TOKEN
        service.start()
        database = service.env["DATABASE_URL"].split(":", 1)[0]
        collapsed = args.out / f"{args.scenario}-{database}.txt"
        try:
            entry_id = service.post(IMAGE_QUERY, ttl=3600)
            image = service.get_image(entry_id)
            assert image.status_code == 200
            pid = gunicorn_pid(service)
            if args.scenario == "waiters":
                recording = Recording(pid, args.seconds, collapsed)
                result: object = waiters(service, sim, 1000, 2.0)
            else:
                url = service.url + f"/image/{entry_id}"
                script = None
                if args.scenario == "posts":
                    url = service.url + "/requests"
                    body = {"api_query": chart_query("profile-posts", "png")}
                    script = wrk_post_script(Path(tmp) / "post.lua", body)
                elif args.scenario == "chart":
                    url = service.url + chart_saved(service, Path(tmp), image.content)
                elif args.scenario == "info":
                    ((fetch_id,),) = service.sql(
                        "SELECT id FROM imagecache_fetch WHERE query_hash = ?",
                        (query_hash(IMAGE_QUERY),),
                    )
                    fill_info(service, fetch_id, 10_000)
                    url = service.url + "/info"
                recording = Recording(pid, args.seconds, collapsed)
                result = {"req/s": wrk(url, args.seconds, script=script)}
            recording.wait()
        finally:
            service.drop()
    summary = f"{args.scenario} on {database}: {result}\n{summarize(collapsed, args.top)}"
    (args.out / f"{args.scenario}-{database}.summary").write_text(summary + "\n")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
