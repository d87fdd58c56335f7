"""Integration client for a running Kentik Image Cache.

For every request file it posts ``{"api_query": ..., "ttl": ...}`` to
``POST /requests``, fetches ``GET /image/<id>`` and compares the answer with
the file's optional ``expect`` object (``{"status": 400}`` or
``{"status": 200, "content_type": "image/png"}``; without it status 200 is
expected).  ``expect`` is read by this client only and never sent.  A request
that the service already rejects at ``POST /requests`` passes when that status
is the expected one.  Needs only the standard library, ``requests`` and the
id pattern (``imagecache.ids``): run it from the checkout, as a module.

Exit status: 0 if every answer matched, 1 if any differed, a request file
could not be read, no file matched or a connection failed.

Usage::

    python -m tests.harness.run_tests                   # tests/data/*.json, sequentially
    python -m tests.harness.run_tests --url http://127.0.0.1:8000 --concurrent
    python -m tests.harness.run_tests --dir /tmp/requests --glob 'example_*.json' --timeout 60
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from imagecache.ids import ENTRY_ID_RE

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_GLOB = "*.json"
DEFAULT_TIMEOUT = 240.0

# "<sha256 hex>_<expiry epoch>", the epoch possibly with a fraction.

log = logging.getLogger("kentik_image_cache.run_tests")


@dataclass(frozen=True)
class Expect:
    """What a request file expects from ``GET /image/<id>``."""

    status: int = 200
    content_type: str | None = None

    def describe(self) -> str:
        text = f"status: {self.status}"
        if self.content_type is not None:
            text += f" type: {self.content_type}"
        return text


@dataclass(frozen=True)
class RequestFile:
    """One loaded request file."""

    tid: int
    path: Path
    body: dict[str, Any]
    expect: Expect


@dataclass
class Outcome:
    """The result of one request file."""

    tid: int
    path: Path
    expected: str
    got: str = ""
    passed: bool = False
    notes: list[str] = field(default_factory=list)


class RequestFileError(ValueError):
    """A request file that cannot be used."""


def display_path(path: Path) -> str:
    """The path relative to the working directory when below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def parse_expect(raw: Any) -> Expect:
    """Validate the ``expect`` object of a request file."""
    if raw is None:
        return Expect()
    if not isinstance(raw, dict):
        raise RequestFileError("'expect' must be an object")
    unknown = set(raw) - {"status", "content_type"}
    if unknown:
        raise RequestFileError(f"unknown keys in 'expect': {sorted(unknown)}")
    status = raw.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise RequestFileError("'expect.status' must be an HTTP status code")
    content_type = raw.get("content_type")
    if content_type is not None and not isinstance(content_type, str):
        raise RequestFileError("'expect.content_type' must be a string")
    return Expect(status=status, content_type=content_type)


def load_request(tid: int, path: Path) -> RequestFile:
    """Read a request file; only ``api_query`` and ``ttl`` go into the body."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestFileError(str(exc)) from exc
    if not isinstance(data, dict):
        raise RequestFileError("a request file must hold a JSON object")
    if not isinstance(data.get("api_query"), dict):
        raise RequestFileError("'api_query' must be an object")
    body: dict[str, Any] = {"api_query": data["api_query"]}
    if "ttl" in data:
        body["ttl"] = data["ttl"]
    return RequestFile(tid=tid, path=path, body=body, expect=parse_expect(data.get("expect")))


def media_type(content_type: str | None) -> str:
    """``image/svg+xml; charset=utf-8`` -> ``image/svg+xml``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def describe_answer(response: requests.Response) -> str:
    return (
        f"status: {response.status_code} "
        f"type: {response.headers.get('Content-Type') or 'none'} "
        f"length: {len(response.content)}"
    )


def error_message(response: requests.Response) -> str | None:
    """The ``error`` of a JSON error body, if there is one."""
    try:
        data = response.json()
    except ValueError:
        return None
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])[:300]
    return None


def matches(expect: Expect, response: requests.Response) -> tuple[bool, str | None]:
    """Whether an answer is the expected one, and why not."""
    if response.status_code != expect.status:
        return False, None
    if expect.content_type is not None and media_type(
        response.headers.get("Content-Type")
    ) != media_type(expect.content_type):
        return False, None
    if expect.status == 200 and not response.content:
        return False, "empty body"
    return True, None


