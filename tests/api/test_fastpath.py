"""Ready images answered before Django runs, and falling through whenever the
fast path cannot be sure."""

import json
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import time_machine
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import RequestFactory

from imagecache.api.fastpath import FastImages
from imagecache.files import links
from imagecache.models import Entry, Fetch
from imagecache.services import fetching, housekeeping, operators
from imagecache.services.entries import entry_create
from tests.harness.data import PNG, QUERY

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


class CountingDjango:
    """The real Django application, counting the requests that reach it."""

    def __init__(self) -> None:
        self.app = WSGIHandler()
        self.calls = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        self.calls += 1
        return self.app(environ, start_response)


@pytest.fixture
def django_app() -> Iterator[CountingDjango]:
    # As Django's test client does: a request must not close the test's
    # connection, whose transaction the test runs in (PostgreSQL would).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield CountingDjango()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def fast(django_app: CountingDjango) -> FastImages:
    return FastImages(django_app)


def call(app: Any, path: str, method: str = "GET", **headers: str) -> tuple[int, dict, bytes]:
    # WSGI environ keys, which mypy would match to generic()'s named parameters.
    extra: dict[str, Any] = headers
    environ = RequestFactory().generic(method, path, **extra).environ
    answer: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], *_: Any) -> None:
        answer["status"] = int(status.split()[0])
        answer["headers"] = dict(response_headers)

    result: Iterable[bytes] = app(environ, start_response)
    body = b"".join(result)
    if hasattr(result, "close"):
        result.close()
    return answer["status"], answer["headers"], body


@pytest.fixture
def ready(fetch_chart, django_capture_on_commit_callbacks) -> Callable[..., str]:
    def make(query: dict[str, Any] = QUERY, ttl: int = 300) -> str:
        with django_capture_on_commit_callbacks(execute=True):
            entry = entry_create(api_query=query, ttl=ttl)
        fetching.fetch_run(fetch_id=entry.fetch_id)
        return entry.id

    return make


@time_machine.travel(NOW, tick=False)
def test_ready_image_is_answered_without_django_and_as_django_would(fast, django_app, ready):
    entry_id = ready()
    # Both repeat the proxy's request id.
    proxy = {"HTTP_X_REQUEST_ID": "proxy-1"}
    status, headers, body = call(fast, f"/image/{entry_id}", **proxy)
    assert (status, body, django_app.calls) == (200, PNG, 0)
    _, django_headers, django_body = call(django_app, f"/image/{entry_id}", **proxy)
    assert django_body == body
    # Every header alike, the security headers included; DRF adds `Allow` to
    # every answer of its views, which an image does not need.
    django_headers.pop("Allow")
    assert headers == django_headers
    # Later answers reuse the headers worked out once; only the max-age moves.
    with time_machine.travel(NOW.timestamp() + 100, tick=False):
        _, later, _ = call(fast, f"/image/{entry_id}")
    assert later["Cache-Control"] == "public, max-age=200, immutable"
    # Without the proxy's, an id of its own.
    assert re.fullmatch(r"[0-9a-f]{32}", later["X-Request-ID"])
    moving = ("Cache-Control", "X-Request-ID")
    assert {k: v for k, v in later.items() if k not in moving} == {
        k: v for k, v in headers.items() if k not in moving
    }


def test_head_has_the_headers_and_no_body(fast, django_app, ready):
    status, headers, body = call(fast, f"/image/{ready()}", method="HEAD")
    assert (status, headers["Content-Length"], body, django_app.calls) == (
        200,
        str(len(PNG)),
        b"",
        0,
    )


@pytest.mark.parametrize(
    "remove",
    [
        lambda entry_id: operators.entry_purge(entry_ids=[entry_id]),
        lambda entry_id: housekeeping.cache_evict(incoming=10**9),
    ],
    ids=["purge", "evict"],
)
def test_purged_or_evicted_image_is_404_at_once(fast, django_app, ready, settings, remove):
    entry_id = ready()
    assert call(fast, f"/image/{entry_id}")[0] == 200
    settings.CACHE_MAX_BYTES = 1
    remove(entry_id)
    status, _, body = call(fast, f"/image/{entry_id}")
    assert (status, django_app.calls) == (404, 1)
    assert b'"error"' in body


def test_pruned_image_is_404_at_once(fast, django_app, ready):
    with time_machine.travel(NOW, tick=False):
        entry_id = ready(ttl=10)
    with time_machine.travel(NOW.timestamp() + 11, tick=False):
        housekeeping.cache_prune()
    assert not (links.directory() / entry_id).exists()
    assert call(fast, f"/image/{entry_id}")[0] == 404


def test_prune_removes_the_links_of_the_entries_it_deletes(fast, django_app, ready):
    """The batch removes them itself: an entry whose expiry an operator moved
    earlier keeps a later expiry in its id, which the fast path would serve
    until the sweep for stray links at the end of the prune."""
    with time_machine.travel(NOW, tick=False):
        entry_id = ready(ttl=1000)
        Entry.objects.filter(pk=entry_id).update(expires_at=NOW)
        assert housekeeping._expired_entries_delete(now=NOW)[0] == 1
        assert not (links.directory() / entry_id).is_symlink()
        assert call(fast, f"/image/{entry_id}")[0] == 404


def test_refetched_entry_leaves_the_fast_path(fast, django_app, ready, settings):
    settings.ENTRY_WAIT_TIMEOUT = 0
    entry_id = ready()
    operators.entry_refetch(entry_ids=[entry_id])
    assert call(fast, f"/image/{entry_id}")[0] == 500  # pending again, no wait
    assert django_app.calls == 1


