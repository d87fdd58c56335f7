"""A bare WSGI app that sends one file (BARE_FILE) and nothing else: what
gunicorn alone can do on this machine, the reference for the cached GET in
bench/run.py. Run with the service's worker class, workers and threads."""

import os
from collections.abc import Callable, Iterable
from typing import Any

PATH = os.environ["BARE_FILE"]
HEADERS = [("Content-Type", "image/png"), ("Content-Length", str(os.path.getsize(PATH)))]


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", list(HEADERS))
    wrapper: Callable[[Any, int], Iterable[bytes]] = environ["wsgi.file_wrapper"]
    return wrapper(open(PATH, "rb"), 64 * 1024)
