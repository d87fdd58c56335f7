import time

import pytest

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