def test_entry_taking_a_new_fetch_within_its_second_leaves_the_fast_path(
    fast, django_app, ready, settings
):
    settings.REUSE_MAX_AGE = 0
    settings.ENTRY_WAIT_TIMEOUT = 0
    settings.STALE_IF_ERROR = 0  # else the first image would answer, stale
    with time_machine.travel(NOW, tick=False):
        entry_id = ready()
        assert call(fast, f"/image/{entry_id}")[0] == 200
        # The same request again in the same second, with reuse off: a new fetch.
        assert entry_create(api_query=QUERY, ttl=300).id == entry_id
        assert call(fast, f"/image/{entry_id}")[0] == 500  # pending, no wait
    assert django_app.calls == 1


def test_expired_id_falls_through_to_django(fast, django_app, ready):
    with time_machine.travel(NOW, tick=False):
        entry_id = ready(ttl=10)
    with time_machine.travel(NOW.timestamp() + 11, tick=False):
        assert call(fast, f"/image/{entry_id}")[0] == 404
    assert django_app.calls == 1


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", ""])
def test_host_that_allowed_hosts_refuses_is_djangos_400(fast, django_app, ready, host):
    entry_id = ready()
    status, _, body = call(fast, f"/image/{entry_id}", HTTP_HOST=host)
    assert (status, django_app.calls) == (400, 1)
    assert json.loads(body) == {"error": "Bad request.", "status": 400}
    assert call(django_app, f"/image/{entry_id}", HTTP_HOST=host)[2] == body


def test_forwarded_host_is_checked_when_it_is_trusted(fast, django_app, ready, settings):
    entry_id = ready()
    settings.USE_X_FORWARDED_HOST = True
    fast = FastImages(django_app)
    assert call(fast, f"/image/{entry_id}", HTTP_X_FORWARDED_HOST="evil.example")[0] == 400
    assert call(fast, f"/image/{entry_id}", HTTP_X_FORWARDED_HOST="localhost")[0] == 200
    assert django_app.calls == 1


def test_conditional_and_query_requests_go_to_django(fast, django_app, ready):
    entry_id = ready()
    _, headers, _ = call(fast, f"/image/{entry_id}")
    assert call(fast, f"/image/{entry_id}", HTTP_IF_NONE_MATCH=headers["ETag"])[0] == 304
    assert call(fast, f"/image/{entry_id}?wait=0")[0] == 200
    assert django_app.calls == 2


def test_entry_joining_a_ready_fetch_is_linked_at_once(fast, django_app, ready, settings):
    settings.REUSE_MAX_AGE = 60
    first = ready(ttl=10)
    second = ready(ttl=20)
    assert Fetch.objects.count() == 1
    for entry_id in (first, second):
        assert call(fast, f"/image/{entry_id}")[0] == 200
    assert django_app.calls == 0


def test_reads_are_recorded_for_eviction(fast, ready):
    entry_id = ready()
    Fetch.objects.update(last_read_at=None)
    call(fast, f"/image/{entry_id}")
    fast.marks.flush()
    assert Fetch.objects.get().last_read_at is not None


def test_fast_path_is_off_when_nginx_sends_the_files(django_app, ready, settings):
    settings.X_ACCEL_REDIRECT_PREFIX = "/protected-images/"
    fast = FastImages(django_app)
    status, headers, _ = call(fast, f"/image/{ready()}")
    assert status == 200 and "X-Accel-Redirect" in headers
    assert django_app.calls == 1


def test_prune_removes_links_of_entries_gone_behind_djangos_back(fast, ready):
    entry_id = ready()
    Entry.objects.filter(pk=entry_id)._raw_delete(using="default")
    assert (links.directory() / entry_id).is_symlink()
    housekeeping.cache_prune()
    assert not (links.directory() / entry_id).is_symlink()
    assert call(fast, f"/image/{entry_id}")[0] == 404


@time_machine.travel(NOW, tick=False)
def test_security_headers_follow_the_settings_as_djangos_do(django_app, settings, ready):
    settings.SECURE_REFERRER_POLICY = "no-referrer"
    settings.X_FRAME_OPTIONS = "SAMEORIGIN"
    # Both read the settings as they start: a Django started after the change.
    django_app = CountingDjango()
    entry_id = ready()
    _, headers, _ = call(FastImages(django_app), f"/image/{entry_id}")
    _, django_headers, _ = call(django_app, f"/image/{entry_id}")
    for name in ("Referrer-Policy", "X-Frame-Options"):
        assert headers[name] == django_headers[name], name
    assert (headers["Referrer-Policy"], headers["X-Frame-Options"]) == ("no-referrer", "SAMEORIGIN")


@time_machine.travel(NOW, tick=False)
def test_plain_http_goes_to_django_which_redirects_it_when_told_to(django_app, settings, ready):
    settings.SECURE_SSL_REDIRECT = True
    # Both read the settings as they start: a Django started after the change.
    django_app = CountingDjango()
    entry_id = ready()
    fast = FastImages(django_app)
    status, headers, _ = call(fast, f"/image/{entry_id}")
    assert (status, headers["Location"]) == (301, f"https://testserver/image/{entry_id}")
    assert django_app.calls == 1


@time_machine.travel(NOW, tick=False)
def test_an_https_answer_has_djangos_hsts(django_app, settings, ready):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    django_app = CountingDjango()
    entry_id = ready()
    fast = FastImages(django_app)
    status, headers, _ = call(fast, f"/image/{entry_id}", HTTP_X_FORWARDED_PROTO="https")
    assert (status, django_app.calls) == (200, 0)
    _, django_headers, _ = call(django_app, f"/image/{entry_id}", HTTP_X_FORWARDED_PROTO="https")
    assert headers["Strict-Transport-Security"] == django_headers["Strict-Transport-Security"]
    assert headers["Strict-Transport-Security"] == "max-age=3600"
