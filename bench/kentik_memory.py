#!/usr/bin/env python3
"""The memory one Kentik answer costs a worker: the Kentik seam
(`imagecache.kentik.fetch_chart`) against a stand-in on loopback that answers
a chart of the size given, each case in a process of its own.

Prints, per answer size, the outcome and the peak RSS above the process's RSS
before the call (the kernel's high-water mark, VmHWM).

Usage: .venv/bin/python bench/kentik_memory.py [--mib 8 40 60 72]
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def serve(answer: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            try:
                self.wfile.write(answer)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused past KENTIK_MAX_BYTES

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def high_water_kib() -> int:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def case(url: str) -> None:
    """One call to the stand-in at `url`: its outcome and the memory it cost."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    import django

    django.setup()
    from django.conf import settings

    from imagecache import kentik

    settings.KENTIK_API_URL = url
    settings.KT_AUTH_EMAIL, settings.KT_AUTH_TOKEN = "bench@example.com", "bench-token"
    settings.KENTIK_API_RETRIES = 0
    query = json.dumps({"queries": [], "imageType": "png"})
    # The high-water mark so far (imports, settings), then after the call.
    before = high_water_kib()
    try:
        chart = kentik.fetch_chart(query)
        outcome = f"200, {len(chart.data) / 2**20:.1f} MiB image"
    except kentik.KentikError as exc:
        outcome = f"{exc.status}: {exc.message}"
    after = high_water_kib()
    print(json.dumps({"outcome": outcome, "added": after - before}))


def answer_of(mib: float) -> bytes:
    image = os.urandom(int(mib * 1024 * 1024 * 3 / 4))
    return json.dumps(
        {"dataUri": "data:image/png;base64," + base64.b64encode(image).decode()}
    ).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--mib", type=float, nargs="+", default=[8, 40, 60, 72])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case is not None:
        case(args.case)
        return 0
    print(f"{'answer':>10}  {'peak RSS added':>14}  outcome")
    for mib in args.mib:
        # The stand-in runs here; the call, in a process of its own.
        answer = answer_of(mib)
        server = serve(answer)
        url = f"http://127.0.0.1:{server.server_address[1]}/api/v5"
        try:
            run = subprocess.run(
                [sys.executable, __file__, "--case", url],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
        finally:
            server.shutdown()
        result = json.loads(run.stdout.strip().splitlines()[-1])
        print(
            f"{len(answer) / 2**20:>7.1f} MiB  {result['added'] / 1024:>10.0f} MiB"
            f"  {result['outcome']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
