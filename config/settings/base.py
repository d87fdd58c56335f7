"""Settings shared by every profile, read from the environment or `.env`.

A wrong value stops start-up with ImproperlyConfigured naming the variable.
A profile gives its own inputs first (`inputs.INPUTS`): everything here is
derived once, from them and the environment.

Long, and most of it comments: each setting says what it is for
where it is defined, and the settings derived from one another stay in one
file, in the order they are derived.
"""

import hashlib
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

from imagecache.wake import MAX_DIRECTORY
from imagecache.wire import BODY_LIMIT

from .inputs import INPUTS

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _read(cast: Callable[..., Any], name: str, **kwargs: Any) -> Any:
    try:
        return cast(name, **kwargs)
    except ImproperlyConfigured:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise ImproperlyConfigured(f"{name} has an invalid value: {exc}") from None


def env_number(name: str, default: float, *, minimum: float = 0, integer: bool = False) -> Any:
    """A number from the environment, at least `minimum`."""
    value = _read(env.int if integer else env.float, name, default=default)
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    return value


# What a yes/no variable may say; anything else is a mistake, not a "no".
FLAG_VALUES = {"true": True, "yes": True, "on": True, "1": True}
FLAG_VALUES |= {"false": False, "no": False, "off": False, "0": False}


def env_flag(name: str, default: bool) -> bool:
    """A yes or no from the environment (true/false, yes/no, on/off, 1/0)."""
    raw = env_str(name, "").strip().lower()
    if not raw:
        return default
    if raw not in FLAG_VALUES:
        raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")
    return FLAG_VALUES[raw]


def env_str(name: str, default: str | None = None) -> str:
    """A string from the environment; without a default it is required."""
    if default is None:
        value = _read(env.str, name)
    else:
        value = _read(env.str, name, default=default)
    return str(value)


# Secrets may come from files instead (Docker's and Kubernetes' secrets):
# NAME_FILE names a file whose content, less its trailing newline, is NAME.
SECRET_FILE_VARIABLES = ("KT_AUTH_TOKEN", "SECRET_KEY", "DATABASE_URL", "CHART_URL_KEYS")


def env_secret_file(name: str) -> str | None:
    """The content of the file that `name`_FILE names, if it is set; setting
    both `name` and `name`_FILE is an error, and so is a file that cannot be
    read or is empty. Read here, not put into the environment: the processes
    `manage.py serve` starts read the file themselves."""
    file_variable = f"{name}_FILE"
    path = env_str(file_variable, "")
    if not path:
        return None
    if name in env:
        raise ImproperlyConfigured(f"{name} and {file_variable} are both set: set one of them")
    try:
        value = Path(path).read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise ImproperlyConfigured(f"{file_variable}: {path} cannot be read ({reason})") from None
    if not value:
        raise ImproperlyConfigured(f"{file_variable}: {path} is empty")
    return value


SECRETS_FROM_FILES = {
    name: value for name in SECRET_FILE_VARIABLES if (value := env_secret_file(name)) is not None
}

DEBUG = _read(env.bool, "DEBUG", default=False)
SECRET_KEY = SECRETS_FROM_FILES.get("SECRET_KEY") or env_str("SECRET_KEY", "")
ALLOWED_HOSTS: list[str] = _read(env.list, "ALLOWED_HOSTS", default=[])

# Behind a TLS proxy: trust its headers only when told to.
CSRF_TRUSTED_ORIGINS: list[str] = _read(env.list, "CSRF_TRUSTED_ORIGINS", default=[])
USE_X_FORWARDED_HOST = _read(env.bool, "USE_X_FORWARDED_HOST", default=False)
_proxy_ssl_header = _read(env.list, "SECURE_PROXY_SSL_HEADER", default=[])
SECURE_PROXY_SSL_HEADER: tuple[str, str] | None = None
if _proxy_ssl_header:
    if len(_proxy_ssl_header) != 2:
        raise ImproperlyConfigured(
            "SECURE_PROXY_SSL_HEADER must be a header and a value, "
            "e.g. HTTP_X_FORWARDED_PROTO,https"
        )
    SECURE_PROXY_SSL_HEADER = (_proxy_ssl_header[0], _proxy_ssl_header[1])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    # Tokens of the tools that write saved charts (PUT/DELETE /charts/{slug}).
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "imagecache",
]

