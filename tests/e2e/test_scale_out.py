"""Two nodes (each a gunicorn and a qcluster, on ports of their own) sharing
one PostgreSQL, one Redis and one image store: a shared directory, or S3
(moto's server, started by the test)."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from imagecache.hashing import query_hash
from imagecache.simulator.server import KentikSimulator
from tests import backends
from tests.harness.data import unique_query
from tests.harness.service import Service, free_port, wait_for

pytestmark = pytest.mark.e2e

MOTO = Path(sys.executable).with_name("moto_server")


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A local S3-compatible server and a bucket; the settings that use it."""
    if not MOTO.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{MOTO} is missing: `make test` installs it")
        pytest.skip(f"{MOTO} is missing: run `make test` once")
    import boto3

    port = free_port()
    server = subprocess.Popen(
        [str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    settings = {
        "STORAGE_BACKEND": "s3",
        "AWS_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_S3_REGION_NAME": "us-east-1",
        "AWS_STORAGE_BUCKET_NAME": "kentik-images",
    }
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(Bucket=settings["AWS_STORAGE_BUCKET_NAME"])
            break
        except Exception:
            if time.monotonic() > deadline:
                server.kill()
                raise
            time.sleep(0.2)
    yield settings
    server.terminate()
    server.wait(10)


def stored_objects(s3_settings: dict[str, str]) -> list[str]:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_settings["AWS_S3_ENDPOINT_URL"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    listing = client.list_objects_v2(Bucket=s3_settings["AWS_STORAGE_BUCKET_NAME"])
    return [item["Key"] for item in listing.get("Contents", [])]


@pytest.fixture(params=["shared-directory", "s3"])
def nodes(request, simulator: KentikSimulator, tmp_path: Path) -> Iterator[tuple[Service, Service]]:
    backends.require_production_profile()
    database = backends.create_database()
    common: dict[str, object] = {
        "DATABASE_URL": database,
        "REDIS_URL": os.environ.get("REDIS_URL", backends.REDIS_URL),
        "Q_NAME": backends.redis_namespace(),
        "CACHE_PATH": tmp_path / "shared-cache",
        "KENTIK_API_TIMEOUT": 10,
        "FETCH_LEASE": 3,
    }
    if request.param == "s3":
        common |= request.getfixturevalue("s3")
    a = Service(tmp_path / "a", simulator.url, NODE_NAME="node-a", **common).start()
    b = Service(tmp_path / "b", simulator.url, NODE_NAME="node-b", **common).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()
        backends.drop_database(database)


def test_post_on_one_node_and_wait_on_the_other(nodes, simulator):
    a, b = nodes
    simulator.add_rule(match="across-nodes", delay=1)
    entry_id = a.post(unique_query("across-nodes"))
    on_b = b.get_image(entry_id)
    assert on_b.status_code == 200
    assert on_b.headers["Content-Type"] == "image/png"
    assert on_b.content == a.get_image(entry_id).content


def test_identical_posts_over_both_nodes_make_one_kentik_call(nodes, simulator):
    a, b = nodes
    api_query = unique_query("coalesced-across-nodes")
    simulator.add_rule(match="coalesced-across-nodes", delay=0.5)
    with ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(lambda n: (a, b)[n % 2].post(api_query), range(20)))
        statuses = [
            r.status_code for r in pool.map(lambda n: (b, a)[n % 2].get_image(ids[n]), range(20))
        ]
    assert statuses == [200] * 20
    assert simulator.calls()["by_query"] == {query_hash(api_query): 1}


def test_a_fetch_of_a_killed_node_is_taken_over_by_the_other(nodes, simulator):
    a, b = nodes
    api_query = unique_query("node-dies")
    simulator.add_rule(match="node-dies", delay=3, times=1)
    # Only node A's workers may take the task: B's cluster is not running yet.
    b.signal_all(signal.SIGSTOP)
    try:
        # B's pusher may be blocked in a BLPOP (1 s timeout), and Redis would
        # hand the task to it, stopped or not: wait that BLPOP out.
        time.sleep(1.5)
        entry_id = a.post(api_query)
        owner = ""
        deadline = time.monotonic() + 20
        while not owner.startswith("node-a:") and time.monotonic() < deadline:
            rows = a.sql(
                "SELECT lease_owner FROM imagecache_fetch WHERE query_hash = ?",
                (query_hash(api_query),),
            )
            owner = rows[0][0] if rows else ""
            time.sleep(0.05)
        assert owner.startswith("node-a:")
        # Killed mid-call, not between its claim and its call.
        wait_for(lambda: simulator.calls()["by_query"].get(query_hash(api_query)) == 1)
        a.kill()
    finally:
        b.signal_all(signal.SIGCONT)
    response = b.get_image(entry_id)
    assert response.status_code == 200
    assert simulator.calls()["by_query"][query_hash(api_query)] == 2
    ((state, attempts),) = b.sql(
        "SELECT state, attempts FROM imagecache_fetch WHERE query_hash = ?",
        (query_hash(api_query),),
    )
    assert (state, attempts) == ("ready", 2)


def test_images_land_in_the_shared_store(nodes, simulator, request):
    a, b = nodes
    entry_id = b.post(unique_query("stored-once"))
    assert a.get_image(entry_id).status_code == 200
    ((name,),) = a.sql("SELECT file_name FROM imagecache_fetch WHERE state = 'ready'")
    if "s3" in request.node.callspec.params["nodes"]:
        assert name in stored_objects(request.getfixturevalue("s3"))
    else:
        assert (Path(a.env["CACHE_PATH"]) / name).is_file()
    info = requests.get(f"{b.url}/info", timeout=5).json()
    assert entry_id in {e["id"] for e in info["active_entries"]}
