"""The entry id clients hold: `<query sha256 hex>_<expiry as unix epoch>`.

A leaf: it imports nothing of the app, so that the services that make ids,
the selectors and the fast path that match them, and the admin that shows
them all read this one definition.
"""

import re
from typing import Final

# Ids made before the expiry was rounded to the second have a fraction.
# The group is the expiry.
ENTRY_ID_PATTERN: Final = r"[0-9a-f]{64}_([0-9]{1,12}(?:\.[0-9]{1,9})?)"
ENTRY_ID_RE: Final = re.compile(f"^{ENTRY_ID_PATTERN}$")


def entry_id_make(*, query_key: str, expires_at: int) -> str:
    """The id of an entry of the query `query_key` that expires at `expires_at`."""
    return f"{query_key}_{expires_at}"


def entry_id_parts(entry_id: str) -> tuple[str, str]:
    """The query key and the expiry (as written) of a well-formed id."""
    query_key, _, expiry = entry_id.rpartition("_")
    return query_key, expiry


# A saved chart's slug: lower-case letters, digits and '-', at most 64, so
# that it reads the same in a URL, a file name and a wiki page.
CHART_SLUG_PATTERN: Final = r"[a-z0-9-]{1,64}"
CHART_SLUG_RE: Final = re.compile(f"^{CHART_SLUG_PATTERN}$")