MIDDLEWARE = [
    # Outermost: a log line and a count for every request, timed end to end.
    "imagecache.ops.log.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Sign-in through the proxy in front: the name of the request header in which
# it passes the signed-in user (e.g. X-Forwarded-User). Off (empty) by
# default; set it only when the proxy strips that header from what clients
# send (see imagecache/admin/signin.py).
REMOTE_USER_HEADER = env_str("REMOTE_USER_HEADER", "")
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]


def with_proxy_sign_in(middleware: list[str], backends: list[str]) -> tuple[list[str], list[str]]:
    """`middleware` with the proxy's sign-in after Django's authentication, and
    `backends` with Django's RemoteUserBackend (a subclass) first. Passwords still work (a
    superuser made with createsuperuser, for when the proxy is down)."""
    at = middleware.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1
    return (
        [*middleware[:at], "imagecache.admin.signin.ProxyUserMiddleware", *middleware[at:]],
        ["imagecache.admin.signin.ProxyUserBackend", *backends],
    )


if REMOTE_USER_HEADER:
    # A token of letters, digits and dashes: WSGI turns both `-` and `_` into
    # `_`, so a name with an underscore would be ambiguous.
    if not re.fullmatch(r"[A-Za-z0-9]+(-[A-Za-z0-9]+)*", REMOTE_USER_HEADER):
        raise ImproperlyConfigured(
            "REMOTE_USER_HEADER must be a header name of letters, digits and dashes, "
            f"e.g. X-Forwarded-User, not {REMOTE_USER_HEADER!r}"
        )
    MIDDLEWARE, AUTHENTICATION_BACKENDS = with_proxy_sign_in(MIDDLEWARE, AUTHENTICATION_BACKENDS)

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Cache storage -----------------------------------------------------------

CACHE_PATH = Path(
    INPUTS.get("CACHE_PATH") or env_str("CACHE_PATH", str(BASE_DIR / "var" / "cache"))
).resolve()

# --- Database ----------------------------------------------------------------

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

# --- Kentik ------------------------------------------------------------------

KT_AUTH_EMAIL = env_str("KT_AUTH_EMAIL", "")
KT_AUTH_TOKEN = SECRETS_FROM_FILES.get("KT_AUTH_TOKEN") or env_str("KT_AUTH_TOKEN", "")
KENTIK_API_URL = env_str("KENTIK_API_URL", "https://api.kentik.com/api/v5").rstrip("/")
if not KENTIK_API_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"KENTIK_API_URL must be an http(s) URL, not {KENTIK_API_URL!r}")
KENTIK_API_RETRIES = env_number("KENTIK_API_RETRIES", 3, integer=True)
# One deadline per attempt for the whole answer: connect, headers and body.
KENTIK_API_TIMEOUT = env_number("KENTIK_API_TIMEOUT", 60.0, minimum=0.1)
# The largest answer read from Kentik, in bytes; past it the attempt is a 502
# (a real chart's answer is 80 to 200 KB).
KENTIK_MAX_BYTES = env_number("KENTIK_MAX_BYTES", 64 * 1024 * 1024, minimum=1024, integer=True)
# The longest Retry-After we sleep on between two attempts, so that one fetch
# cannot hold a worker for an hour.
KENTIK_RETRY_AFTER_MAX = env_number("KENTIK_RETRY_AFTER_MAX", 30.0)
# Without Retry-After, attempt n waits KENTIK_API_BACKOFF * 2^(n-1) seconds
# (urllib3's exponential backoff; the first wait is never 0).
KENTIK_API_BACKOFF = env_number("KENTIK_API_BACKOFF", 1.0)

# Kentik calls (each attempt, retries included) per minute across every
# worker of the deployment; 0: no limit. Never more in any 60 s window: a
# sliding window stays under every kind of limiter, where a token bucket whose
# burst is the limit could send twice the limit within one minute. Counted in
# the database, in the transaction that already serializes claims (see
# imagecache/services/shield.py).
KENTIK_RATE_LIMIT = env_number("KENTIK_RATE_LIMIT", 0, integer=True)

