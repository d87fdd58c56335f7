import shutil
import socket
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from django.conf import settings

from imagecache import kentik
from imagecache.simulator.server import KentikSimulator
from tests.harness.data import E2E_EMAIL, E2E_TOKEN, PNG

# TEST_CLOCK_AHEAD_DAYS moves the clock of the whole session (tests/clock.py).
pytest_plugins = ["tests.clock"]


@pytest.fixture(autouse=True)
def _clean_cache_path() -> Iterator[None]:
    yield
    shutil.rmtree(settings.CACHE_PATH, ignore_errors=True)
    settings.CACHE_PATH.mkdir(parents=True, exist_ok=True)


@pytest.fixture(autouse=True)
def _fresh_connectors() -> Iterator[None]:
    """The Kentik client is cached per settings; settings change per test."""
    kentik._connector.cache_clear()
    yield
    kentik._connector.cache_clear()


@pytest.fixture
def sim(settings: Any) -> Iterator[KentikSimulator]:
    """An in-process simulator that knows the test credentials, with the
    service's settings pointed at it and its timeouts made short."""
    settings.KENTIK_API_TIMEOUT = 0.5
    settings.KENTIK_API_RETRIES = 1
    settings.KENTIK_API_BACKOFF = 0.01
    settings.KENTIK_RETRY_AFTER_MAX = 0.2
    with KentikSimulator(email=settings.KT_AUTH_EMAIL, token=settings.KT_AUTH_TOKEN) as simulator:
        settings.KENTIK_API_URL = simulator.url
        yield simulator


@pytest.fixture(scope="module")
def simulator() -> Iterator[KentikSimulator]:
    """A simulator for the real processes of end-to-end tests."""
    with KentikSimulator(email=E2E_EMAIL, token=E2E_TOKEN) as sim:
        yield sim


@pytest.fixture
def fetch_chart() -> Iterator[mock.MagicMock]:
    """The Kentik seam, patched: unit tests only."""
    with mock.patch.object(kentik, "fetch_chart", autospec=True) as patched:
        patched.return_value = kentik.Chart(media_type="image/png", data=PNG)
        yield patched


@pytest.fixture(scope="session", autouse=True)
def _end_stray_connections(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Threads of the code under test (the waiter, the PostgreSQL listener) keep
    connections to the test database; end them so that it can be dropped."""
    yield
    from django.db import connection

    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair of sockets: the client's end, and the server's."""
    client, server = socket.socketpair()
    yield client, server
    client.close()
    server.close()
