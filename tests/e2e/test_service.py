"""The real service (gunicorn + qcluster, as `make run` starts them) against
the Kentik simulator on loopback."""

import base64
import hashlib
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import environ
import pytest
import requests

from imagecache.hashing import query_hash
from imagecache.simulator.render import render_chart
from imagecache.simulator.server import KentikSimulator
from tests.harness import run_tests
from tests.harness.data import E2E_EMAIL, E2E_TOKEN, unique_query
from tests.harness.service import Service, free_port, same_but_max_age, wait_for

pytestmark = pytest.mark.e2e


def kentik_bytes(simulator: KentikSimulator, api_query: dict) -> tuple[str, bytes]:
    """What Kentik itself answers for a query: the bytes the cache must serve."""
    response = requests.post(
        f"{simulator.url}/query/topXchart",
        json=api_query,
        headers={"X-CH-Auth-Email": E2E_EMAIL, "X-CH-Auth-API-Token": E2E_TOKEN},
        timeout=10,
    )
    header, payload = response.json()["dataUri"].split(",", 1)
    return header[len("data:") :].split(";")[0], base64.b64decode(payload)


@pytest.mark.parametrize(
    "image_type, media_type",
    [
        ("png", "image/png"),
        ("jpg", "image/jpeg"),
        ("svg", "image/svg+xml"),
        ("pdf", "application/pdf"),
    ],
)
def test_image_is_served_as_kentik_sent_it(service, simulator, image_type, media_type):
    api_query = unique_query(f"types-{image_type}", image_type)
    entry_id = service.post(api_query, ttl=120)
    response = service.get_image(entry_id)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == media_type
    expected_type, expected = kentik_bytes(simulator, api_query)
    assert (expected_type, response.content) == (media_type, expected)


def test_query_reaches_kentik_unmodified(service, simulator):
    api_query = unique_query("unmodified", filters_obj=None, hostname_lookup=True)
    service.get_image(service.post(api_query))
    assert json.loads(simulator.calls()["last_bodies"][-1]) == api_query
    assert '"filters_obj": null' in simulator.calls()["last_bodies"][-1]


def test_concurrent_identical_posts_make_one_kentik_call(service, simulator):
    api_query = unique_query("coalescing")
    simulator.add_rule(delay=0.5)
    with ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(lambda _: service.post(api_query), range(20)))
        responses = list(pool.map(service.get_image, ids))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert simulator.calls()["by_query"] == {query_hash(api_query): 1}


def test_many_concurrent_waiters_on_one_pending_id_are_all_answered(service, simulator):
    api_query = unique_query("waiters")
    simulator.add_rule(delay=1.5)
    entry_id = service.post(api_query)
    waiters = 150
    with ThreadPoolExecutor(waiters) as pool:
        responses = list(pool.map(lambda _: service.get_image(entry_id), range(waiters)))
    assert [r.status_code for r in responses] == [200] * waiters
    assert len({r.content for r in responses}) == 1
    assert simulator.calls()["total"] == 1


def test_waiting_client_gets_the_image_soon_after_kentik_answers(service, simulator):
    api_query = unique_query("latency")
    simulator.add_rule(delay=1.5)
    response = service.get_image(service.post(api_query))
    # One GET, held while Kentik rendered, gets the image Kentik answered
    # (how soon the waiter wakes is tests/waiting/test_waiter.py's, unloaded).
    assert response.status_code == 200
    assert response.content == render_chart(api_query)[1]
    assert simulator.calls()["by_query"] == {query_hash(api_query): 1}


def test_kentik_rejection_is_answered_with_its_status_and_message(service, simulator):
    entry_id = service.post(unique_query("rejected", "gif"))
    response = service.get_image(entry_id)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert "imageType" in response.json()["error"]


def test_a_rate_limit_keeps_the_fetch_in_line_until_kentik_answers_again(service, simulator):
    # A 429 speaks of the deployment, not the query: however many come, the
    # fetch waits in line, and a client whose wait runs out hears Kentik's
    # last word.
    api_query = unique_query("rate-limited")
    simulator.add_rule(status=429, message="Too many requests, slow down", retry_after="1")
    entry_id = service.post(api_query)
    waited = requests.get(f"{service.url}/image/{entry_id}?wait=3", timeout=60)
    assert (waited.status_code, waited.json()["error"]) == (429, "Too many requests, slow down")
    # More 429s than KENTIK_API_RETRIES allows a fetch's own failures.
    wait_for(lambda: simulator.calls()["by_query"].get(query_hash(api_query), 0) > 2)
    simulator.reset()
    assert service.get_image(entry_id).status_code == 200


def test_rate_limit_then_success_is_retried_transparently(service, simulator):
    api_query = unique_query("retried")
    simulator.add_rule(status=503, retry_after="1", times=1)
    response = service.get_image(service.post(api_query))
    assert response.status_code == 200
    assert simulator.calls()["total"] == 2


def test_kentik_timeout_is_retried_then_answered_504(service, simulator):
    api_query = unique_query("hangs")
    simulator.add_rule(hang=True)
    response = service.get_image(service.post(api_query))
    assert response.status_code == 504
    assert response.json()["error"] == "Kentik did not answer within 2 s"
    assert simulator.calls()["by_query"] == {query_hash(api_query): 2}


def test_an_outage_past_the_wait_keeps_its_status_and_message(service, simulator):
    api_query = unique_query("unavailable")
    simulator.add_rule(status=503, message="Kentik is down for maintenance", retry_after="1")
    entry_id = service.post(api_query)
    response = requests.get(f"{service.url}/image/{entry_id}?wait=3", timeout=60)
    assert (response.status_code, response.json()["error"]) == (
        503,
        "Kentik is down for maintenance",
    )
    # The fetch stayed in line: it ends in its image once Kentik is back.
    simulator.reset()
    assert service.get_image(entry_id).status_code == 200


def test_long_retry_after_is_capped(service, simulator):
    api_query = unique_query("retry-after-an-hour")
    simulator.add_rule(status=429, retry_after="3600", times=1)
    started = time.monotonic()
    response = service.get_image(service.post(api_query))
    assert response.status_code == 200
    # KENTIK_RETRY_AFTER_MAX=1 for this service, not an hour.
    assert time.monotonic() - started < 10
    assert simulator.calls()["by_query"] == {query_hash(api_query): 2}


def test_kentik_500_is_not_retried(service, simulator):
    api_query = unique_query("server-error")
    simulator.add_rule(status=500, message="internal error")
    response = service.get_image(service.post(api_query))
    assert (response.status_code, response.json()["error"]) == (500, "internal error")
    assert simulator.calls()["by_query"] == {query_hash(api_query): 1}


def test_unreadable_kentik_answer_is_answered_502(service, simulator):
    simulator.add_rule(body="<html>proxy error</html>", content_type="text/html")
    response = service.get_image(service.post(unique_query("garbled")))
    assert response.status_code == 502
    assert "could not be read" in response.json()["error"]


def test_failed_fetch_is_not_reused(service, simulator):
    api_query = unique_query("not-reused")
    simulator.add_rule(status=500, message="internal", times=1)
    assert service.get_image(service.post(api_query)).status_code == 500
    assert service.get_image(service.post(api_query)).status_code == 200


def test_info_lists_what_the_cache_holds(service, simulator):
    api_query = unique_query("info", "svg")
    entry_id = service.post(api_query, ttl=90)
    service.get_image(entry_id)
    info = requests.get(f"{service.url}/info", timeout=5).json()
    listed = {e["id"]: e for e in info["active_entries"]}
    assert listed[entry_id]["type"] == "image/svg+xml"
    assert listed[entry_id]["size"] > 0
    assert info["active_count"] >= 1


def test_unknown_and_malformed_ids_are_404_json(service):
    for entry_id in ["0" * 64 + "_1700000000.5", "nonsense", "..%2F..%2Fetc%2Fpasswd"]:
        response = requests.get(f"{service.url}/image/{entry_id}", timeout=5)
        assert response.status_code == 404
        assert "error" in response.json()


