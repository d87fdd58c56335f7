"""Charts by URL (GET /charts/{slug}.{ext}): keeping their images warm, the
keys that sign their URLs, the service's public URL, and whether ad-hoc
queries are served too.
"""

from django.core.exceptions import ImproperlyConfigured

from .inputs import SECRETS_FROM_FILES, env_number, env_str

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
