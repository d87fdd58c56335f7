"""The admin: every page fetched with `admin_client` (a superuser), every
action posted and its effect checked, and who may see what.

Images are real files: `entry_create` then `fetching.fetch_run`,
with Kentik patched at its seam (`fetch_chart`).
"""

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from imagecache import kentik
from imagecache.admin.display import duration, time_left
from imagecache.ids import entry_id_parts
from imagecache.models import Entry, Fetch, FetchState
from imagecache.services import claims, fetching
from imagecache.services.entries import entry_create
from tests.harness.data import PNG, QUERY

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4">'
    b'<rect width="4" height="4"/></svg>'
)
ENTRIES = reverse("admin:imagecache_entry_changelist")
FETCHES = reverse("admin:imagecache_fetch_changelist")


def query(name: str, image_type: str = "png") -> dict[str, Any]:
    return {**QUERY, "imageType": image_type, "title": name}


def ready_entry(api_query: dict[str, Any] | None = None, ttl: int = 600) -> Entry:
    """An entry whose image is stored (Kentik patched by `fetch_chart`)."""
    entry = entry_create(api_query=api_query or query("ready"), ttl=ttl)
    fetching.fetch_run(fetch_id=entry.fetch_id)
    return Entry.objects.select_related("fetch").get(pk=entry.pk)


def failed_entry(fetch_chart: Any, status: int = 429, message: str = "Too many requests") -> Entry:
    fetch_chart.side_effect = kentik.KentikError(status, message)
    entry = ready_entry(query("failed"))
    fetch_chart.side_effect = None
    return entry


def change_url(entry: Entry) -> str:
    return reverse("admin:imagecache_entry_change", args=[quote(entry.pk)])


def image_url(entry: Entry) -> str:
    return reverse("admin:imagecache_entry_image", args=[quote(entry.pk)])


def body(response: Any) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return bytes(response.content)


def action(client: Client, name: str, entries: list[Entry], **extra: Any) -> Any:
    """Post an action on the entries changelist, as the admin's form does."""
    data = {"action": name, "_selected_action": [entry.pk for entry in entries]}
    return client.post(ENTRIES, data, follow=True, **extra)


def shown_ids(response: Any) -> set[str]:
    """The entry ids listed on a changelist page (its action checkboxes)."""
    return set(re.findall(r'name="_selected_action" value="([^"]+)"', response.content.decode()))


@pytest.fixture
def cache(fetch_chart: Any) -> dict[str, Entry]:
    """One entry of each kind: ready PNG, ready SVG, failed, pending, expired."""
    entries = {"ready": ready_entry()}
    fetch_chart.return_value = kentik.Chart(media_type="image/svg+xml", data=SVG)
    entries["svg"] = ready_entry(query("svg", "svg"))
    fetch_chart.return_value = kentik.Chart(media_type="image/png", data=PNG)
    entries["failed"] = failed_entry(fetch_chart)
    entries["pending"] = entry_create(api_query=query("pending"))
    with time_machine.travel(timedelta(hours=-1)):
        entries["expired"] = ready_entry(query("expired"), ttl=60)
    return entries


# --- Pages ---------------------------------------------------------------------


def test_admin_index_lists_the_cache_and_the_task_queue(admin_client):
    response = admin_client.get(reverse("admin:index"))
    assert response.status_code == 200
    content = response.content.decode()
    assert "Kentik Image Cache" in content
    assert ENTRIES in content and FETCHES in content
    assert reverse("admin:django_q_failure_changelist") in content


def test_entries_changelist_shows_the_cache_at_a_glance(admin_client, cache):
    response = admin_client.get(ENTRIES)
    assert response.status_code == 200
    stats = response.context["cache_stats"]
    assert stats.entries_by_state == {"pending": 1, "fetching": 0, "ready": 2, "failed": 1}
    assert stats.expired_entries == 1
    assert stats.stored_bytes == len(PNG) * 2 + len(SVG)
    assert (stats.kentik_calls_last_hour, stats.kentik_failures_last_hour) == (3, 1)
    content = response.content.decode()
    assert "The cache at a glance" in content
    assert "Kentik calls in the last hour" in content
    assert "Oldest pending fetch" in content
    assert "?fetch__state__exact=ready&amp;expired=no" in content