# --- Cache behaviour ---------------------------------------------------------

DEFAULT_TTL = env_number("DEFAULT_TTL", 300, minimum=1, integer=True)
MAX_TTL = env_number("MAX_TTL", 30 * 24 * 3600, minimum=1, integer=True)
REUSE_MAX_AGE = env_number("REUSE_MAX_AGE", 60, integer=True)
# A fetch that failed for a transient cause (429, 5xx, timeout, Kentik
# unreachable, or still waiting for the budget when its client's wait ran out)
# is answered with the newest ready image of the same query that finished
# within this many seconds: 200, with Age and X-Image-Stale. An hour: rate
# limits and Kentik outages last minutes, and an hour-old traffic chart still
# shows the shape of the day, where an error shows nothing; the headers let a
# dashboard say it is stale. 0: never.
STALE_IF_ERROR = env_number("STALE_IF_ERROR", 3600, integer=True)
# When a POST reuses a ready image older than this share of REUSE_MAX_AGE,
# one refresh of the query starts in the background, last in line and within
# the budget: the next POST past REUSE_MAX_AGE finds a fresh image. 0: never.
REFRESH_AHEAD = env_number("REFRESH_AHEAD", 0.8)
if REFRESH_AHEAD >= 1:
    raise ImproperlyConfigured(f"REFRESH_AHEAD must be a share below 1, not {REFRESH_AHEAD}")
# Identical POSTs of a query that Kentik refused as bad (400) within this
# many seconds share the failed fetch: no new Kentik call. 0: never.
NEGATIVE_TTL = env_number("NEGATIVE_TTL", 60, integer=True)
ENTRY_WAIT_TIMEOUT = env_number(
    "ENTRY_WAIT_TIMEOUT", KENTIK_API_RETRIES * KENTIK_API_TIMEOUT + 5, minimum=0
)
CACHE_MAINTENANCE_PERIOD = env_number("CACHE_MAINTENANCE_PERIOD", 60, minimum=1, integer=True)

# --- Charts by URL (GET /charts/{slug}.{ext}) ---------------------------------

# A chart image viewed within this many seconds is refreshed by the workers as
# it reaches its chart's max_age, so that its viewers never wait; one nobody
# views costs no Kentik call. 0: never kept warm (refreshed only when viewed).
CHART_KEEP_WARM = env_number("CHART_KEEP_WARM", 600, integer=True)
# At most this many value sets (and formats) of one chart are kept warm, the
# most recently viewed first: a chart with a parameter cannot make the
# workers refresh every device a crawler ever asked for.
CHART_WARM_MAX = env_number("CHART_WARM_MAX", 20, minimum=1, integer=True)


def chart_url_keys(raw: str) -> list[bytes]:
    """CHART_URL_KEYS: secrets, comma-separated; the first signs, all verify."""
    keys = [key.strip() for key in raw.split(",")]
    if raw.strip() and (not all(keys) or any(len(key) < 16 for key in keys)):
        raise ImproperlyConfigured(
            "CHART_URL_KEYS must be comma-separated secrets of at least 16 characters each"
        )
    return [key.encode() for key in keys if key]


CHART_URL_KEYS = chart_url_keys(
    SECRETS_FROM_FILES.get("CHART_URL_KEYS") or env_str("CHART_URL_KEYS", "")
)
# The base of the URLs the service prints (signed chart URLs): how clients reach it.
PUBLIC_URL = env_str("PUBLIC_URL", "http://localhost:8000").rstrip("/")
if not PUBLIC_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"PUBLIC_URL must be an http(s) URL, not {PUBLIC_URL!r}")
# false: POST /requests is refused (403), and only saved charts are served.
_adhoc = env_str("ADHOC_QUERIES", "true").strip().lower()
if _adhoc not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
    raise ImproperlyConfigured(f"ADHOC_QUERIES must be true or false, not {_adhoc!r}")
