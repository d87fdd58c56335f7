"""Fetch tasks onto the queue when the broker is down: the client still gets
its id, and the fetch is enqueued again once the broker answers. The brokers
are real: Redis on a port where nothing listens, then django-q2's ORM broker."""

import json
import socket
from collections.abc import Iterator

import pytest
import time_machine
from django.test import Client
from django_q.conf import Conf
from django_q.models import OrmQ

from imagecache.models import Fetch, FetchState
from imagecache.ops import metrics
from imagecache.services import queue
from tests.harness.data import NOW, QUERY
from tests.harness.service import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def tasks_to_redis(monkeypatch, port: int) -> Iterator[None]:
    """Tasks go to a real Redis broker at `port` (not run in the test's process)."""
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "BROKER_CLASS", None)
    monkeypatch.setattr(Conf, "REDIS", f"redis://127.0.0.1:{port}/0")
    queue.broker.cache_clear()
    yield
    queue.broker.cache_clear()


@pytest.fixture
def broker_down(monkeypatch) -> Iterator[None]:
    """The broker is down: nothing listens on its port."""
    yield from tasks_to_redis(monkeypatch, free_port())


@pytest.fixture
def broker_silent(monkeypatch) -> Iterator[None]:
    """The broker accepts connections and never answers (a hung server, or a
    firewall that drops its replies)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        yield from tasks_to_redis(monkeypatch, silent.getsockname()[1])


def broker_back(monkeypatch) -> None:
    monkeypatch.setattr(Conf, "REDIS", None)
    monkeypatch.setattr(Conf, "ORM", "default")
    queue.broker.cache_clear()


def test_post_while_the_broker_is_down_gives_the_id_and_enqueues_on_its_return(
    client: Client, broker_down, monkeypatch, settings
):
    settings.ENQUEUE_RETRY_INTERVAL = 3600  # this test drives the retry itself
    failures = metrics.ENQUEUE_FAILURES._value.get()

    response = client.post("/requests", {"api_query": QUERY}, content_type="application/json")

    assert response.status_code == 200, response.content
    entry_id = json.loads(response.content)["id"]
    fetch = Fetch.objects.get(entries__pk=entry_id)
    assert (fetch.state, fetch.enqueued_at) == (FetchState.PENDING, None)
    assert metrics.ENQUEUE_FAILURES._value.get() == failures + 1
    # Still down: nothing is lost, the fetch stays marked.
    assert queue.enqueue_retry() is True
    assert Fetch.objects.get(pk=fetch.pk).enqueued_at is None

    broker_back(monkeypatch)
    assert queue.enqueue_retry() is False

    assert Fetch.objects.get(pk=fetch.pk).enqueued_at is not None
    assert OrmQ.objects.count() == 1
    assert OrmQ.objects.get().task["args"] == (fetch.pk,)


@time_machine.travel(NOW, tick=False)
def test_post_while_redis_never_answers_gives_the_id_and_marks_the_fetch(
    client: Client, broker_silent, settings
):
    # redis-py's own socket timeout (5 s) bounds the hold: a POST is not held
    # until gunicorn kills its worker, and the fetch is left for the retry.
    settings.ENQUEUE_RETRY_INTERVAL = 3600
    response = client.post("/requests", {"api_query": QUERY}, content_type="application/json")

    assert response.status_code == 200, response.content
    fetch = Fetch.objects.get(entries__pk=json.loads(response.content)["id"])
    assert (fetch.state, fetch.enqueued_at) == (FetchState.PENDING, None)
