"""The state of a running simulator, which its handler threads share: its
rules, its modes, and what it has received and answered."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Final

from imagecache.simulator.modes import Clock, Outage, RateLimit, Refusal
from imagecache.simulator.rules import CHART, Rule

HISTORY_LENGTH: Final = 20


class State:
    """Everything the handler threads share; every access goes through ``lock``."""

    def __init__(
        self,
        email: str | None,
        token: str | None,
        delay: float,
        verbose: bool,
        clock: Clock = time.monotonic,
    ):
        self.email = email
        self.token = token
        self.delay = delay
        self.verbose = verbose
        self.clock = clock
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.rules: list[Rule] = []
        self.rate_limit: RateLimit | None = None
        self.outage: Outage | None = None
        self.total = 0
        self.by_query: dict[str, int] = {}
        self.by_status: dict[str, int] = {}
        self.rate_limited = 0
        self.outage_failures = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.last_bodies: deque[str] = deque(maxlen=HISTORY_LENGTH)
        self.last_headers: deque[dict[str, str]] = deque(maxlen=HISTORY_LENGTH)
        # query/url calls, counted apart from the charts'.
        self.links = _Links()

    def add_rule(self, rule: Rule) -> int:
        with self.lock:
            self.rules.append(rule)
            return len(self.rules)

    def reset(self) -> None:
        """Back to the start: no rules, no modes, no counts."""
        with self.lock:
            self.rules.clear()
            self.rate_limit = None
            self.outage = None
            self.total = 0
            self.by_query.clear()
            self.by_status.clear()
            self.rate_limited = 0
            self.outage_failures = 0
            # Calls still running will leave later, so in_flight must stay truthful.
            self.max_in_flight = self.in_flight
            self.last_bodies.clear()
            self.last_headers.clear()
            self.links = _Links()

    def calls(self) -> dict[str, Any]:
        with self.lock:
            return {
                "total": self.total,
                "by_query": dict(self.by_query),
                "by_status": dict(self.by_status),
                "rate_limited": self.rate_limited,
                "outage_failures": self.outage_failures,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "last_bodies": list(self.last_bodies),
                "last_headers": [dict(headers) for headers in self.last_headers],
                "links": self.links.as_dict(),
            }

    def arrive(self, key: str, body: str, headers: dict[str, str], method: str = CHART) -> None:
        with self.lock:
            if method != CHART:
                self.links.arrive(key, body)
                return
            self.total += 1
            self.by_query[key] = self.by_query.get(key, 0) + 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.last_bodies.append(body)
            self.last_headers.append(headers)

    def leave(self, method: str = CHART) -> None:
        if method == CHART:
            with self.lock:
                self.in_flight -= 1

    def answered(self, status: int, method: str = CHART) -> None:
        """Count an answer by its status."""
        with self.lock:
            counts = self.by_status if method == CHART else self.links.by_status
            counts[str(status)] = counts.get(str(status), 0) + 1

    def take_rule(self, body: str, method: str = CHART) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if rule.method != method or rule.times == 0:
                    continue
                if rule.match is not None and rule.match not in body:
                    continue
                if rule.times is not None:
                    rule.times -= 1
                return rule
        return None

    # ------------------------------------------------------------------ modes

    def set_rate_limit(self, data: Mapping[str, Any] | None) -> None:
        """Set the rate limit (a mapping of `RateLimit` fields; RuleError if bad),
        or clear it (None). A limit set in place of another keeps its window:
        the calls already accepted still count."""
        rate_limit = None if data is None else RateLimit.from_mapping(data)
        with self.lock:
            if rate_limit is not None and self.rate_limit is not None:
                rate_limit.accepted = self.rate_limit.accepted
            self.rate_limit = rate_limit

    def rate_limit_dict(self) -> dict[str, Any] | None:
        with self.lock:
            return None if self.rate_limit is None else self.rate_limit.to_dict()

    def set_outage(self, data: Mapping[str, Any] | None) -> None:
        """Start an outage now (a mapping of `Outage` fields; RuleError if bad),
        or end it (None)."""
        with self.lock:
            self.outage = None if data is None else Outage.from_mapping(data, self.clock())

    def outage_dict(self) -> dict[str, Any] | None:
        with self.lock:
            now = self.clock()
            if self.outage is None or now >= self.outage.ends_at:
                self.outage = None
                return None
            return self.outage.to_dict(now)

    def admit(self, credentials: tuple[str, str]) -> Refusal | None:
        """What the modes answer to a call instead of Kentik, if anything.

        An outage answers every call. Its calls still count against the rate
        limit while it has room, as Kentik's limiter, at its edge, lets them
        through to a backend that fails: a client that retries through an
        outage finds its budget spent when Kentik is back.
        """
        with self.lock:
            now = self.clock()
            if self.outage is not None and now >= self.outage.ends_at:
                self.outage = None
            if self.outage is not None:
                if self.rate_limit is not None:
                    self.rate_limit.admit(credentials, now)
                self.outage_failures += 1
                return self.outage.refusal()
            if self.rate_limit is not None:
                refusal = self.rate_limit.admit(credentials, now)
                if refusal is not None:
                    self.rate_limited += 1
                return refusal
            return None


class _Links:
    """What the simulator has received on query/url and answered (under State.lock)."""

    def __init__(self) -> None:
        self.total = 0
        self.by_query: dict[str, int] = {}
        self.by_status: dict[str, int] = {}
        self.last_bodies: deque[str] = deque(maxlen=HISTORY_LENGTH)

    def arrive(self, key: str, body: str) -> None:
        self.total += 1
        self.by_query[key] = self.by_query.get(key, 0) + 1
        self.last_bodies.append(body)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_query": dict(self.by_query),
            "by_status": dict(self.by_status),
            "last_bodies": list(self.last_bodies),
        }
