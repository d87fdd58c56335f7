"""The query key: shared by the service and the bundled Kentik simulator.

Kept free of Django imports so that the simulator can run on its own.
"""

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys and no spaces: equal queries give equal bytes."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def query_hash(api_query: Any) -> str:
    """The sha256 hex digest of the canonical JSON of a Kentik query."""
    return hashlib.sha256(canonical_json(api_query)).hexdigest()
