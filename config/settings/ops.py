"""Health, logs and errors: /readyz's time limit, the log's level and format,
and Sentry.
"""

from django.core.exceptions import ImproperlyConfigured

from .database import DATABASES
from .inputs import SECRETS_FROM_FILES, env_number, env_str
from .kentik import KT_AUTH_EMAIL, KT_AUTH_TOKEN
from .web import SECRET_KEY
from .workers import REDIS_URL

# /readyz answers within this many seconds: a check still running by then fails.
READYZ_TIMEOUT = env_number("READYZ_TIMEOUT", 5.0, minimum=0.1)

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