ADHOC_QUERIES = _adhoc in ("true", "1", "yes", "on")
# Answer ready images from per-entry links before Django runs (filesystem
# storage only; see imagecache/api/fastpath.py).
FAST_PATH = _read(env.bool, "FAST_PATH", default=True)
# /readyz answers within this many seconds: a check still running by then fails.
READYZ_TIMEOUT = env_number("READYZ_TIMEOUT", 5.0, minimum=0.1)
# `manage.py serve --worker` (the image's `worker` role) serves its workers'
# metrics on this port, 0: not at all (the web's /metrics cannot read them
# from another container).
WORKER_METRICS_PORT = env_number("WORKER_METRICS_PORT", 0, integer=True)
# How often the per-process waiter looks at the pending fetches it watches
# without a notification; with one (PostgreSQL NOTIFY, or the wake-up sockets
# on SQLite) it looks at once and polls only every max(this, 1 s).
WAITER_POLL_INTERVAL = env_number("WAITER_POLL_INTERVAL", 0.02, minimum=0.001)

# A worker holds a fetch for this long and renews it every third of it; a
# fetch whose lease ran out is taken over by the reaper.
FETCH_LEASE = env_number("FETCH_LEASE", 15.0, minimum=1)
# After this many claims (workers that died or timed out on it), a fetch is
# recorded as failed instead of being tried again: a poisoned query must not
# cycle through the workers forever.
FETCH_MAX_ATTEMPTS = env_number("FETCH_MAX_ATTEMPTS", 3, minimum=1, integer=True)
# Kentik calls in flight at once, across every worker of the deployment.
KENTIK_MAX_CONCURRENCY = env_number("KENTIK_MAX_CONCURRENCY", 4, minimum=1, integer=True)
# Bytes of images kept at most (0: no bound). Past it, the least recently
# read images go until the total is under 90% of it.
CACHE_MAX_BYTES = env_number("CACHE_MAX_BYTES", 0, integer=True)
# A read is recorded at most this often per image, so reads cost no write each.
READ_MARK_INTERVAL = env_number("READ_MARK_INTERVAL", 60, integer=True)
# Files under CACHE_PATH that no row needs (left by a crash) are removed once
# they are this old; younger ones may be a fetch about to be marked ready.
STRAY_FILE_AGE = env_number("STRAY_FILE_AGE", 600, integer=True)

# An image Kentik has answered is recorded for this long while the database
# does not answer (an outage, a failover), rather than asked of Kentik again.
FETCH_RECORD_PATIENCE = env_number("FETCH_RECORD_PATIENCE", 60, minimum=0)

# A queue worker writes its heartbeat (WorkerHeartbeat) this often; /readyz
# counts a worker whose last one is younger than 5 of these.
WORKER_HEARTBEAT_INTERVAL = env_number("WORKER_HEARTBEAT_INTERVAL", 1.0, minimum=0.1)

# How often a process enqueues again the fetches whose enqueue the broker
# refused (it was down), until it takes them.
ENQUEUE_RETRY_INTERVAL = env_number("ENQUEUE_RETRY_INTERVAL", 2.0, minimum=0.01)

# How long a fetch task waits for one of the KENTIK_MAX_CONCURRENCY slots
# before it leaves the fetch pending for the reaper to enqueue again.
KENTIK_SLOT_WAIT = 60

# The longest one fetch task may take: a wait for a slot, every attempt timing
# out with the longest sleep between attempts, plus room to store the image
# and to wait for the database to record it.
FETCH_TASK_TIMEOUT = int(
    KENTIK_SLOT_WAIT
    + (KENTIK_API_RETRIES + 1) * KENTIK_API_TIMEOUT
    + KENTIK_API_RETRIES * KENTIK_RETRY_AFTER_MAX
    + FETCH_RECORD_PATIENCE
    + 30
)

# Where the images go: a directory (CACHE_PATH, which may be a network file
# system shared by several hosts) or S3-compatible object storage.
STORAGE_BACKEND = INPUTS.get("STORAGE_BACKEND") or env_str("STORAGE_BACKEND", "filesystem")
if STORAGE_BACKEND == "filesystem":
    IMAGE_STORAGE: dict[str, Any] = {
        "BACKEND": "imagecache.files.storage.AtomicFileSystemStorage",
        "OPTIONS": {"location": str(CACHE_PATH), "base_url": None},
    }
