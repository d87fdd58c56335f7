"""The chart a query describes: series, values and labels drawn from it
deterministically (the query's hash seeds them)."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from imagecache.hashing import query_hash

DEFAULT_SIZE: Final = (800, 400)
MIN_SIDE: Final = 200
MAX_SIDE: Final = 2000
Color = tuple[int, int, int]
Point = tuple[float, float]
_PALETTE: Final[tuple[Color, ...]] = (
    (37, 99, 235),
    (234, 88, 12),
    (22, 163, 74),
    (147, 51, 234),
    (220, 38, 38),
    (8, 145, 178),
    (202, 138, 4),
    (219, 39, 119),
)


@dataclass(frozen=True)
class Series:
    """One line, band or bar stack of a chart."""

    name: str
    color: Color
    values: tuple[float, ...]


@dataclass(frozen=True)
class Chart:
    """What to draw, before any geometry: shared by the raster and the SVG output."""

    width: int
    height: int
    title: str
    subtitle: str
    kind: str  # "area", "line" or "bar"
    unit: str
    series: tuple[Series, ...]
    x_labels: tuple[tuple[float, str], ...]  # (fraction of the x axis, label)


def build_chart(queries: Sequence[Mapping[str, Any]]) -> Chart:
    """The chart for a list of Kentik queries; the first query decides its look."""
    # Seeding from the queries rather than the whole body makes png, svg and pdf
    # of one query show the same data.
    rng = random.Random(int(query_hash(list(queries)), 16))
    query: Mapping[str, Any] = queries[0]["query"]
    metric = _text(query.get("metric")) or "bytes"
    raw_dimensions = query.get("dimension")
    if isinstance(raw_dimensions, str):
        raw_dimensions = [raw_dimensions]
    listed = raw_dimensions if isinstance(raw_dimensions, list) else []
    dimensions = [_text(d) for d in listed[:10] if _text(d)] or ["Traffic"]
    viz = _text(query.get("viz_type")).lower()
    kind = "area" if "area" in viz or not viz else "bar" if "bar" in viz else "line"
    count = max(1, min(6, _number(query.get("topx"), 5)))
    lookback = _number(query.get("lookback_seconds"), 3600)
    if lookback <= 0:
        lookback = 3600
    width = _clamp(_number(query.get("width"), DEFAULT_SIZE[0]), MIN_SIDE, MAX_SIDE)
    height = _clamp(_number(query.get("height"), DEFAULT_SIZE[1]), MIN_SIDE, MAX_SIDE)

    unit, low, high = _metric_unit(metric)
    scale = 10 ** rng.uniform(low, high)
    points = 24 if kind == "bar" else 60
    names = _series_names(dimensions, count, rng)
    series = []
    weight = 1.0
    for index, name in enumerate(names):
        weight *= rng.uniform(0.45, 0.85) if index else 1.0
        phase = rng.random()
        period = rng.uniform(0.6, 1.6)
        values = tuple(
            max(
                0.0,
                scale
                * weight
                * (
                    1.0
                    + 0.35 * math.sin(2 * math.pi * (i / points / period + phase))
                    + rng.gauss(0.0, 0.08)
                ),
            )
            for i in range(points)
        )
        series.append(Series(name, _PALETTE[index % len(_PALETTE)], values))

    title = _text(query.get("query_title")) or f"{metric} by {', '.join(dimensions)}"
    subtitle = f"{metric}, top {count} by {', '.join(dimensions)}, last {_duration(lookback)}"
    ticks = tuple(
        (i / 4, "now" if i == 4 else "-" + _duration(lookback * (4 - i) / 4)) for i in range(5)
    )
    return Chart(width, height, title, subtitle, kind, unit, tuple(series), ticks)


def _text(value: Any) -> str:
    """A query string fit for one line of a chart: no control characters, not huge."""
    if not isinstance(value, str):
        return ""
    return " ".join("".join(c if c.isprintable() else " " for c in value[:200]).split())


def _number(value: Any, default: int) -> int:
    """Kentik sends some numbers as strings ("topx": "8"); accept both."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int | float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except (ValueError, OverflowError):
            return default
    return default


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _metric_unit(metric: str) -> tuple[str, float, float]:
    """The unit and the log10 range of plausible values for a Kentik metric."""
    lowered = metric.lower()
    if "byte" in lowered or "bit" in lowered:
        return "bps", 7.0, 10.5
    if "packet" in lowered or "pkt" in lowered:
        return "pps", 4.0, 7.0
    return "", 1.0, 4.0


_NAME_LISTS: Final[Mapping[str, tuple[str, ...]]] = {
    "traffic": ("Total", "Inbound", "Outbound", "Transit", "Internal", "Other"),
    "proto": ("TCP", "UDP", "ICMP", "GRE", "ESP", "SCTP", "IPv6-ICMP"),
    "geography": ("US", "DE", "GB", "JP", "BR", "IN", "FR", "NL", "SG", "CA"),
    "port": ("443", "80", "53", "22", "123", "8080", "3478", "993"),
}


def _series_names(dimensions: Sequence[str], count: int, rng: random.Random) -> list[str]:
    columns = [_dimension_values(dimension, count, rng) for dimension in dimensions[:2]]
    return [" / ".join(column[i] for column in columns)[:60] for i in range(count)]


def _dimension_values(dimension: str, count: int, rng: random.Random) -> list[str]:
    lowered = dimension.lower()
    for key, names in _NAME_LISTS.items():
        if key in lowered:
            if key == "traffic":
                return list(names[:count]) + [f"Other {i}" for i in range(count - len(names))]
            picked = rng.sample(names, min(count, len(names)))
            return picked + [f"{dimension} {i + 1}" for i in range(len(picked), count)]
    if lowered.startswith("as") or "_as" in lowered:
        return [f"AS{n}" for n in rng.sample(range(1000, 65000), count)]
    if "device" in lowered:
        return [f"edge-router-{n:02d}" for n in rng.sample(range(1, 40), count)]
    if "interface" in lowered:
        return [f"et-0/0/{n}" for n in rng.sample(range(48), count)]
    if "ip" in lowered or "addr" in lowered:
        return [f"10.{rng.randrange(256)}.{rng.randrange(256)}.{n}" for n in range(1, count + 1)]
    return [f"{dimension} {i + 1}" for i in range(count)]


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.3g}d"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.3g}h"
    return f"{seconds / 60:.3g}m"


def format_value(value: float, unit: str) -> str:
    if value <= 0:
        return "0"
    prefixes = ("", "K", "M", "G", "T", "P")
    power = min(len(prefixes) - 1, max(0, int(math.log10(value) // 3)))
    number = f"{value / 1000**power:.3g}"
    return f"{number} {prefixes[power]}{unit}".rstrip()


def nice_step(span: float, steps: int) -> float:
    raw = span / steps
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude
