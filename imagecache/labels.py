"""A human label of a Kentik query, for operators: its first query's
`query_title`, else its metric by its dimensions over its lookback
("bytes by i_device_name, src_geo over 1 h").

A leaf: it imports nothing of the app. Queries are clients' JSON, so any
value at all gets a label of bounded length, and nothing raises.
"""

import json
import re
from typing import Any

LABEL_MAX = 120
# What one part of a label (a title, a metric, a dimension) may take of it.
PART_MAX = 60
DIMENSIONS_SHOWN = 3
UNLABELLED = "(a query without metric or title)"
_SPACES = re.compile(r"\s+")
_UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))


def query_label(query: Any) -> str:
    """The label of a query (the dict sent to Kentik); never raises."""
    try:
        label = _label(query)
    except Exception:  # noqa: BLE001 - a label must never fail the page that shows it
        label = UNLABELLED
    return _cut(label, LABEL_MAX)


def query_label_text(text: str) -> str:
    """The label of a query given as JSON text, which may be cut short."""
    try:
        query = json.loads(text)
    except Exception:  # noqa: BLE001 - not JSON, nested too deep, cut short
        return UNLABELLED
    return query_label(query)


def _label(query: Any) -> str:
    inner = _first_query(query)
    title = _text(inner.get("query_title"))
    if title:
        return title
    metric = _text(inner.get("metric"))
    if isinstance(inner.get("metric"), list):
        metric = _names(inner["metric"])
    dimensions = inner.get("dimension")
    by = _names(dimensions) if isinstance(dimensions, list) else _text(dimensions)
    if not metric and not by:
        return UNLABELLED
    label = metric or "?"
    if by:
        label += f" by {by}"
    lookback = _lookback(inner.get("lookback_seconds"))
    if lookback:
        label += f" over {lookback}"
    return label


def _first_query(query: Any) -> dict[str, Any]:
    queries = query.get("queries") if isinstance(query, dict) else None
    first = queries[0] if isinstance(queries, list) and queries else None
    inner = first.get("query") if isinstance(first, dict) else None
    return inner if isinstance(inner, dict) else {}


def _text(value: Any) -> str:
    """A string value as one short line; anything else is no text."""
    if not isinstance(value, str):
        return ""
    # Only the beginning is looked at: a huge string costs no more than a short one.
    line = "".join(c if c.isprintable() else " " for c in value[: PART_MAX * 4])
    return _cut(_SPACES.sub(" ", line).strip(), PART_MAX)


def _names(values: list[Any]) -> str:
    names = [name for name in (_text(v) for v in values[:20]) if name]
    shown = ", ".join(names[:DIMENSIONS_SHOWN])
    if len(names) > DIMENSIONS_SHOWN:
        shown += f" and {len(names) - DIMENSIONS_SHOWN} more"
    return shown


def _lookback(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e12:
        return ""
    seconds = int(value)
    for size, unit in _UNITS:
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s" if seconds else ""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
