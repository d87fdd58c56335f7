"""SENTRY_DSN: the web's and the worker's errors reach Sentry (here, a local
HTTP endpoint that receives the envelopes), and no secret leaves with them,
wherever the error put it: its message, a local variable, a header."""

import gzip
import os
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.harness.service import ROOT

TOKEN = "kentik-token-5f1e2d3c4b5a"
SECRET_KEY = "django-secret-9a8b7c6d5e4f"
REDIS_PASSWORD = "redis-password-4d5e6f"

# Run in a process of its own: sentry-sdk, once set up, patches Django for the
# life of the process. A view that fails, then a fetch whose Kentik answer the
# worker cannot handle: each with the secrets in its message and its locals.
SCRIPT = """
import django

django.setup()

from unittest import mock

import sentry_sdk
from django.conf import settings
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import path

from imagecache import kentik
from imagecache.services import entries, fetching
from tests.harness.data import QUERY


def broken(request):
    token = settings.KT_AUTH_TOKEN
    raise RuntimeError(f"the view failed with {token} and {settings.SECRET_KEY}")


urlpatterns = [path("broken", broken)]

with override_settings(ROOT_URLCONF=__name__):
    answer = Client(raise_request_exception=False).get(
        "/broken",
        headers={"X-CH-Auth-API-Token": settings.KT_AUTH_TOKEN, "X-Request-ID": "web-1"},
    )
    assert answer.status_code == 500, answer.status_code

call_command("migrate", verbosity=0)
entry = entries.entry_create(api_query=QUERY)


def unreadable(*args, **kwargs):
    token = settings.KT_AUTH_TOKEN
    raise ValueError(f"Kentik's answer to {token} is unreadable ({settings.SECRET_KEY})")


with mock.patch.object(kentik, "fetch_chart", unreadable):
    fetching.fetch_run(fetch_id=entry.fetch_id)
assert sentry_sdk.flush(timeout=20) is None
print("sent")
"""


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.envelopes: list[bytes] = []


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding == "br":
            import brotli  # type: ignore[import-not-found]  # only if sentry-sdk found it

            body = brotli.decompress(body)
        self.server.envelopes.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run(tmp_path: Path, receiver: Receiver) -> str:
    script = tmp_path / "errors.py"
    script.write_text(SCRIPT)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("KT_", "DJANGO_", "LOG_"))},
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "SENTRY_DSN": f"http://publickey@127.0.0.1:{receiver.server_port}/1",
        "KT_AUTH_EMAIL": "ops@example.com",
        "KT_AUTH_TOKEN": TOKEN,
        "SECRET_KEY": SECRET_KEY,
        "ALLOWED_HOSTS": "testserver",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CACHE_PATH": str(tmp_path / "cache"),
        "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:9/0",
    }
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return b"\n".join(receiver.envelopes).decode(errors="replace")


def test_errors_of_the_web_and_the_worker_arrive_without_the_secrets(tmp_path, receiver):
    received = run(tmp_path, receiver)
    for secret in (TOKEN, SECRET_KEY, REDIS_PASSWORD):
        assert secret not in received
    assert "[Filtered]" in received
    # The view's exception, through the Django integration, with its request id.
    assert "the view failed with" in received
    assert '"request_id":"web-1"' in received.replace(" ", "")
    # The worker's, through its error line.
    assert "fetch 1: unexpected error" in received
    assert "is unreadable" in received


def test_without_sentry_dsn_nothing_is_set_up():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, sys; django.setup(); print('sentry_sdk' in sys.modules)",
        ],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k != "SENTRY_DSN"},
            "DJANGO_SETTINGS_MODULE": "config.settings.local",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "False", result.stderr