def test_requests_gunicorn_refuses_are_answered_in_json(service):
    long_path = f"/image/{'0' * 64}_1?wait=" + "1" * 5000
    cases = [
        (f"GET {long_path} HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URI Too Long"),
        ("GET /info HTTP/1.1\r\n" + "X-Many: 1\r\n" * 200 + "\r\n", 431, "Too Large"),
        ("NOT A REQUEST\r\n\r\n", 400, "Bad Request"),
    ]
    for raw, status, reason in cases:
        with socket.create_connection(("127.0.0.1", service.port), timeout=5) as sock:
            sock.sendall(raw.encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
        assert b"Content-Type: application/json" in head
        error = json.loads(body)
        assert error["status"] == status
        assert reason in error["error"]


def test_favicon(service):
    response = requests.get(f"{service.url}/favicon.ico", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/x-icon"


def test_integration_client_passes_against_the_live_service(service):
    assert run_tests.main(["--url", service.url, "--concurrent", "--timeout", "60"]) == 0


def test_unreachable_kentik_is_answered_502(tmp_path):
    service = Service(
        tmp_path, f"http://127.0.0.1:{free_port()}/api/v5", KENTIK_API_RETRIES=1
    ).start()
    try:
        response = service.get_image(service.post(unique_query("unreachable")))
        assert response.status_code == 502
        assert "could not be reached" in response.json()["error"]
    finally:
        service.drop()


def test_wrong_credentials_are_401_and_not_retried(tmp_path, simulator):
    service = Service(tmp_path, simulator.url, KT_AUTH_TOKEN="wrong-token").start()
    try:
        api_query = unique_query("wrong-token")
        response = service.get_image(service.post(api_query))
        assert response.status_code == 401
        assert response.json()["error"].startswith("Authentication failed")
        assert simulator.calls()["by_query"] == {query_hash(api_query): 1}
        assert "wrong-token" not in service.log()
        assert "check KT_AUTH_EMAIL and KT_AUTH_TOKEN" in service.log()
    finally:
        service.drop()


def test_kentik_calls_in_flight_stay_under_the_bound(tmp_path, simulator):
    service = Service(tmp_path, simulator.url, KENTIK_MAX_CONCURRENCY=2, Q_WORKERS=4).start()
    try:
        simulator.add_rule(delay=0.5)
        # Calls an earlier test left hanging still count as in flight.
        hanging = simulator.calls()["in_flight"]
        ids = [service.post(unique_query(f"bounded-{n}")) for n in range(6)]
        with ThreadPoolExecutor(6) as pool:
            statuses = [r.status_code for r in pool.map(service.get_image, ids)]
        assert statuses == [200] * 6
        assert simulator.calls()["total"] == 6
        assert simulator.calls()["max_in_flight"] - hanging == 2
    finally:
        service.drop()


def test_stop_stops_every_process(tmp_path, simulator):
    service = Service(tmp_path, simulator.url).start()
    service.stop()
    service.drop()
    assert service.process is not None and service.process.returncode == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{service.url}/info", timeout=2)


def raw_exchange(service: Service, request: str) -> tuple[bytes, bytes]:
    """One request on its own connection, as bytes on the wire: the head of
    the answer and everything after it until the server closes."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(request.encode("latin-1"))
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    return head, rest


def test_head_of_a_ready_image_has_its_length_and_no_body(service, simulator):
    entry_id = service.post(unique_query("head"), ttl=120)
    got = service.get_image(entry_id)
    assert got.status_code == 200
    asked = time.monotonic()
    head = requests.head(f"{service.url}/image/{entry_id}", timeout=10)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(got.content))
    for name in ("Content-Type", "ETag", "Last-Modified", "Expires"):
        assert head.headers[name] == got.headers[name]
    # A second of the clock may turn between the two.
    elapsed = time.monotonic() - asked + got.elapsed.total_seconds()
    assert same_but_max_age(got.headers["Cache-Control"], head.headers["Cache-Control"], elapsed)
    # On the wire: the headers, then nothing.
    status, rest = raw_exchange(
        service,
        f"HEAD /image/{entry_id} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    assert status.startswith(b"HTTP/1.1 200 ")
    assert f"content-length: {len(got.content)}".encode() in status.lower()
    assert rest == b""
    assert "no-body response" not in service.log()


def test_conditional_get_of_a_ready_image_is_304(service, simulator):
    entry_id = service.post(unique_query("conditional"), ttl=120)
    got = service.get_image(entry_id)
    assert got.headers["ETag"] == f'"{hashlib.sha256(got.content).hexdigest()}"'
    assert got.headers["Cache-Control"].startswith("public, max-age=")
    url = f"{service.url}/image/{entry_id}"
    by_etag = requests.get(url, headers={"If-None-Match": got.headers["ETag"]}, timeout=10)
    by_date = requests.get(
        url, headers={"If-Modified-Since": got.headers["Last-Modified"]}, timeout=10
    )
    for response in (by_etag, by_date):
        assert response.status_code == 304
        assert response.content == b""
        assert response.headers["ETag"] == got.headers["ETag"]
        assert response.headers["Expires"] == got.headers["Expires"]
    changed = requests.get(url, headers={"If-None-Match": '"other"'}, timeout=10)
    assert (changed.status_code, changed.content) == (200, got.content)


def test_wait_0_on_a_slow_query_is_202_until_the_image_is_ready(service, simulator):
    api_query = unique_query("wait-0-slow")
    simulator.add_rule(match="wait-0-slow", delay=1.2)
    entry_id = service.post(api_query)
    # Kentik takes 1.2 s: a request that waited would get the image.
    polled = requests.get(f"{service.url}/image/{entry_id}?wait=0", timeout=10)
    assert polled.status_code == 202
    assert polled.headers["Retry-After"] == "1"
    assert polled.headers["Cache-Control"] == "no-store"
    assert polled.json() == {
        "id": entry_id,
        "state": polled.json()["state"],
        "status": 202,
        "retry_after": 1,
    }
    assert polled.json()["state"] in ("pending", "fetching")
    assert service.get_image(entry_id).status_code == 200
    ready = requests.get(f"{service.url}/image/{entry_id}?wait=0", timeout=10)
    assert ready.status_code == 200
    assert ready.content == kentik_bytes(simulator, api_query)[1]


def test_concurrent_posts_joining_a_ready_image_all_succeed(service, simulator):
    api_query = unique_query("joins-ready")
    assert service.get_image(service.post(api_query)).status_code == 200
    with ThreadPoolExecutor(32) as pool:
        ids = list(pool.map(lambda _: service.post(api_query), range(200)))
    # Each joins the ready fetch and gets its fast-path link on the way.
    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(service.get_image, ids))
    assert {r.status_code for r in responses} == {200}
    assert simulator.calls()["by_query"] == {query_hash(api_query): 1}


def test_serve_announces_its_address_once_it_answers(service):
    # The harness waited for an answer; the line is there by then (the
    # supervisor writes it once the port takes connections).
    line = f"Kentik image cache on http://127.0.0.1:{service.port}/"
    wait_for(lambda: line in service.log_path.read_text(errors="replace"), timeout=10)


def test_serve_keeps_no_database_connection_of_its_own_once_its_children_run(service):
    # It migrates and recovers pending fetches, then only watches its
    # children: a connection kept would idle against PostgreSQL's
    # max_connections for as long as the node runs.
    assert service.process is not None
    assert database_handles(service.process.pid, service.env["DATABASE_URL"]) == []


def database_handles(pid: int, database_url: str) -> list[str]:
    """The open files (SQLite) or TCP connections (PostgreSQL) of process
    `pid` to the database at `database_url`."""
    fds = Path(f"/proc/{pid}/fd")
    targets = [os.readlink(fd) for fd in fds.iterdir()]
    database = environ.Env.db_url_config(database_url)
    if database["ENGINE"].endswith("sqlite3"):
        # The file, its WAL and its shared memory.
        return [t for t in targets if t.startswith(database["NAME"])]
    # /proc's TCP tables: the remote address's port in hex, and the socket's inode.
    remote_port = f":{database['PORT'] or 5432:04X}"
    inodes = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[2].endswith(remote_port):
                inodes.add(f"socket:[{fields[9]}]")
    return [t for t in targets if t in inodes]