elif STORAGE_BACKEND == "s3":
    IMAGE_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env_str("AWS_STORAGE_BUCKET_NAME"),
            "endpoint_url": env_str("AWS_S3_ENDPOINT_URL", "") or None,
            "region_name": env_str("AWS_S3_REGION_NAME", "") or None,
            "access_key": env_str("AWS_ACCESS_KEY_ID", "") or None,
            "secret_key": env_str("AWS_SECRET_ACCESS_KEY", "") or None,
            "location": env_str("AWS_LOCATION", ""),
            "default_acl": None,
            "querystring_auth": False,
            # Names are unique per fetch; an existing one is never overwritten.
            "file_overwrite": False,
        },
    }
else:
    raise ImproperlyConfigured(f"STORAGE_BACKEND must be filesystem or s3, not {STORAGE_BACKEND!r}")
# With a prefix (e.g. /protected-images/), ready images on the file system
# are answered with an empty body and `X-Accel-Redirect: <prefix><file name>`,
# and a fronting nginx sends the bytes from an `internal` location aliased to
# CACHE_PATH. Empty: the service sends the bytes itself.
X_ACCEL_REDIRECT_PREFIX = env_str("X_ACCEL_REDIRECT_PREFIX", "")
if X_ACCEL_REDIRECT_PREFIX:
    if not X_ACCEL_REDIRECT_PREFIX.startswith("/"):
        raise ImproperlyConfigured(
            "X_ACCEL_REDIRECT_PREFIX must be a path starting with /, "
            f"not {X_ACCEL_REDIRECT_PREFIX!r}"
        )
    X_ACCEL_REDIRECT_PREFIX = X_ACCEL_REDIRECT_PREFIX.rstrip("/") + "/"

# The local and test profiles serve static files from the apps: no
# collectstatic needed.
STATIC_FROM_APPS = bool(INPUTS.get("STATIC_FROM_APPS"))
STORAGES = {
    "default": IMAGE_STORAGE,
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if STATIC_FROM_APPS
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- django-q2 ---------------------------------------------------------------

# Redis as django-q2's broker when REDIS_URL is set; else the database (ORM).
REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured("REDIS_URL must be a redis://, rediss:// or unix:// URL")
Q_BROKER: dict[str, Any] = {"redis": REDIS_URL} if REDIS_URL else {"orm": "default"}

Q_BROKER_CLASS = {} if REDIS_URL else {"broker_class": "imagecache.brokers.WakingORM"}

Q_CLUSTER = {
    # Deployments that share one Redis need names of their own.
    "name": env_str("Q_NAME", "imagecache"),
    # Fetch tasks mostly wait on Kentik, so more than one per core; as many as
    # KENTIK_MAX_CONCURRENCY calls can be in flight. Forked from one process,
    # each costs about 4 MiB of its own.
    "workers": env_number("Q_WORKERS", 4, minimum=1, integer=True),
    **Q_BROKER,
    # The ORM broker woken by each enqueue on this host (imagecache/brokers.py).
    **Q_BROKER_CLASS,
    # How long an idle ORM broker waits between polls when no enqueue wakes it
    # (one from another host): the pickup delay of such a fetch.
    "poll": 0.02,
    "timeout": FETCH_TASK_TIMEOUT,
    # The broker hands a task out again only after `retry`: it must outlast
    # the task, or a slow fetch would run twice.
    "retry": FETCH_TASK_TIMEOUT + 60,
    "max_attempts": 3,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 1000,
    "label": "Task queue",
    # With the ORM broker, clusters report (for /readyz) through a cache that
    # every process can read; see CACHES below.
    **({} if REDIS_URL else {"cache": "django_q"}),
    # The test profile runs tasks in the process that enqueues them.
    **({"sync": True} if INPUTS.get("Q_SYNC") else {}),
}


# /readyz needs to know that a worker is alive. Every django-q2 cluster saves
# a report (its Stat) every half second, expiring after 3 s: with Redis in
# Redis, which every host sees; with the ORM broker in Django's cache, which
# is per process by default (LocMemCache), so the web would never see the
# worker. A database cache would need `createcachetable` on every deployment
# path and a write every half second on SQLite; files cost neither. With the
# ORM broker the reports go to a directory named after the database: beside
# the SQLite file (`<file>-q-stats`), or in the temp directory for another
# database, so that the processes of one host and one database see each
# other's, and no other deployment's. Use Redis when the workers run on other
# hosts (or containers) than the web.
def cluster_stats_cache(database: dict[str, Any]) -> dict[str, Any]:
    """Django's cache for the cluster reports of the ORM broker on `database`."""
    if database["ENGINE"] == "django.db.backends.sqlite3":
        path = Path(f"{database['NAME']}-q-stats").resolve()
    else:
        identity = "|".join(str(database.get(key, "")) for key in ("HOST", "PORT", "NAME"))
        path = Path(tempfile.gettempdir()) / (
            "imagecache-q-stats-" + hashlib.sha256(identity.encode()).hexdigest()[:16]
        )
    return {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(path),
        "TIMEOUT": None,
    }


CACHES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}
if not REDIS_URL:
    CACHES["django_q"] = cluster_stats_cache(DATABASES["default"])


