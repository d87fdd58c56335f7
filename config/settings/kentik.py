"""Kentik: the credentials, the API's address, and how calls are made,
retried and bounded across the deployment.
"""

from django.core.exceptions import ImproperlyConfigured

from .inputs import SECRETS_FROM_FILES, env_number, env_str

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

# Kentik calls in flight at once, across every worker of the deployment.
KENTIK_MAX_CONCURRENCY = env_number("KENTIK_MAX_CONCURRENCY", 4, minimum=1, integer=True)
