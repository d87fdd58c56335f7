import time
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ

from imagecache import wake
from imagecache.brokers import CHANNEL, WakingORM

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_enqueue_wakes_the_pushers_and_its_task_is_handed_out_once(settings, tmp_path):
    settings.WAKE_DIR = tmp_path
    pusher = wake.Listener(tmp_path, CHANNEL)
    broker = WakingORM(list_key="test-waking")
    try:
        pk = broker.enqueue("the task")
        assert pusher.wait(10) == [b""]
        deadline = time.monotonic() + 10
        while not (taken := broker.dequeue()):
            assert time.monotonic() < deadline, "the task was never handed out"
        assert taken == [(pk, "the task")]
        # Handed out: locked until the broker's retry, not handed out again.
        assert not broker.dequeue()
    finally:
        pusher.close()
        broker.purge_queue()


def test_a_dequeue_takes_the_oldest_tasks_up_to_bulk_in_one_statement(settings, tmp_path):
    settings.WAKE_DIR = tmp_path
    broker = WakingORM(list_key="test-bulk")
    try:
        first, second, third = (broker.enqueue(f"task {n}") for n in range(3))
        with mock.patch.object(Conf, "BULK", 2), CaptureQueriesContext(connection) as queries:
            taken = broker.dequeue()
        assert taken == [(first, "task 0"), (second, "task 1")]
        assert len(queries.captured_queries) == 1
        assert broker.dequeue() == [(third, "task 2")]
        # Each locked until the broker's retry.
        locks = OrmQ.objects.filter(key="test-bulk").values_list("lock", flat=True)
        assert all(lock > timezone.now() + timedelta(seconds=Conf.RETRY - 60) for lock in locks)
    finally:
        broker.purge_queue()