def test_changelist_links_to_the_task_queue_admin(admin_client):
    response = admin_client.get(ENTRIES)
    links = dict(response.context["task_queue_links"])
    assert set(links) >= {"tasks", "failures", "schedules"}
    assert "Task queue:" in response.content.decode()
    for url in [*links.values(), response.context["task_queue_url"]]:
        assert url in response.content.decode()
        assert admin_client.get(url).status_code == 200


def test_entries_changelist_lists_every_column(admin_client, cache):
    response = admin_client.get(ENTRIES)
    content = response.content.decode()
    assert shown_ids(response) == {entry.pk for entry in cache.values()}
    assert cache["ready"].pk[:12] in content
    assert "image/png" in content and "image/svg+xml" in content
    assert "expired" in content
    assert re.search(r"in (9|10) min", content)  # the ready entry's time left
    assert '<span title="Too many requests">429</span>' in content


def test_thumbnails_point_at_the_admin_image_view_for_ready_images(admin_client, cache):
    content = admin_client.get(ENTRIES).content.decode()
    for name in ("ready", "svg", "expired"):
        assert f'<img src="{image_url(cache[name])}"' in content
    for name in ("failed", "pending"):
        assert image_url(cache[name]) not in content
    assert "max-height: 60px" in content
    assert isinstance(default_storage, FileSystemStorage)
    assert str(default_storage.location) not in content  # CACHE_PATH is never shown


def test_changelist_queries_do_not_grow_with_entries_nor_load_queries(admin_client, fetch_chart):
    ready_entry(query("first"))
    with CaptureQueriesContext(connection) as one:
        admin_client.get(ENTRIES)
    for n in range(5):
        ready_entry(query(f"more-{n}"))
    with CaptureQueriesContext(connection) as six:
        response = admin_client.get(ENTRIES)
    assert len(shown_ids(response)) == 6
    assert len(six.captured_queries) == len(one.captured_queries)
    # Only the beginning of each query, for its label (admin/base.py, LABEL_SOURCE_MAX).
    for captured in six.captured_queries:
        read = re.sub(r"SUBSTR(ING)?\([^,]*query_json\", 1, \d+\)", "", captured["sql"])
        assert "query_json" not in read


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"fetch__state__exact": "ready"}, {"ready", "svg", "expired"}),
        ({"fetch__state__exact": "failed"}, {"failed"}),
        ({"fetch__state__exact": "pending"}, {"pending"}),
        ({"media_type": "image/svg+xml"}, {"svg"}),
        ({"media_type": "image/png"}, {"ready", "expired"}),
        ({"expired": "yes"}, {"expired"}),
        ({"expired": "no"}, {"ready", "svg", "failed", "pending"}),
        ({"fetch__state__exact": "ready", "expired": "no"}, {"ready", "svg"}),
    ],
)
def test_entries_filters(admin_client, cache, params, expected):
    response = admin_client.get(ENTRIES, params)
    assert response.status_code == 200
    assert shown_ids(response) == {cache[name].pk for name in expected}


def test_entries_filter_by_fetch(admin_client, cache):
    response = admin_client.get(ENTRIES, {"fetch__id__exact": cache["svg"].fetch_id})
    assert shown_ids(response) == {cache["svg"].pk}


def test_search_entries_by_id_and_by_query_hash(admin_client, cache):
    entry = cache["svg"]
    by_id = admin_client.get(ENTRIES, {"q": entry.pk})
    assert shown_ids(by_id) == {entry.pk}
    expiry = entry_id_parts(entry.pk)[1]
    by_expiry = shown_ids(admin_client.get(ENTRIES, {"q": expiry}))
    assert entry.pk in by_expiry
    assert {entry_id_parts(shown)[1] for shown in by_expiry} == {expiry}
    by_hash = admin_client.get(ENTRIES, {"q": entry.fetch.query_hash[:16]})
    assert shown_ids(by_hash) == {entry.pk}
    assert shown_ids(admin_client.get(ENTRIES, {"q": "f" * 64})) == set()


def test_entry_change_page_shows_everything_read_only(admin_client, cache):
    entry = cache["ready"]
    response = admin_client.get(change_url(entry))
    assert response.status_code == 200
    content = response.content.decode()
    assert f'<img src="{image_url(entry)}"' in content
    assert reverse("admin:imagecache_fetch_change", args=[entry.fetch_id]) in content
    # The query, pretty-printed and escaped.
    assert "<pre" in content and "&quot;imageType&quot;: &quot;png&quot;" in content
    assert "\n  &quot;queries&quot;: [" in content
    assert 'name="_save"' not in content
    assert not response.context["adminform"].form.fields  # no field is editable