def run_one(request: RequestFile, base_url: str, timeout: float) -> Outcome:
    """Post one request, fetch its image and compare the answer."""
    tid = request.tid
    outcome = Outcome(tid=tid, path=request.path, expected=request.expect.describe())
    with requests.Session() as session:
        try:
            log.info("tid: %d posting request", tid)
            posted = session.post(f"{base_url}/requests", json=request.body, timeout=timeout)
            image_id = None
            if 200 <= posted.status_code < 300:
                try:
                    answer = posted.json()
                except ValueError:
                    answer = None
                if isinstance(answer, dict) and isinstance(answer.get("id"), str):
                    image_id = answer["id"]
            if image_id is None:
                log.info("tid: %d post rejected: %s", tid, describe_answer(posted))
                message = error_message(posted)
                if message is not None:
                    log.info("tid: %d error: %s", tid, message)
                ok, why = matches(request.expect, posted)
                if 200 <= posted.status_code < 300:
                    ok, why = False, "no id in the answer of POST /requests"
                outcome.passed = ok
                outcome.got = f"POST /requests {describe_answer(posted)}"
                if why:
                    outcome.notes.append(why)
                elif message is not None and not ok:
                    outcome.notes.append(f"error: {message}")
                return outcome

            log.info("tid: %d: got id: %s", tid, image_id)
            url = f"{base_url}/image/{quote(image_id, safe='')}"
            log.info("tid: %d requesting: %s", tid, url)
            image = session.get(url, timeout=timeout)
            log.info("tid: %d got: %s", tid, describe_answer(image))
            message = error_message(image) if image.status_code != 200 else None
            if message is not None:
                log.info("tid: %d error: %s", tid, message)
        except requests.RequestException as exc:
            log.error("tid: %d connection error: %s", tid, exc)
            outcome.got = f"connection error: {exc}"
            return outcome

    ok, why = matches(request.expect, image)
    if not ENTRY_ID_RE.match(image_id):
        ok, why = False, f"malformed id {image_id!r}"
    outcome.passed = ok
    outcome.got = describe_answer(image)
    if why:
        outcome.notes.append(why)
    elif message is not None and not ok:
        outcome.notes.append(f"error: {message}")
    return outcome


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Post Kentik queries to a running Kentik Image Cache and check the images.",
    )
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help="base URL of the service (default: %(default)s)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        help="directory of the request files (default: tests/data, next to this script)",
    )
    parser.add_argument(
        "--glob",
        default=DEFAULT_GLOB,
        help="pattern of the request files (default: %(default)s)",
    )
    parser.add_argument(
        "--concurrent",
        action="store_true",
        help="run all request files at once, one thread each (default: one after another)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds to wait for each HTTP answer (default: %(default)g)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        return run(args)
    finally:
        log.removeHandler(handler)


def run(args: argparse.Namespace) -> int:
    base_url: str = args.url.rstrip("/")
    log.info("Using URL: %s", base_url)

    paths = sorted((p for p in Path(args.dir).glob(args.glob) if p.is_file()), key=lambda p: p.name)
    outcomes: list[Outcome] = []
    loaded: list[RequestFile] = []
    for tid, path in enumerate(paths):
        log.info("tid: %d loading request from: %s", tid, display_path(path))
        try:
            loaded.append(load_request(tid, path))
        except RequestFileError as exc:
            log.error("tid: %d cannot load %s: %s", tid, display_path(path), exc)
            outcomes.append(
                Outcome(tid=tid, path=path, expected="a valid request file", got=str(exc))
            )
    log.info("%d requests loaded", len(loaded))
    if not paths:
        log.error("no request files match %s in %s", args.glob, display_path(Path(args.dir)))
        return 1

    if args.concurrent and loaded:
        log.info("Running tests concurrently")
        with ThreadPoolExecutor(max_workers=len(loaded)) as pool:
            outcomes += pool.map(lambda r: run_one(r, base_url, args.timeout), loaded)
    else:
        log.info("Running tests")
        outcomes += [run_one(r, base_url, args.timeout) for r in loaded]

    outcomes.sort(key=lambda o: o.tid)
    failed = [o for o in outcomes if not o.passed]
    for o in failed:
        notes = "".join(f" ({note})" for note in o.notes)
        log.error(
            "FAILED %s: expected: %s got: %s%s",
            display_path(o.path),
            o.expected,
            o.got,
            notes,
        )
    log.info("%d passed, %d failed", len(outcomes) - len(failed), len(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
