"""Runs the whole session with the clock moved ahead, to prove that no test
depends on the date: `TEST_CLOCK_AHEAD_DAYS=365 make test-unit`, which CI runs.

time-machine moves `time.time()`, `datetime.now()` and their kin for every
thread of the process, and a test's own `time_machine.travel` nests inside
it. Debian's faketime (libfaketime 0.9.10) is no use here: under it, Python's
timed waits on locks and futures hang or fail with EINVAL.
"""

import os
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

_DAYS = int(os.environ.get("TEST_CLOCK_AHEAD_DAYS") or 0)


def pytest_configure(config: pytest.Config) -> None:
    if _DAYS:
        # Kept for the whole process: never stopped, so no test sees today.
        config._clock_ahead = time_machine.travel(  # type: ignore[attr-defined]
            datetime.now(UTC) + timedelta(days=_DAYS), tick=True
        )
        config._clock_ahead.start()  # type: ignore[attr-defined]


def pytest_report_header() -> str:
    return f"clock: {_DAYS} days ahead of the wall clock" if _DAYS else "clock: the wall clock"