def test_entry_change_page_escapes_the_query(admin_client, fetch_chart):
    entry = ready_entry(query("<script>alert(1)</script>"))
    content = admin_client.get(change_url(entry)).content.decode()
    assert "<script>alert(1)</script>" not in content
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in content


def test_failed_entry_change_page_shows_kentiks_status_and_message(admin_client, fetch_chart):
    entry = failed_entry(fetch_chart, 400, "queries must be a non-empty list")
    content = admin_client.get(change_url(entry)).content.decode()
    assert "queries must be a non-empty list" in content
    assert ">400</span>" in content
    assert image_url(entry) not in content


def test_entries_cannot_be_added_changed_or_deleted_by_hand(admin_client, cache):
    assert admin_client.get(reverse("admin:imagecache_entry_add")).status_code == 403
    assert admin_client.get(reverse("admin:imagecache_fetch_add")).status_code == 403
    content = admin_client.get(ENTRIES).content.decode()
    assert reverse("admin:imagecache_entry_add") not in content
    delete = reverse("admin:imagecache_entry_delete", args=[quote(cache["ready"].pk)])
    assert admin_client.get(delete).status_code == 403
    assert admin_client.post(change_url(cache["ready"]), {}).status_code == 403
    assert 'value="delete_selected"' not in content


# --- The image views -------------------------------------------------------------


def test_image_view_streams_the_stored_file_with_its_type(admin_client, cache):
    response = admin_client.get(image_url(cache["ready"]))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert body(response) == PNG
    assert response["X-Content-Type-Options"] == "nosniff"


def test_svg_is_served_sandboxed(admin_client, cache):
    response = admin_client.get(image_url(cache["svg"]))
    assert response["Content-Type"] == "image/svg+xml"
    assert body(response) == SVG
    assert "sandbox" in response["Content-Security-Policy"]


def test_image_view_answers_404_without_an_image(admin_client, cache):
    for name in ("pending", "failed"):
        assert admin_client.get(image_url(cache[name])).status_code == 404
    missing = reverse("admin:imagecache_entry_image", args=[quote("nope_1")])
    assert admin_client.get(missing).status_code == 404
    default_storage.delete(cache["ready"].fetch.file_name)
    assert admin_client.get(image_url(cache["ready"])).status_code == 404


def test_image_view_is_for_staff_only(client, cache, django_user_model):
    url = image_url(cache["ready"])
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    user = django_user_model.objects.create_user("reader", password="pw")
    client.force_login(user)
    not_staff = client.get(url)
    assert not_staff.status_code == 302 and "/admin/login/" in not_staff["Location"]
    user.is_staff = True
    user.save()
    # Staff without the permission to view entries.
    assert client.get(url).status_code == 404


def test_fetch_pages_and_image(admin_client, cache):
    response = admin_client.get(FETCHES)
    assert response.status_code == 200
    content = response.content.decode()
    assert "Too many requests" in content
    assert cache["ready"].fetch.query_hash[:12] in content
    for params in ({"state__exact": "failed"}, {"media_type": "image/svg+xml"}):
        assert admin_client.get(FETCHES, params).status_code == 200
    search = admin_client.get(FETCHES, {"q": cache["svg"].fetch.query_hash[:10]})
    assert search.context["cl"].result_count == 1
    for entry in cache.values():
        page = admin_client.get(reverse("admin:imagecache_fetch_change", args=[entry.fetch_id]))
        assert page.status_code == 200
        assert "&quot;imageType&quot;" in page.content.decode()
    fetch_image = reverse("admin:imagecache_fetch_image", args=[cache["ready"].fetch_id])
    image = admin_client.get(fetch_image)
    assert (image.status_code, body(image)) == (200, PNG)
    fetch_page = reverse("admin:imagecache_fetch_change", args=[cache["ready"].fetch_id])
    page = admin_client.get(fetch_page)
    assert f'<img src="{fetch_image}"' in page.content.decode()
    assert f"?fetch__id__exact={cache['ready'].fetch_id}" in page.content.decode()


def test_fetch_list_shows_state_attempts_and_lease(admin_client, fetch_chart):
    entry = entry_create(api_query=query("held"))
    claims.fetch_claim(fetch_id=entry.fetch_id)
    fetch = Fetch.objects.get(pk=entry.fetch_id)
    content = admin_client.get(FETCHES).content.decode()
    assert fetch.lease_owner in content
    assert "Fetching" in content
    assert admin_client.get(FETCHES, {"state__exact": "fetching"}).context["cl"].result_count == 1


