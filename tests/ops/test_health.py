"""/healthz and /readyz, each check failing for a real reason: a directory that
takes no writes, a broker on a closed port, no cluster reporting."""

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.brokers.redis_broker import Redis
from django_q.conf import Conf
from django_q.signing import SignedPackage
from django_q.status import Stat, Status

from imagecache import leases
from imagecache.models import WorkerHeartbeat
from imagecache.services import workers
from tests.harness.service import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _own_cluster_reports(settings: Any, tmp_path: Path) -> None:
    """With the ORM broker, cluster reports go to files beside the database
    file: a `make run` in this checkout would write there too."""
    if "django_q" in settings.CACHES:
        settings.CACHES = {
            **settings.CACHES,
            "django_q": {**settings.CACHES["django_q"], "LOCATION": str(tmp_path / "q-stats")},
        }


@pytest.fixture
def cluster_reports() -> Iterator[Any]:
    """Save a cluster's report as django-q2's sentinel does every half second
    (django_q.status.Stat.save), with the status and workers given."""
    broker = get_broker()
    keys = []

    def report(status: str = Conf.IDLE, workers: int = 4, pid: int | None = None) -> None:
        stat = Status(pid=pid or os.getpid(), cluster_id=uuid.uuid4())
        stat.status = status
        stat.workers = list(range(1000, 1000 + workers))
        keys.append(Stat.get_key(stat.cluster_id))
        broker.set_stat(keys[-1], SignedPackage.dumps(stat, True), 30)

    yield report
    for key in keys:
        if isinstance(broker, Redis):
            broker.connection.delete(key)
        else:
            broker.cache.delete(key)


def readyz(client: Client, status: int) -> dict[str, Any]:
    response = client.get("/readyz")
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert "no-store" in response["Cache-Control"]
    body: dict[str, Any] = response.json()
    return body


def test_healthz_answers_without_any_query(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-store" in response["Cache-Control"]


def test_readyz_is_200_when_everything_answers(client, cluster_reports, settings):
    cluster_reports(workers=4)
    body = readyz(client, 200)
    assert body["status"] == "ok"
    checks = body["checks"]
    assert {name: check["status"] for name, check in checks.items()} == {
        "database": "ok",
        "storage": "ok",
        "broker": "ok",
        "worker": "ok",
    }
    assert checks["storage"]["location"] == str(settings.CACHE_PATH)
    assert (checks["worker"]["clusters"], checks["worker"]["workers"]) == (1, 4)
    assert checks["broker"]["queued"] == 0


def test_readyz_leaves_nothing_in_the_cache_directory(client, cluster_reports, settings):
    cluster_reports()
    readyz(client, 200)
    assert list(settings.CACHE_PATH.iterdir()) == []


def _under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "a-file").write_text("not a directory")
    return tmp_path / "a-file" / "cache"


# (A read-only directory would be the obvious case, but root, which runs CI
# here, writes in one anyway; a path under a file fails for everyone.)
@pytest.mark.parametrize("unwritable", [_under_a_file])
def test_readyz_is_503_naming_storage_when_the_cache_path_takes_no_writes(
    client, cluster_reports, settings, tmp_path, unwritable
):
    cluster_reports()
    location = unwritable(tmp_path)
    settings.CACHE_PATH = location
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "imagecache.files.storage.AtomicFileSystemStorage",
            "OPTIONS": {"location": str(location), "base_url": None},
        },
    }
    body = readyz(client, 503)
    assert body["failed"] == ["storage"]
    assert body["error"] == "Not ready: storage"
    assert body["checks"]["storage"]["status"] == "fail"
    assert body["checks"]["storage"]["error"].startswith(
        ("PermissionError", "NotADirectoryError", "FileExistsError")
    )
    assert body["checks"]["database"]["status"] == "ok"


def test_readyz_is_503_naming_storage_when_the_bucket_does_not_answer(
    client, cluster_reports, settings
):
    from botocore.config import Config

    cluster_reports()
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": "images",
                "endpoint_url": f"http://127.0.0.1:{free_port()}",
                "access_key": "test",
                "secret_key": "test",
                "region_name": "us-east-1",
                "client_config": Config(connect_timeout=1, retries={"total_max_attempts": 1}),
            },
        },
    }
    body = readyz(client, 503)
    assert body["failed"] == ["storage"]
    assert "EndpointConnectionError" in body["checks"]["storage"]["error"]


