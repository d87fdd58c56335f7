"""Tests of the integration client tests/harness/run_tests.py against an in-process stub.

The stub answers like the service: POST /requests gives an id, GET /image/<id>
gives a small image for a good query and Kentik's 400 JSON error for a query
with an unsupported imageType.  No Django and no real service are needed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from imagecache.api import examples
from imagecache.simulator.render import MIME_TYPES
from tests.harness import run_tests

DATA_DIR = run_tests.DEFAULT_DIR
LINE_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} \S")
# The image types the simulator (and Kentik) answer, by `imageType`.
CONTENT_TYPES = MIME_TYPES
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


class Stub:
    """State of the stub service, shared by its handler threads."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.queries: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.image_status: int | None = None  # force this status on GET /image
        self.reject_bad_at_post = False  # answer 400 already at POST /requests
        self.barrier: threading.Barrier | None = None  # GETs wait for each other

    def post(self, body: dict[str, Any]) -> tuple[int, str, bytes]:
        with self.lock:
            self.bodies.append(body)
        api_query = body.get("api_query")
        if not isinstance(api_query, dict):
            return error(400, "api_query must be an object")
        if self.reject_bad_at_post and api_query.get("imageType") not in CONTENT_TYPES:
            return error(400, "invalid imageType")
        digest = hashlib.sha256(
            json.dumps(api_query, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        image_id = f"{digest}_{time.time() + body.get('ttl', 3600):.6f}"
        with self.lock:
            self.queries[image_id] = api_query
        return 200, "application/json", json.dumps({"id": image_id}).encode()

    def get(self, image_id: str) -> tuple[int, str, bytes]:
        if self.barrier is not None:
            self.barrier.wait()
        with self.lock:
            api_query = self.queries.get(image_id)
        if api_query is None:
            return error(404, "unknown id")
        if self.image_status is not None:
            return error(self.image_status, "internal error")
        image_type = str(api_query.get("imageType"))
        if image_type not in CONTENT_TYPES or not api_query.get("queries"):
            return error(400, "Bad request", kentik_status=400)
        return 200, CONTENT_TYPES[image_type], PNG_BYTES


def error(status: int, message: str, **extra: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps({"error": message, **extra}).encode()


def make_handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/requests":
                self.answer(*error(404, "not found"))
                return
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.answer(*stub.post(json.loads(raw)))

        def do_GET(self) -> None:
            if not self.path.startswith("/image/"):
                self.answer(*error(404, "not found"))
                return
            self.answer(*stub.get(self.path.removeprefix("/image/")))

        def answer(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def stub() -> Iterator[tuple[Stub, str]]:
    state = Stub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def api_query(image_type: str = "png") -> dict[str, Any]:
    return examples.chart_query(image_type=image_type)


def write(directory: Path, name: str, content: dict[str, Any]) -> Path:
    path = directory / name
    path.write_text(json.dumps(content), encoding="utf-8")
    return path


def good_and_bad(directory: Path) -> None:
    write(
        directory,
        "a_good.json",
        {
            "api_query": api_query("png"),
            "ttl": 300,
            "expect": {"status": 200, "content_type": "image/png"},
        },
    )
    write(
        directory,
        "b_bad.json",
        {"api_query": api_query("gif"), "expect": {"status": 400}},
    )


def test_all_answers_match(stub: tuple[Stub, str], tmp_path: Path, capsys: Any) -> None:
    _, url = stub
    good_and_bad(tmp_path)

    assert run_tests.main(["--url", url, "--dir", str(tmp_path)]) == 0

    out = capsys.readouterr().out
    lines = out.splitlines()
    assert all(LINE_RE.match(line) for line in lines), out
    messages = [line[20:] for line in lines]
    assert messages[0] == f"Using URL: {url}"
    assert messages[1] == f"tid: 0 loading request from: {tmp_path / 'a_good.json'}"
    assert messages[3] == "2 requests loaded"
    assert messages[4] == "Running tests"
    assert "tid: 0 posting request" in messages
    assert any(re.fullmatch(r"tid: 0: got id: [0-9a-f]{64}_\d+\.\d+", m) for m in messages)
    assert any(
        re.fullmatch(rf"tid: 1 requesting: {url}/image/[0-9a-f]{{64}}_\S+", m) for m in messages
    )
    assert "tid: 0 got: status: 200 type: image/png length: 40" in messages
    assert any(
        re.fullmatch(r"tid: 1 got: status: 400 type: application/json length: \d+", m)
        for m in messages
    )
    assert messages[-1] == "2 passed, 0 failed"


def test_expect_is_not_sent(stub: tuple[Stub, str], tmp_path: Path) -> None:
    state, url = stub
    good_and_bad(tmp_path)

    assert run_tests.main(["--url", url, "--dir", str(tmp_path)]) == 0

    assert state.bodies == [
        {"api_query": api_query("png"), "ttl": 300},
        {"api_query": api_query("gif")},
    ]
    # null values reach the service unchanged
    assert state.bodies[0]["api_query"]["queries"][0]["query"]["starting_time"] is None


def test_unexpected_status_fails(stub: tuple[Stub, str], tmp_path: Path, capsys: Any) -> None:
    state, url = stub
    state.image_status = 500
    good_and_bad(tmp_path)

    assert run_tests.main(["--url", url, "--dir", str(tmp_path)]) == 1

    out = capsys.readouterr().out
    assert re.search(
        r"FAILED \S*a_good\.json: expected: status: 200 type: image/png "
        r"got: status: 500 type: application/json length: \d+ \(error: internal error\)",
        out,
    ), out
    assert "FAILED" in out and "b_bad.json: expected: status: 400 got: status: 500" in out
    assert out.splitlines()[-1].endswith(" 0 passed, 2 failed")


def test_unexpected_content_type_fails(stub: tuple[Stub, str], tmp_path: Path, capsys: Any) -> None:
    _, url = stub
    write(
        tmp_path,
        "jpeg.json",
        {
            "api_query": api_query("png"),
            "expect": {"status": 200, "content_type": "image/jpeg"},
        },
    )

    assert run_tests.main(["--url", url, "--dir", str(tmp_path)]) == 1
    assert "expected: status: 200 type: image/jpeg got: status: 200 type: image/png" in (
        capsys.readouterr().out
    )


def test_default_expectation_is_200(stub: tuple[Stub, str], tmp_path: Path) -> None:
    _, url = stub
    write(tmp_path, "ok.json", {"api_query": api_query("svg")})
    assert run_tests.main(["--url", url, "--dir", str(tmp_path)]) == 0
    write(tmp_path, "rejected.json", {"api_query": api_query("gif")})
    assert run_tests.main(["--url", url, "--dir", str(tmp_path)]) == 1


def test_rejection_at_post_with_expected_status_passes(
    stub: tuple[Stub, str], tmp_path: Path, capsys: Any
) -> None:
    state, url = stub
    state.reject_bad_at_post = True
    good_and_bad(tmp_path)

    assert run_tests.main(["--url", url, "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "tid: 1 post rejected: status: 400 type: application/json" in out
    assert "tid: 1 error: invalid imageType" in out
    assert "2 passed, 0 failed" in out

    write(tmp_path, "c_bad_expected_ok.json", {"api_query": api_query("gif")})
    assert run_tests.main(["--url", url, "--dir", str(tmp_path)]) == 1
    assert re.search(
        r"FAILED \S*c_bad_expected_ok\.json: expected: status: 200 got: POST /requests status: 400",
        capsys.readouterr().out,
    )


def test_glob_selects_files(stub: tuple[Stub, str], tmp_path: Path, capsys: Any) -> None:
    state, url = stub
    good_and_bad(tmp_path)
    write(tmp_path, "notes.txt", {"api_query": api_query("png")})

    assert run_tests.main(["--url", url, "--dir", str(tmp_path), "--glob", "a_*.json"]) == 0

    assert state.bodies == [{"api_query": api_query("png"), "ttl": 300}]
    out = capsys.readouterr().out
    assert "1 requests loaded" in out and "b_bad.json" not in out


def test_concurrent(stub: tuple[Stub, str], tmp_path: Path, capsys: Any) -> None:
    state, url = stub
    for i, image_type in enumerate(["png", "jpg", "svg", "pdf", "gif"]):
        expect = {"status": 400} if image_type == "gif" else {"status": 200}
        write(
            tmp_path,
            f"q{i}.json",
            {"api_query": api_query(image_type), "expect": expect},
        )
    # Every GET waits until all five are in flight: only a concurrent run gets through.
    state.barrier = threading.Barrier(5, timeout=5)

    assert run_tests.main(["--url", url, "--dir", str(tmp_path), "--concurrent"]) == 0

    out = capsys.readouterr().out
    assert "Running tests concurrently" in out
    for tid in range(5):
        assert f"tid: {tid} posting request" in out
        assert f"tid: {tid} got: status: " in out
    assert "5 passed, 0 failed" in out


def test_connection_error(tmp_path: Path, capsys: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    good_and_bad(tmp_path)

    assert (
        run_tests.main(
            [
                "--url",
                f"http://127.0.0.1:{port}",
                "--dir",
                str(tmp_path),
                "--timeout",
                "2",
            ]
        )
        == 1
    )
    out = capsys.readouterr().out
    assert "tid: 0 connection error:" in out
    assert "0 passed, 2 failed" in out


def test_invalid_request_file_fails(stub: tuple[Stub, str], tmp_path: Path, capsys: Any) -> None:
    state, url = stub
    good_and_bad(tmp_path)
    (tmp_path / "c_broken.json").write_text("{not json", encoding="utf-8")
    write(tmp_path, "d_no_query.json", {"ttl": 5})

    assert run_tests.main(["--url", url, "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "2 requests loaded" in out
    assert "2 passed, 2 failed" in out
    assert len(state.bodies) == 2


def test_no_files_fails(tmp_path: Path, capsys: Any) -> None:
    assert run_tests.main(["--dir", str(tmp_path)]) == 1
    assert "no request files match *.json" in capsys.readouterr().out


def test_logs_through_logging(stub: tuple[Stub, str], tmp_path: Path, caplog: Any) -> None:
    _, url = stub
    good_and_bad(tmp_path)
    with caplog.at_level(logging.INFO, logger=run_tests.log.name):
        assert run_tests.main(["--url", url, "--dir", str(tmp_path)]) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert "tid: 1 posting request" in messages
    assert messages[-1] == "2 passed, 0 failed"


def test_help_shows_defaults(capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_tests.main(["--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in (
        "--url",
        "http://127.0.0.1:8000",
        "--dir",
        "tests/data",
        "--glob",
        "*.json",
        "--concurrent",
        "--timeout",
        "240",
    ):
        assert text in out


def test_bundled_data_against_stub(stub: tuple[Stub, str], capsys: Any) -> None:
    """The files in tests/data pass against a service that behaves as specified."""
    state, url = stub
    assert run_tests.main(["--url", url, "--concurrent"]) == 0
    assert len(state.bodies) == len(list(DATA_DIR.glob("*.json")))
    assert all(set(body) <= {"api_query", "ttl"} for body in state.bodies)


def contains_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(contains_null(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_null(v) for v in value)
    return False


def test_data_files_are_valid() -> None:
    paths = sorted(DATA_DIR.glob("*.json"))
    names = {p.name for p in paths}
    assert {f"example_query_{i}.json" for i in range(1, 5)} | {"bad_query.json"} <= names
    nulls = False
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(data, dict), path
        assert set(data) <= {"api_query", "ttl", "expect"}, path
        query = data["api_query"]
        assert isinstance(query, dict), path
        assert isinstance(query.get("queries"), list) and query["queries"], path
        for item in query["queries"]:
            assert {"bucket", "isOverlay", "query"} <= set(item), path
        if "ttl" in data:
            assert isinstance(data["ttl"], int) and data["ttl"] > 0, path
        expect = run_tests.parse_expect(data.get("expect"))
        if expect.status == 200:
            assert expect.content_type == CONTENT_TYPES[query["imageType"]], path
        nulls = nulls or contains_null(query)
    assert nulls, "one example must carry a null-valued key"
    bad = json.loads((DATA_DIR / "bad_query.json").read_text(encoding="utf-8"))
    assert bad["expect"] == {"status": 400}
    assert bad["api_query"]["imageType"] not in CONTENT_TYPES