def test_admin_static_files_are_served(client):
    # The test profile serves them as `make run` does: whitenoise and the finders.
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"body" in body(response)


# --- Actions -------------------------------------------------------------------------


def test_purge_action_deletes_entry_fetch_and_file(
    admin_client, cache, django_capture_on_commit_callbacks
):
    entry = cache["ready"]
    with django_capture_on_commit_callbacks(execute=True):
        response = action(admin_client, "purge", [entry])
    assert response.status_code == 200
    assert "Purged 1 entry, 1 fetch and 1 file" in response.content.decode()
    assert not Entry.objects.filter(pk=entry.pk).exists()
    assert not Fetch.objects.filter(pk=entry.fetch_id).exists()
    assert not default_storage.exists(entry.fetch.file_name)
    assert admin_client.get(image_url(entry)).status_code == 404


def test_refetch_action_fetches_the_image_again(
    admin_client, cache, fetch_chart, django_capture_on_commit_callbacks
):
    entry = cache["ready"]
    fetch_chart.return_value = kentik.Chart(media_type="image/png", data=PNG + b"again")
    # django-q2 runs tasks synchronously in tests: the commit runs the fetch.
    with django_capture_on_commit_callbacks(execute=True):
        response = action(admin_client, "refetch", [entry, cache["expired"]])
    content = response.content.decode()
    assert "Refetching 1 entry: 1 new fetch enqueued" in content
    assert "Skipped 1 expired entry." in content
    refetched = Entry.objects.select_related("fetch").get(pk=entry.pk)
    assert refetched.fetch_id != entry.fetch_id
    assert refetched.fetch.state == FetchState.READY
    assert body(admin_client.get(image_url(entry))) == PNG + b"again"
    assert not default_storage.exists(entry.fetch.file_name)


def test_extend_actions_push_the_expiry_and_keep_the_id(admin_client, cache):
    entry = cache["ready"]
    response = action(admin_client, "extend_hour", [entry, cache["expired"]])
    content = response.content.decode()
    assert "Extended 1 entry by 1 hour" in content
    assert "Skipped 1 expired entry." in content
    extended = Entry.objects.get(pk=entry.pk)
    assert extended.expires_at == entry.expires_at + timedelta(hours=1)
    action(admin_client, "extend_day", [entry])
    twice = Entry.objects.get(pk=entry.pk)
    assert twice.expires_at == entry.expires_at + timedelta(days=1, hours=1)
    page = admin_client.get(change_url(entry)).content.decode()
    assert "Extended: the number in the id" in page


def test_actions_need_the_model_permissions(client, cache, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(
        Permission.objects.get(codename="view_entry"), Permission.objects.get(codename="view_fetch")
    )
    client.force_login(viewer)
    response = client.get(ENTRIES)
    assert response.status_code == 200
    assert 'name="action"' not in response.content.decode()
    assert client.get(image_url(cache["ready"])).status_code == 200
    action(client, "purge", [cache["ready"]])
    assert Entry.objects.filter(pk=cache["ready"].pk).exists()


def test_a_superuser_is_created_without_a_prompt(monkeypatch):
    from django.core.management import call_command

    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "ops")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-pass-phrase")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "ops@example.com")
    call_command("createsuperuser", "--noinput", verbosity=0)
    user = User.objects.get(username="ops")
    assert user.is_superuser and user.check_password("a-long-pass-phrase")
    client = Client()
    assert client.login(username="ops", password="a-long-pass-phrase")
    assert client.get(ENTRIES).status_code == 200


# --- Helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds, text",
    [
        (-5, "expired"),
        (0, "expired"),
        (45, "in 45 s"),
        (4 * 60 + 59, "in 4 min"),
        (3 * 3600 + 5, "in 3 h"),
        (3 * 86400, "in 3 days"),
    ],
)
def test_time_left(seconds, text):
    assert time_left(NOW + timedelta(seconds=seconds), NOW) == text


def test_duration():
    assert duration(timedelta(seconds=42)) == "42 s"
    assert duration(timedelta(minutes=3, seconds=5)) == "3 min 5 s"
    assert duration(timedelta(hours=2, minutes=10)) == "2 h 10 min"
    assert duration(timedelta(days=3, hours=4)) == "3 days 4 h"