def test_readyz_is_503_naming_the_broker_when_it_does_not_answer(
    client, cluster_reports, monkeypatch
):
    cluster_reports()
    # django-q2 reads its settings once, into Conf: point the broker at Redis
    # on a port where nothing listens, as a wrong REDIS_URL would.
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "BROKER_CLASS", None)
    monkeypatch.setattr(Conf, "REDIS", f"redis://127.0.0.1:{free_port()}/0")
    body = readyz(client, 503)
    assert "broker" in body["failed"]
    assert body["checks"]["broker"]["error"].startswith("ConnectionError")
    assert "Connection refused" in body["checks"]["broker"]["error"]
    assert body["checks"]["database"]["status"] == "ok"


def test_readyz_answers_in_time_when_redis_accepts_and_never_replies(
    client, cluster_reports, monkeypatch, settings
):
    cluster_reports()
    settings.READYZ_TIMEOUT = 0.5
    with socket.socket() as silent:
        # A black hole: the kernel accepts connections, nothing ever answers.
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        monkeypatch.setattr(Conf, "ORM", None)
        monkeypatch.setattr(Conf, "BROKER_CLASS", None)
        monkeypatch.setattr(Conf, "REDIS", f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        body = readyz(client, 503)
    assert set(body["failed"]) == {"broker", "worker"}
    # The check's own deadline answered for it, not the silent broker.
    assert body["checks"]["broker"]["error"] == "no answer within 0.5 s"
    assert body["checks"]["database"]["status"] == "ok"


def heartbeat(name: str, seconds_ago: float) -> None:
    WorkerHeartbeat.objects.create(
        name=name, seen_at=timezone.now() - timedelta(seconds=seconds_ago)
    )


# The checks run in threads of their own, with their own connections: the
# heartbeats must be committed for them to see.
@pytest.mark.django_db(transaction=True)
def test_readyz_counts_a_worker_on_another_host_by_its_heartbeat(client, settings):
    # No cluster report reaches this host (the ORM broker's are per host).
    heartbeat("worker-host-b:4242", seconds_ago=settings.WORKER_HEARTBEAT_INTERVAL)
    worker = readyz(client, 200)["checks"]["worker"]
    assert (worker["heartbeats"], worker["clusters"]) == (1, 0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("beat", ["stale", "dead on this host"])
def test_readyz_does_not_count_a_heartbeat_stale_or_of_a_dead_process(client, settings, beat):
    if beat == "stale":
        heartbeat("worker-host-b:4242", seconds_ago=6 * settings.WORKER_HEARTBEAT_INTERVAL)
    else:
        dead = subprocess.Popen(["true"])
        dead.wait()
        heartbeat(f"{leases.HOST}:{dead.pid}", seconds_ago=0)
    assert readyz(client, 503)["failed"] == ["worker"]


def test_readyz_is_503_naming_the_worker_when_no_cluster_reported(client):
    body = readyz(client, 503)
    assert body["failed"] == ["worker"]
    assert body["error"] == "Not ready: worker"
    assert "no django-q2 cluster has reported" in body["checks"]["worker"]["error"]


def test_readyz_sees_a_live_cluster_listed_after_a_dead_one(client, cluster_reports):
    broker = get_broker()
    if type(broker).get_stats is not Broker.get_stats:
        pytest.skip("this broker lists the reports itself (Redis): no list to walk")
    # After a kill -9 and a restart: the list of reports names the dead
    # cluster and then the new one; the dead one's report has since expired.
    cluster_reports()
    cluster_reports()
    dead, _ = broker.cache.get(Conf.Q_STAT)
    broker.cache.delete(dead)

    assert readyz(client, 200)["checks"]["worker"]["clusters"] == 1


def test_readyz_does_not_count_the_last_report_of_a_cluster_killed_here(client, cluster_reports):
    killed = subprocess.Popen(["true"])
    killed.wait()
    cluster_reports(pid=killed.pid)
    assert readyz(client, 503)["failed"] == ["worker"]


def test_readyz_does_not_count_a_stopping_cluster(client, cluster_reports):
    cluster_reports(status=Conf.STOPPING)
    assert readyz(client, 503)["failed"] == ["worker"]
    cluster_reports(status=Conf.WORKING)
    assert readyz(client, 200)["checks"]["worker"]["clusters"] == 1


def test_health_endpoints_are_not_in_the_api_description(client):
    paths = client.get("/api/schema/?format=json").json()["paths"]
    assert not {"/healthz", "/readyz", "/metrics"} & set(paths)


def test_heartbeats_of_workers_long_gone_are_forgotten():
    heartbeat("worker-host-b:1", seconds_ago=7200)
    heartbeat("worker-host-b:2", seconds_ago=10)
    assert workers.workers_forget() == 1
    assert list(WorkerHeartbeat.objects.values_list("name", flat=True)) == ["worker-host-b:2"]
