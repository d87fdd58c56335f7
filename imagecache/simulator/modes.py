"""The simulator's two modes, which hold for every call (topXchart and
query/url alike) while they are set: Kentik's rate limit (N calls per minute
per credentials, in one window for both methods, 429 past it) and an outage
(every call fails with one status until it ends by itself).

The clock is the simulator's own (`time.monotonic` unless a test gives
another), so that a test moves time instead of sleeping.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from imagecache.simulator.rules import RuleError, header_value

# The sliding window of the rate limit, in seconds: "per minute".
RATE_WINDOW_SECONDS: Final = 60.0
# No outage outlasts a day: a bound that keeps the end time a plain float.
MAX_OUTAGE_SECONDS: Final = 86400.0

_RATE_LIMIT_FIELDS: Final = frozenset({"calls_per_minute"})
_OUTAGE_FIELDS: Final = frozenset({"seconds", "status", "retry_after", "message"})

Clock = Callable[[], float]


def _refuse_unknown(data: Mapping[str, Any], known: frozenset[str], what: str) -> None:
    unknown = sorted(str(name) for name in set(data) - known)
    if unknown:
        raise RuleError(f"Unknown {what} field(s): {', '.join(unknown)}")


@dataclass
class Refusal:
    """An answer a mode gives instead of Kentik's own."""

    status: int
    message: str
    retry_after: str | None


@dataclass
class RateLimit:
    """At most ``calls_per_minute`` accepted calls per credentials in any 60 s.

    A call it refuses is not accepted, so it does not count: a client that keeps
    calling while refused still gets through once its older calls leave the
    window. Its window starts empty when it is set where none was.
    """

    calls_per_minute: int
    # Per credentials, the clock times of the calls accepted in the window, oldest first.
    accepted: dict[tuple[str, str], deque[float]] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> RateLimit:
        """Check a rate limit as given over HTTP or as keyword arguments; RuleError if bad."""
        _refuse_unknown(data, _RATE_LIMIT_FIELDS, "rate limit")
        calls = data.get("calls_per_minute")
        if isinstance(calls, bool) or not isinstance(calls, int) or not 1 <= calls <= 1_000_000:
            raise RuleError("'calls_per_minute' must be an integer from 1 to 1000000")
        return cls(calls)

    def admit(self, credentials: tuple[str, str], now: float) -> Refusal | None:
        """Count the call if the window has room; otherwise the 429 to answer."""
        horizon = now - RATE_WINDOW_SECONDS
        for key in list(self.accepted):
            times = self.accepted[key]
            while times and times[0] <= horizon:
                times.popleft()
            if not times:
                # Forgotten once empty, so that many credentials cannot pile up.
                del self.accepted[key]
        times = self.accepted.setdefault(credentials, deque())
        if len(times) < self.calls_per_minute:
            times.append(now)
            return None
        # The call that must leave for one more to fit (more than one when the
        # limit was lowered below what the window already holds).
        leaving = times[len(times) - self.calls_per_minute]
        wait = max(1, math.ceil(leaving + RATE_WINDOW_SECONDS - now))
        message = (
            f"Too Many Requests: rate limit of {self.calls_per_minute} calls per minute "
            f"exceeded; retry in {wait} s"
        )
        return Refusal(429, message, str(wait))

    def to_dict(self) -> dict[str, Any]:
        return {"calls_per_minute": self.calls_per_minute}


@dataclass
class Outage:
    """Every call answered with ``status`` until ``ends_at`` (clock time)."""

    status: int
    seconds: float
    retry_after: str | None
    message: str
    ends_at: float = 0.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], now: float) -> Outage:
        """Check an outage as given over HTTP or as keyword arguments; RuleError if bad."""
        _refuse_unknown(data, _OUTAGE_FIELDS, "outage")
        seconds = data.get("seconds")
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or not 0 < seconds <= MAX_OUTAGE_SECONDS
        ):
            raise RuleError("'seconds' must be a number of seconds > 0 and <= 86400")
        status = data.get("status", 503)
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise RuleError("'status' must be an HTTP error status between 400 and 599")
        retry_after = data.get("retry_after")
        if retry_after is not None:
            if isinstance(retry_after, bool) or not isinstance(retry_after, str | int | float):
                raise RuleError("'retry_after' must be a string, a number or null")
            retry_after = header_value("retry_after", str(retry_after))
        message = data.get("message")
        if message is None:
            message = f"Simulated outage: every call answers {status}"
        elif not isinstance(message, str):
            raise RuleError("'message' must be a string or null")
        return cls(status, float(seconds), retry_after, message, now + float(seconds))

    def refusal(self) -> Refusal:
        return Refusal(self.status, self.message, self.retry_after)

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "status": self.status,
            "seconds": self.seconds,
            "seconds_left": round(max(0.0, self.ends_at - now), 3),
            "retry_after": self.retry_after,
            "message": self.message,
        }
