"""The portal link of a query ("Open in Kentik"): asked once and kept, within
the deployment's budget and pause, a failure asked again only past ASK_AGAIN.

django-q2 runs tasks synchronously in tests: a captured commit runs the task,
which asks the simulator on loopback.
"""

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import time_machine

from imagecache.hashing import query_hash
from imagecache.models import KENTIK_LOCK, KentikCall, Lock, PortalLink
from imagecache.services import portal
from imagecache.simulator.methods import PORTAL_LINK
from imagecache.simulator.server import KentikSimulator
from tests.harness.data import NOW, unique_query

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clock() -> Iterator[Any]:
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture(autouse=True)
def _budget(settings: Any, sim: KentikSimulator) -> None:
    settings.KENTIK_RATE_LIMIT = 5


def query(name: str = "portal") -> dict[str, Any]:
    return unique_query(name, "png")


def links(sim: KentikSimulator) -> int:
    return int(sim.calls()["links"]["total"])


def ask(query: dict[str, Any], capture: Any) -> tuple[str | None, int]:
    """portal_link_get's answer, and how many tasks its commit ran."""
    with capture(execute=True) as callbacks:
        answer = portal.portal_link_get(query=query)
    return answer, len(callbacks)


def test_a_stored_link_is_answered_without_a_call(sim, django_capture_on_commit_callbacks):
    asked = query()
    link = "https://portal.kentik.com/portal/#Charts/shortUrl/stored"
    PortalLink.objects.create(
        query_hash=query_hash(portal.link_query(asked)), query_json="{}", url=link
    )

    assert ask(asked, django_capture_on_commit_callbacks) == (link, 0)
    # Every image type of a query has the one link.
    assert ask({**asked, "imageType": "svg"}, django_capture_on_commit_callbacks) == (link, 0)
    assert links(sim) == 0


def test_a_missing_link_is_asked_for_by_exactly_one_task(sim, django_capture_on_commit_callbacks):
    asked = query()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert portal.portal_link_get(query=asked) is None
        assert portal.portal_link_get(query=asked) is None

    assert len(callbacks) == 1
    assert links(sim) == 1
    sent = json.loads(sim.calls()["links"]["last_bodies"][-1])
    assert sent == portal.link_query(asked)
    assert "imageType" not in sent
    expected = PORTAL_LINK.format(query_hash(sent)[:32])
    assert ask(asked, django_capture_on_commit_callbacks) == (expected, 0)
    assert links(sim) == 1
    assert KentikCall.objects.count() == 1


def test_a_failed_ask_is_asked_again_only_past_ask_again(
    sim, clock, django_capture_on_commit_callbacks
):
    sim.add_rule(method="url", status=400, message="no such dimension")
    asked = query()

    assert ask(asked, django_capture_on_commit_callbacks) == (None, 1)
    stored = PortalLink.objects.get()
    assert (stored.url, stored.error_message) == ("", "Kentik answered 400: no such dimension")

    assert ask(asked, django_capture_on_commit_callbacks) == (None, 0)
    clock.shift(portal.ASK_AGAIN - timedelta(seconds=1))
    assert ask(asked, django_capture_on_commit_callbacks) == (None, 0)
    assert links(sim) == 1

    clock.shift(timedelta(seconds=2))
    assert ask(asked, django_capture_on_commit_callbacks) == (None, 1)
    assert ask(asked, django_capture_on_commit_callbacks) == (None, 0)
    assert links(sim) == 2


def test_an_answer_that_is_not_a_web_link_is_never_stored(sim, django_capture_on_commit_callbacks):
    sim.add_rule(method="url", body='"javascript:alert(1)"')

    assert ask(query(), django_capture_on_commit_callbacks) == (None, 1)

    stored = PortalLink.objects.get()
    assert stored.url == ""
    assert "not an http(s) URL" in stored.error_message


def test_a_full_budget_withholds_the_call(sim, settings, django_capture_on_commit_callbacks):
    settings.KENTIK_RATE_LIMIT = 2
    KentikCall.objects.bulk_create([KentikCall(at=NOW), KentikCall(at=NOW)])

    assert ask(query(), django_capture_on_commit_callbacks) == (None, 1)

    assert links(sim) == 0
    assert KentikCall.objects.count() == 2
    assert PortalLink.objects.get().error_message == "not asked: budget"


@pytest.mark.parametrize(
    ("paused_for", "why"),
    [(timedelta(seconds=60), "paused"), (timedelta(seconds=-1), "paused")],
    ids=["paused", "the probe is an image's"],
)
def test_a_pause_withholds_the_call(sim, django_capture_on_commit_callbacks, paused_for, why):
    Lock.objects.filter(name=KENTIK_LOCK).update(paused_until=NOW + paused_for)

    assert ask(query(), django_capture_on_commit_callbacks) == (None, 1)

    assert links(sim) == 0
    assert KentikCall.objects.count() == 0
    assert PortalLink.objects.get().error_message == f"not asked: {why}"


def test_a_slow_down_pauses_the_deployment(sim, django_capture_on_commit_callbacks):
    sim.add_rule(method="url", status=429, retry_after="20")

    ask(query(), django_capture_on_commit_callbacks)

    gate = Lock.objects.get(name=KENTIK_LOCK)
    assert gate.paused_until == NOW + timedelta(seconds=0.2)  # KENTIK_RETRY_AFTER_MAX
    assert gate.pause_reason == "429"
    assert KentikCall.objects.count() == 1


def test_another_failure_does_not_pause_the_images(sim, django_capture_on_commit_callbacks):
    sim.add_rule(method="url", status=503)

    ask(query(), django_capture_on_commit_callbacks)

    assert Lock.objects.get(name=KENTIK_LOCK).paused_until is None
    assert links(sim) == 1  # one attempt: the task does not retry
