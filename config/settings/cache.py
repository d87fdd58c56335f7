"""The cache's behaviour: entries' lifetimes, reuse of a fetch, stale answers,
the wait for an image, maintenance and eviction, and the fast path.
"""

from django.core.exceptions import ImproperlyConfigured

from .inputs import _read, env, env_number
from .kentik import KENTIK_API_RETRIES, KENTIK_API_TIMEOUT

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

# Bytes of images kept at most (0: no bound). Past it, the least recently
# read images go until the total is under 90% of it.
CACHE_MAX_BYTES = env_number("CACHE_MAX_BYTES", 0, integer=True)
# A read is recorded at most this often per image, so reads cost no write each.
READ_MARK_INTERVAL = env_number("READ_MARK_INTERVAL", 60, integer=True)
# Files under CACHE_PATH that no row needs (left by a crash) are removed once
# they are this old; younger ones may be a fetch about to be marked ready.
STRAY_FILE_AGE = env_number("STRAY_FILE_AGE", 600, integer=True)

# Answer ready images from per-entry links before Django runs (filesystem
# storage only; see imagecache/api/fastpath.py).
FAST_PATH = _read(env.bool, "FAST_PATH", default=True)
