"""The web workers' database pool (imagecache/postgresql_pool) after
PostgreSQL dropped its connections: each request is answered, none is 503."""

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import backends
from tests.harness.data import E2E_EMAIL, E2E_TOKEN, unique_query
from tests.harness.profiles import setup_and_run


@pytest.fixture
def own_database() -> Iterator[str]:
    backends.require_production_profile()
    url = backends.create_database()
    yield url
    backends.drop_database(url)


def requests_after_a_restart() -> None:
    """In a web worker's settings: fill the pool, end every connection of the
    database as a restart of PostgreSQL does, then POST and GET twice as many
    times as the pool holds connections. Prints what it saw, as JSON."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    call_command("migrate", verbosity=0)
    connection.close()
    size = settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"]
    # As many threads as the pool allows hold a connection at once: all idle after.
    together = threading.Barrier(size)

    def hold() -> None:
        connection.ensure_connection()
        together.wait()
        connection.close()

    threads = [threading.Thread(target=hold) for _ in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ended = backends.connections_end(settings.DATABASES["default"]["NAME"])
    client = Client()
    statuses = []
    for n in range(2 * size):
        posted = client.post(
            "/requests",
            {"api_query": unique_query(f"after a restart {n}")},
            content_type="application/json",
        )
        statuses.append(posted.status_code)
        if posted.status_code == 200:
            statuses.append(client.get(f"/image/{posted.json()['id']}?wait=0").status_code)
    print(json.dumps({"pool": size, "ended": ended, "statuses": statuses}))


def test_no_request_fails_after_postgresql_dropped_every_pooled_connection(
    own_database: str, tmp_path: Path
) -> None:
    result = setup_and_run(
        "config.settings.production",
        f"from {__name__} import requests_after_a_restart as run; run()",
        {
            # What gunicorn gives its workers (config/gunicorn.py), and the
            # production profile's other inputs; the pool's own settings are
            # the profile's defaults.
            "DJANGO_DB_POOL": "1",
            "DATABASE_URL": own_database,
            "REDIS_URL": os.environ.get("REDIS_URL", backends.REDIS_URL),
            "Q_NAME": backends.redis_namespace(),
            "SECRET_KEY": "s",
            "ALLOWED_HOSTS": "testserver",
            "CACHE_PATH": str(tmp_path),
            "KT_AUTH_EMAIL": E2E_EMAIL,
            "KT_AUTH_TOKEN": E2E_TOKEN,
        },
        dropped=frozenset({"DB_POOL_SIZE"}),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.splitlines()[-1])
    # Every connection of a full pool was ended, not just one.
    assert seen["ended"] >= seen["pool"], seen
    assert seen["statuses"] == [200, 202] * (2 * seen["pool"]), seen
