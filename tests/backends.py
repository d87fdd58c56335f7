"""PostgreSQL and Redis for the tests: found at their standard ports, or the
test is skipped; with CI set, it fails instead, since CI must run them."""

import os
import socket
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    _require("PostgreSQL", POSTGRES_URL, 5432)


def require_redis() -> None:
    _require("Redis", REDIS_URL, 6379)


def _require(name: str, url: str, port: int) -> None:
    if _answers(url, port):
        return
    message = f"{name} does not answer at {url}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}, and CI must run this test")
    pytest.skip(message)


def create_database() -> str:
    """A new, empty PostgreSQL database; its URL."""
    import psycopg

    name = f"imagecache_e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_conninfo(POSTGRES_URL), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _with_path(POSTGRES_URL, name)


def drop_database(url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(_conninfo(POSTGRES_URL), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def connections_end(name: str) -> int:
    """End every connection to the database `name` (but this one), as a
    restart of PostgreSQL does; how many there were."""
    import psycopg

    with psycopg.connect(_conninfo(POSTGRES_URL), autocommit=True) as conn:
        ended = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        ).fetchall()
    return len(ended)


def redis_namespace() -> str:
    """A django-q2 cluster name of its own, so that services sharing one Redis
    do not take each other's tasks."""
    return f"e2e{uuid.uuid4().hex[:10]}"


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{path}", parts.query, ""))


def _conninfo(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


def require_production_profile() -> None:
    """For tests that need PostgreSQL and Redis themselves: they run once, in
    the production profile, rather than twice."""
    if not profile_is_production():
        pytest.skip("runs in the production profile (PostgreSQL + Redis)")
    require_postgres()
    require_redis()


def profile_is_production() -> bool:
    """Whether the suite runs on PostgreSQL + Redis (`make test-production`)."""
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


def ensure_database(url: str) -> None:
    """Create the database of a PostgreSQL URL if it does not exist."""
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(_conninfo(POSTGRES_URL), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


if __name__ == "__main__":
    # `python -m tests.backends DATABASE_URL REDIS_URL`: exit 1 if either does
    # not answer; otherwise create the database if needed.
    import sys

    database_url, redis_url = sys.argv[1:3]
    if not (_answers(database_url, 5432) and _answers(redis_url, 6379)):
        sys.exit(1)
    ensure_database(database_url)