# The wake-up sockets of this host's processes (imagecache/wake.py): the ORM
# broker's pusher is woken by an enqueue, and on SQLite each web process's
# waiter by a fetch that left flight. A directory per database: beside the
# SQLite file (processes that share the file share it, containers too), or
# in the temp directory when that path is too long for a socket's name.
def wake_directory(database: dict[str, Any]) -> Path:
    """The directory of the wake-up sockets of the processes using `database`."""
    if database["ENGINE"] == "django.db.backends.sqlite3":
        beside = Path(f"{database['NAME']}-wake").resolve()
        if len(str(beside)) <= MAX_DIRECTORY:
            return beside
        identity = str(beside)
    else:
        identity = "|".join(str(database.get(key, "")) for key in ("HOST", "PORT", "NAME"))
    return Path(tempfile.gettempdir()) / (
        "imagecache-wake-" + hashlib.sha256(identity.encode()).hexdigest()[:16]
    )


WAKE_DIR = wake_directory(DATABASES["default"])

# --- Static files, i18n, logging ----------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT: Path | None = None if STATIC_FROM_APPS else BASE_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = STATIC_FROM_APPS
WHITENOISE_ROOT = BASE_DIR / "imagecache" / "root"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["imagecache.api.parsers.StrictJSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "imagecache.api.negotiation.JSONOnlyNegotiation",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "imagecache.api.exception_handlers.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Kentik Image Cache",
    "DESCRIPTION": (
        "Caches charts rendered by Kentik's `POST /api/v5/query/topXchart`. Post a query, "
        "get an image id at once, and fetch the image with it until it expires. Every error "
        'is JSON: `{"error": "<message>", "status": <code>}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}
# A request body larger than this is refused before it is parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = BODY_LIMIT

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
# `json`: one JSON object per line, with the extra fields of each record.
LOG_FORMAT = env_str("LOG_FORMAT", "plain").lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"},
        "json": {"()": "imagecache.ops.log.JSONFormatter"},
    },
    # On the handler, so that no record of any logger leaves with a credential.
    "filters": {
        "redact_secrets": {"()": "imagecache.ops.log.RedactSecrets"},
        "request_id": {"()": "imagecache.ops.request_ids.RequestIdFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id", "redact_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # urllib3 logs retried requests with their URL only; keep it quiet anyway.
        "urllib3": {"level": "WARNING"},
    },
}

# Errors to Sentry (imagecache/ops/sentry.py), for every process that loads
# the settings: web and worker. Off unless set; sentry-sdk is imported only then.
SENTRY_DSN = env_str("SENTRY_DSN", "")
if SENTRY_DSN:
    from imagecache.ops.sentry import sentry_init, url_secrets

    sentry_init(
        dsn=SENTRY_DSN,
        environment=env_str("SENTRY_ENVIRONMENT", "") or None,
        secrets=[
            KT_AUTH_TOKEN,
            KT_AUTH_EMAIL,
            SECRET_KEY,
            str(DATABASES["default"].get("PASSWORD") or ""),
            *url_secrets(SECRETS_FROM_FILES.get("DATABASE_URL") or env_str("DATABASE_URL", "")),
            *url_secrets(REDIS_URL),
        ],
    )
