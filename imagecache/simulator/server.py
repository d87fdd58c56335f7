"""The simulator's HTTP server, and `KentikSimulator`, which runs it on a
local port in a thread.

The handler reads bodies (with their limits), dispatches Kentik's methods to
`methods` and answers the `/_sim/...` endpoints; the server tracks its
connections so that stopping ends them all.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, NoReturn, Self

from imagecache.hashing import query_hash
from imagecache.simulator import methods
from imagecache.simulator.methods import TOKEN_HEADER
from imagecache.simulator.modes import Clock
from imagecache.simulator.rules import Rule, RuleError
from imagecache.simulator.state import State

API_PREFIX: Final = "/api/v5"
TOPX_PATH: Final = API_PREFIX + "/query/topXchart"
URL_PATH: Final = API_PREFIX + "/query/url"
KENTIK_PATHS: Final = {TOPX_PATH: methods.CHART, URL_PATH: methods.LINK}
RULES_PATH: Final = "/_sim/rules"
RESET_PATH: Final = "/_sim/reset"
CALLS_PATH: Final = "/_sim/calls"
RATE_LIMIT_PATH: Final = "/_sim/rate_limit"
OUTAGE_PATH: Final = "/_sim/outage"
MAX_BODY_BYTES: Final = 10 * 1024 * 1024


class _BodyError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "KentikSimulator/1.0"
    # Headers and body go out in two writes; without this, Nagle's algorithm and
    # delayed ACKs add ~40 ms to every keep-alive answer.
    disable_nagle_algorithm = True
    # Idle keep-alive connections give their thread back after this long.
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.state.verbose:
            super().log_message(format, *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors found by http.server, answered as JSON like everything else."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        self._send_json(code, {"error": message or phrase}, close=True)

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        method = self.command
        try:
            raw = self._read_body()
        except _BodyError as exc:
            if method == "POST" and path in KENTIK_PATHS:
                self._count(b"", KENTIK_PATHS[path])
                self.server.state.leave(KENTIK_PATHS[path])
                self.server.state.answered(exc.status, KENTIK_PATHS[path])
            self._send_json(exc.status, {"error": exc.message}, close=True)
            return
        if method == "POST" and path in KENTIK_PATHS:
            self._kentik(KENTIK_PATHS[path], raw)
        elif method == "POST" and path == RULES_PATH:
            self._add_rule(raw)
        elif method == "POST" and path == RESET_PATH:
            self.server.state.reset()
            self._send_json(HTTPStatus.OK, {"reset": True})
        elif method == "GET" and path == CALLS_PATH:
            self._send_json(HTTPStatus.OK, self.server.state.calls())
        elif path in (RATE_LIMIT_PATH, OUTAGE_PATH) and method in ("GET", "POST", "DELETE"):
            self._mode(path, method, raw)
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"Not found: {method} {path}"})

    # Every method goes through one dispatcher, which answers what it does not serve.
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise _BodyError(HTTPStatus.BAD_REQUEST, "Invalid Content-Length header") from None
        if length < 0:
            raise _BodyError(HTTPStatus.BAD_REQUEST, "Invalid Content-Length header")
        if length > MAX_BODY_BYTES:
            raise _BodyError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body is too large")
        raw = self.rfile.read(length)
        if len(raw) < length:
            raise _BodyError(HTTPStatus.BAD_REQUEST, "Request body is shorter than Content-Length")
        return raw

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        size_total = 0
        while True:
            line = self.rfile.readline(1026)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BodyError(HTTPStatus.BAD_REQUEST, "Malformed chunked body") from None
            if size == 0:
                # Trailer fields, if any, end with an empty line.
                while self.rfile.readline(65537).strip():
                    pass
                return b"".join(parts)
            size_total += size
            if size_total > MAX_BODY_BYTES:
                raise _BodyError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body is too large")
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise _BodyError(HTTPStatus.BAD_REQUEST, "Chunked body ended early")
            parts.append(chunk)
            self.rfile.readline(3)

    def _count(self, raw: bytes, method: str) -> tuple[Any, str | None]:
        """Record an arriving Kentik call; its parsed body, or why it did not parse."""
        parsed, problem = _parse_json(raw)
        key = hashlib.sha256(raw).hexdigest()
        if problem is None:
            try:
                key = query_hash(parsed)
            except ValueError:
                pass
        headers = {
            name: "***" if name.lower() == TOKEN_HEADER.lower() else value
            for name, value in self.headers.items()
        }
        self.server.state.arrive(key, raw.decode("utf-8", errors="replace"), headers, method)
        return parsed, problem

    def _kentik(self, method: str, raw: bytes) -> None:
        state = self.server.state
        parsed, problem = self._count(raw, method)
        try:
            answer = methods.answer(
                method, state, self.headers, raw, parsed, problem, self.log_error
            )
        finally:
            # Leave before answering: a client that already has its answer must not
            # find its call still in flight when it asks /_sim/calls next.
            state.leave(method)
        if answer is None:
            self.close_connection = True
            return
        state.answered(answer.status, method)
        self._send(answer.status, answer.body, answer.content_type, answer.headers)

    def _add_rule(self, raw: bytes) -> None:
        parsed, problem = _parse_json(raw)
        if problem is None and not isinstance(parsed, dict):
            problem = "A rule must be a JSON object"
        if problem is None:
            try:
                count = self.server.state.add_rule(Rule.from_mapping(parsed))
            except ValueError as exc:
                problem = str(exc)
            else:
                self._send_json(HTTPStatus.OK, {"rules": count})
                return
        self._send_json(HTTPStatus.BAD_REQUEST, {"error": problem})

    def _mode(self, path: str, method: str, raw: bytes) -> None:
        """GET, POST (set) or DELETE (clear) one of the modes."""
        state = self.server.state
        name = path.rsplit("/", 1)[1]
        set_mode, read_mode = {
            RATE_LIMIT_PATH: (state.set_rate_limit, state.rate_limit_dict),
            OUTAGE_PATH: (state.set_outage, state.outage_dict),
        }[path]
        if method == "POST":
            parsed, problem = _parse_json(raw)
            if problem is None and not isinstance(parsed, dict):
                problem = f"The {name.replace('_', ' ')} must be a JSON object"
            if problem is None:
                try:
                    set_mode(parsed)
                except RuleError as exc:
                    problem = str(exc)
            if problem is not None:
                self._send_json(HTTPStatus.BAD_REQUEST, {"error": problem})
                return
        elif method == "DELETE":
            set_mode(None)
        self._send_json(HTTPStatus.OK, {name: read_mode()})

    def _send_json(
        self,
        status: int,
        payload: Any,
        *,
        extra: Sequence[tuple[str, str]] = (),
        close: bool = False,
    ) -> None:
        body = json.dumps(payload).encode("utf-8")
        self._send(status, body, "application/json", extra, close=close)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        extra: Sequence[tuple[str, str]] = (),
        *,
        close: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _parse_json(raw: bytes) -> tuple[Any, str | None]:
    def reject_constant(name: str) -> NoReturn:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=reject_constant), None
    except UnicodeDecodeError:
        return None, "Request body is not valid UTF-8"
    except RecursionError:
        return None, "Request body is not valid JSON: nested too deeply"
    except ValueError as exc:
        return None, f"Request body is not valid JSON: {exc}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # stop() ends the handler threads itself, with a deadline; the stdlib join has none.
    block_on_close = False
    # The default backlog of 5 drops bursts of parallel connects, which then wait
    # a full second for the SYN to be retried.
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], state: State):
        self.state = state
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Registered here, in the accepting thread, so that close_connections() after
        # shutdown() cannot miss a connection whose thread has not started yet.
        with self._lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        current = threading.current_thread()
        with self._lock:
            self._workers.add(current)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._connections.discard(request)
                self._workers.discard(current)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that give up (timeouts, resets) are routine in tests, not news.
        if self.state.verbose:
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def join_workers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))


class KentikSimulator:
    """A Kentik chart API on a local port, for tests and local development.

    >>> with KentikSimulator(email="me@example.com", token="secret") as sim:
    ...     base_url = sim.url  # http://127.0.0.1:<port>/api/v5
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        email: str | None = None,
        token: str | None = None,
        delay: float = 0.0,
        verbose: bool = False,
        clock: Clock = time.monotonic,
    ):
        self.host = host
        self._requested_port = port
        # `clock` times the modes alone (a test moves it instead of sleeping);
        # delays and hangs are real waits.
        self._state = State(email, token, float(delay), verbose, clock)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def port(self) -> int:
        """The port actually listened on (the requested one before start())."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The API base to configure clients with, e.g. ``http://127.0.0.1:8001/api/v5``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{API_PREFIX}"

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("KentikSimulator can only be started once")
        self._server = _Server((self.host, self._requested_port), self._state)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"kentik-simulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end hanging and delayed calls, and close every connection."""
        if self._server is None or self._stopped:
            return
        self._stopped = True
        self._state.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._server.join_workers(timeout=1.5)
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def __enter__(self) -> Self:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def add_rule(self, **rule: Any) -> int:
        """Append a rule (same fields as ``POST /_sim/rules``); the number of rules."""
        return self._state.add_rule(Rule.from_mapping(rule))

    def reset(self) -> None:
        """Forget all rules, modes and counters."""
        self._state.reset()

    def set_rate_limit(self, calls_per_minute: int) -> dict[str, Any]:
        """Allow that many topXchart calls per credentials in any 60 s, 429 past
        them (as ``POST /_sim/rate_limit``); what ``GET /_sim/rate_limit`` answers."""
        self._state.set_rate_limit({"calls_per_minute": calls_per_minute})
        return {"rate_limit": self._state.rate_limit_dict()}

    def clear_rate_limit(self) -> None:
        """No rate limit (as ``DELETE /_sim/rate_limit``)."""
        self._state.set_rate_limit(None)

    def set_outage(
        self,
        seconds: float,
        status: int = 503,
        retry_after: str | float | None = None,
        message: str | None = None,
    ) -> dict[str, Any]:
        """Fail every topXchart call with `status` for `seconds` from now (as
        ``POST /_sim/outage``); what ``GET /_sim/outage`` answers."""
        fields = {"seconds": seconds, "status": status, "retry_after": retry_after}
        self._state.set_outage({**fields, "message": message})
        return {"outage": self._state.outage_dict()}

    def clear_outage(self) -> None:
        """End the outage now (as ``DELETE /_sim/outage``)."""
        self._state.set_outage(None)

    def calls(self) -> dict[str, Any]:
        """What ``GET /_sim/calls`` answers."""
        return self._state.calls()
