"""The database: the embedded SQLite one or PostgreSQL, with its connections
(a pool in web workers) and its commit durability.
"""

import environ
from django.core.exceptions import ImproperlyConfigured

from .inputs import BASE_DIR, INPUTS, SECRETS_FROM_FILES, _read, env, env_number, env_str
from .storage import CACHE_PATH

# Without DATABASE_URL, the embedded database: in var/ of the checkout, or
# beside the images when the profile says so (production: one volume).
EMBEDDED_DATABASE_DIR = CACHE_PATH if INPUTS.get("DATABASE_BESIDE_IMAGES") else BASE_DIR / "var"
if "DATABASE_URL" in SECRETS_FROM_FILES:
    # The URL is a secret: an error names the variable, never the URL.
    try:
        _database = environ.Env.db_url_config(SECRETS_FROM_FILES["DATABASE_URL"])
    except (ValueError, TypeError, KeyError):
        raise ImproperlyConfigured("DATABASE_URL_FILE: the file holds no valid URL") from None
else:
    if "DATABASE_URL" not in env:
        EMBEDDED_DATABASE_DIR.mkdir(parents=True, exist_ok=True)
    _database = _read(
        env.db_url, "DATABASE_URL", default=f"sqlite:///{EMBEDDED_DATABASE_DIR / 'db.sqlite3'}"
    )
DATABASES = {"default": _database}
SUPPORTED_DATABASES = ("django.db.backends.sqlite3", "django.db.backends.postgresql")
if DATABASES["default"].get("ENGINE") not in SUPPORTED_DATABASES:
    raise ImproperlyConfigured("DATABASE_URL must be a sqlite:// or postgres:// URL")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # Deferred transactions upgrade to write locks mid-way and fail with
        # "database is locked" under load (django-q2's monitor loses results);
        # IMMEDIATE takes the write lock up front and waits for it.
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        # WAL lets the waiter and the readers run while a worker writes.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Opening SQLite and setting its pragmas costs more than most requests:
    # keep each thread's connection.
    DATABASES["default"]["CONN_MAX_AGE"] = None
IS_POSTGRES = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
if IS_POSTGRES and _read(env.bool, "DJANGO_DB_POOL", default=False):
    # gunicorn sets DJANGO_DB_POOL for its workers (config/gunicorn.py): their
    # many threads share a bounded pool, so a thousand waiters never hold more
    # than DB_POOL_SIZE connections per process (PostgreSQL allows 100).
    # django-q2's forked workers keep plain connections: a pool must not
    # cross a fork.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Django's backend, with a pool that checks a connection before handing
    # it out: one PostgreSQL dropped (a restart) is replaced, not answered 503.
    DATABASES["default"]["ENGINE"] = "imagecache.postgresql_pool"
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env_number("DB_POOL_SIZE", 10, minimum=1, integer=True),
        "timeout": 30,
    }
elif IS_POSTGRES:
    DATABASES["default"]["CONN_MAX_AGE"] = 60
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if IS_POSTGRES:
    # A server that does not answer fails a new connection in 10 s, not
    # after the kernel's TCP timeouts (minutes).
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 10)
# `off`, as SQLite's synchronous=NORMAL above: a commit does not wait for the
# server's WAL flush (an fdatasync each), and a new fetch makes four or five
# commits before its waiters are answered. A crash of the PostgreSQL server
# (not of this service) can then lose the last fraction of a second of
# commits, never consistency: a cache entry or fetch state a client may have
# seen, which the reaper and the stray-file sweep put right. `on` for PostgreSQL's own default.
DB_SYNCHRONOUS_COMMIT = env_str("DB_SYNCHRONOUS_COMMIT", "off")
if DB_SYNCHRONOUS_COMMIT not in ("on", "off", "local", "remote_write", "remote_apply"):
    raise ImproperlyConfigured(
        "DB_SYNCHRONOUS_COMMIT must be on, off, local, remote_write or remote_apply, "
        f"not {DB_SYNCHRONOUS_COMMIT!r}"
    )
if IS_POSTGRES:
    DATABASES["default"]["OPTIONS"]["options"] = f"-c synchronous_commit={DB_SYNCHRONOUS_COMMIT}"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
