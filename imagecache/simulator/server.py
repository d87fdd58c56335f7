"""A stand-in for Kentik's chart API, bundled for tests and local development.

It answers ``POST {base}/query/topXchart`` the way Kentik does -- a JSON object
``{"dataUri": "data:<mime>;base64,<payload>"}`` -- with a real, deterministic chart
drawn from the query, so the image cache can be exercised without a Kentik
account. Tests steer it through rules (errors, Retry-After, delays, hangs, broken
bodies) and read back what it received, either in-process through
:class:`KentikSimulator` or over HTTP through the ``/_sim/...`` endpoints.

It deliberately imports nothing from Django so that it runs on its own::

    python -m imagecache.simulator --port 8001 --email me@example.com --token secret
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import io
import json
import math
import random
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Final, NoReturn, Self

from PIL import Image, ImageDraw, ImageFont

from imagecache.hashing import query_hash
from imagecache.media import MEDIA_TYPES

API_PREFIX: Final = "/api/v5"
TOPX_PATH: Final = API_PREFIX + "/query/topXchart"
RULES_PATH: Final = "/_sim/rules"
RESET_PATH: Final = "/_sim/reset"
CALLS_PATH: Final = "/_sim/calls"

# Kentik's image types, and "jpg", which it takes for "jpeg" too.
MIME_TYPES: Final[Mapping[str, str]] = {**MEDIA_TYPES, "jpg": MEDIA_TYPES["jpeg"]}
DEFAULT_SIZE: Final = (800, 400)
MIN_SIDE: Final = 200
MAX_SIDE: Final = 2000

HISTORY_LENGTH: Final = 20
HANG_SECONDS: Final = 600.0
MAX_BODY_BYTES: Final = 10 * 1024 * 1024
TOKEN_HEADER: Final = "X-CH-Auth-API-Token"
EMAIL_HEADER: Final = "X-CH-Auth-Email"

# Pillow's PDF writer stamps the current time into the document, which would make
# two answers to the same query differ; a fixed date keeps them byte-identical.
_PDF_DATE: Final = time.gmtime(946684800)

Color = tuple[int, int, int]
Point = tuple[float, float]

_WHITE: Final[Color] = (255, 255, 255)
_INK: Final[Color] = (31, 41, 55)
_MUTED: Final[Color] = (107, 114, 128)
_GRID: Final[Color] = (229, 231, 235)
_AXIS: Final[Color] = (156, 163, 175)
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


# --------------------------------------------------------------------------- requests


def validate_request(body: Any) -> str | None:
    """Why Kentik would reject this topXchart body, or None if it is acceptable."""
    if not isinstance(body, dict):
        return f"Request body must be a JSON object, not {_json_type(body)}"
    if "queries" not in body:
        return "Request body has no 'queries' list"
    queries = body["queries"]
    if not isinstance(queries, list):
        return f"'queries' must be a list, not {_json_type(queries)}"
    if not queries:
        return "'queries' must not be empty"
    for index, item in enumerate(queries):
        if not isinstance(item, dict):
            return f"queries[{index}] must be an object, not {_json_type(item)}"
        if not isinstance(item.get("query"), dict):
            return f"queries[{index}] has no 'query' object"
    allowed = ", ".join(MIME_TYPES)
    if "imageType" not in body:
        return f"Request body has no 'imageType'; use one of {allowed}"
    image_type = body["imageType"]
    if not isinstance(image_type, str) or image_type not in MIME_TYPES:
        shown = json.dumps(image_type)[:40]
        return f"Unsupported imageType {shown}; use one of {allowed}"
    return None


def _json_type(value: Any) -> str:
    names: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return names.get(type(value), type(value).__name__)


def render_chart(body: Mapping[str, Any]) -> tuple[str, bytes]:
    """Draw the chart a valid topXchart body asks for: its mime type and its bytes."""
    image_type = str(body["imageType"])
    chart = build_chart(body["queries"])
    canvas = _layout(chart)
    if image_type == "svg":
        return MIME_TYPES[image_type], _to_svg(canvas, chart.title)
    image = _to_pillow(canvas)
    buffer = io.BytesIO()
    if image_type == "png":
        image.save(buffer, "PNG")
    elif image_type in ("jpg", "jpeg"):
        image.save(buffer, "JPEG", quality=90)
    else:
        image.save(buffer, "PDF", title=chart.title, creationDate=_PDF_DATE, modDate=_PDF_DATE)
    return MIME_TYPES[image_type], buffer.getvalue()


# ----------------------------------------------------------------------- chart model


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


def _format_value(value: float, unit: str) -> str:
    if value <= 0:
        return "0"
    prefixes = ("", "K", "M", "G", "T", "P")
    power = min(len(prefixes) - 1, max(0, int(math.log10(value) // 3)))
    number = f"{value / 1000**power:.3g}"
    return f"{number} {prefixes[power]}{unit}".rstrip()


def _nice_step(span: float, steps: int) -> float:
    raw = span / steps
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


# -------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Rect:
    box: tuple[float, float, float, float]
    fill: Color


@dataclass(frozen=True)
class _Polygon:
    points: tuple[Point, ...]
    fill: Color


@dataclass(frozen=True)
class _Line:
    points: tuple[Point, ...]
    color: Color
    width: int


@dataclass(frozen=True)
class _Text:
    position: Point
    text: str
    size: int
    color: Color
    anchor: str  # Pillow anchor: horizontal l/m/r, then vertical a (top) or m (middle)


_Shape = _Rect | _Polygon | _Line | _Text


@dataclass(frozen=True)
class _Canvas:
    width: int
    height: int
    shapes: tuple[_Shape, ...]


_FONTS = threading.local()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # One FreeType face per thread: Pillow does not promise that a face may be used
    # by several threads at once, and loading one costs well under a millisecond.
    cache: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] | None = getattr(
        _FONTS, "cache", None
    )
    if cache is None:
        cache = _FONTS.cache = {}
    if size not in cache:
        cache[size] = ImageFont.load_default(size=size)
    return cache[size]


def _text_width(text: str, size: int) -> float:
    return float(_font(size).getlength(text))


def _fit(text: str, size: int, width: float) -> str:
    if _text_width(text, size) <= width:
        return text
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if _text_width(text[:middle] + "...", size) <= width:
            low = middle
        else:
            high = middle - 1
    return text[:low] + "..."


def _tint(color: Color, amount: float) -> Color:
    r, g, b = (round(c + (255 - c) * amount) for c in color)
    return (r, g, b)


def _layout(chart: Chart) -> _Canvas:
    """Place everything in pixels once, so both renderers draw the same picture."""
    w, h = chart.width, chart.height
    s = max(0.6, min(2.5, min(w / 800, h / 400)))
    title_size, label_size = round(16 * s), max(7, round(11 * s))
    pad, gap = round(12 * s), round(6 * s)
    shapes: list[_Shape] = [_Rect((0, 0, w, h), _WHITE)]
    shapes.append(
        _Text((pad, pad), _fit(chart.title, title_size, w - 2 * pad), title_size, _INK, "la")
    )
    shapes.append(
        _Text(
            (pad, pad + title_size + gap // 2),
            _fit(chart.subtitle, label_size, w - 2 * pad),
            label_size,
            _MUTED,
            "la",
        )
    )
    top = pad + title_size + label_size + 2 * gap + gap // 2

    stacked = chart.kind in ("area", "bar")
    points = len(chart.series[0].values)
    totals = [
        sum(series.values[i] for series in chart.series)
        if stacked
        else max(series.values[i] for series in chart.series)
        for i in range(points)
    ]
    step = _nice_step(max(max(totals), 1.0), 4)
    y_top = step * max(1, math.ceil(max(totals) / step))
    y_ticks = [step * i for i in range(round(y_top / step) + 1)]
    y_labels = [_format_value(value, chart.unit) for value in y_ticks]
    left = pad + max(_text_width(label, label_size) for label in y_labels) + gap
    right = w - pad - round(8 * s)

    legend_rows = _legend_rows(chart, label_size, gap, w - 2 * pad)
    row_height = label_size + gap
    x_label_height = label_size + gap * 2
    bottom = h - pad - x_label_height - len(legend_rows) * row_height
    if bottom - top < 40:
        # A tiny canvas cannot fit the legend; the data matters more.
        legend_rows = []
        bottom = h - pad - x_label_height
    plot_w, plot_h = right - left, bottom - top

    def y_of(value: float) -> float:
        return bottom - value / y_top * plot_h

    for value, label in zip(y_ticks, y_labels, strict=True):
        y = round(y_of(value)) + 0.5
        shapes.append(_Line(((left, y), (right, y)), _GRID, 1))
        shapes.append(_Text((left - gap, y), label, label_size, _MUTED, "rm"))
    for fraction, label in chart.x_labels:
        x = left + fraction * plot_w
        shapes.append(_Line(((x, bottom), (x, bottom + gap // 2)), _AXIS, 1))
        anchor = "la" if fraction == 0 else "ra" if fraction == 1 else "ma"
        shapes.append(_Text((x, bottom + gap), label, label_size, _MUTED, anchor))

    line_width = max(1, round(1.5 * s))
    if chart.kind == "bar":
        slot = plot_w / points
        base = [0.0] * points
        for series in chart.series:
            for i, value in enumerate(series.values):
                y0, y1 = y_of(base[i] + value), y_of(base[i])
                if y1 - y0 >= 0.5:
                    x0 = left + i * slot + slot * 0.15
                    shapes.append(_Rect((x0, y0, x0 + slot * 0.7, y1), series.color))
                base[i] += value
    else:
        xs = [left + i / (points - 1) * plot_w for i in range(points)]
        base = [0.0] * points
        bands: list[_Shape] = []
        lines: list[_Shape] = []
        for series in chart.series:
            upper = (
                [b + v for b, v in zip(base, series.values, strict=True)]
                if stacked
                else list(series.values)
            )
            top_edge = tuple((x, y_of(v)) for x, v in zip(xs, upper, strict=True))
            if stacked:
                lower = tuple((x, y_of(v)) for x, v in zip(xs, base, strict=True))
                bands.append(_Polygon(top_edge + lower[::-1], _tint(series.color, 0.55)))
                base = upper
            lines.append(_Line(top_edge, series.color, line_width if stacked else line_width + 1))
        # Outlines go over all bands, or the next band would hide the previous edge.
        shapes.extend(bands)
        shapes.extend(lines)
    shapes.append(_Line(((left, top), (left, bottom), (right, bottom)), _AXIS, 1))

    y = bottom + x_label_height + row_height / 2
    for row in legend_rows:
        x = float(pad)
        for series, item_width in row:
            half = label_size / 2
            shapes.append(_Rect((x, y - half, x + label_size, y + half), series.color))
            shapes.append(_Text((x + label_size + gap, y), series.name, label_size, _INK, "lm"))
            x += item_width
        y += row_height
    return _Canvas(w, h, tuple(shapes))


def _legend_rows(
    chart: Chart, size: int, gap: int, width: float
) -> list[list[tuple[Series, float]]]:
    rows: list[list[tuple[Series, float]]] = [[]]
    used = 0.0
    for series in chart.series:
        item = size + gap + _text_width(series.name, size) + 3 * gap
        if rows[-1] and used + item > width:
            rows.append([])
            used = 0.0
        rows[-1].append((series, item))
        used += item
    return rows


def _to_pillow(canvas: _Canvas) -> Image.Image:
    image = Image.new("RGB", (canvas.width, canvas.height), _WHITE)
    draw = ImageDraw.Draw(image)
    for shape in canvas.shapes:
        if isinstance(shape, _Rect):
            draw.rectangle(shape.box, fill=shape.fill)
        elif isinstance(shape, _Polygon):
            draw.polygon(shape.points, fill=shape.fill)
        elif isinstance(shape, _Line):
            draw.line(shape.points, fill=shape.color, width=shape.width, joint="curve")
        else:
            draw.text(
                shape.position,
                shape.text,
                fill=shape.color,
                font=_font(shape.size),
                anchor=shape.anchor,
            )
    return image


def _to_svg(canvas: _Canvas, title: str) -> bytes:
    def hex_color(color: Color) -> str:
        return "#{:02x}{:02x}{:02x}".format(*color)

    def coords(points: Sequence[Point]) -> str:
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)

    text_anchor = {"l": "start", "m": "middle", "r": "end"}
    baseline = {"a": "hanging", "m": "central"}
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{canvas.width}" '
            f'height="{canvas.height}" viewBox="0 0 {canvas.width} {canvas.height}" '
            'font-family="DejaVu Sans, Helvetica, Arial, sans-serif">'
        ),
        f"<title>{_xml_text(title)}</title>",
    ]
    for shape in canvas.shapes:
        if isinstance(shape, _Rect):
            x0, y0, x1, y1 = shape.box
            out.append(
                f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" '
                f'height="{y1 - y0:.1f}" fill="{hex_color(shape.fill)}"/>'
            )
        elif isinstance(shape, _Polygon):
            out.append(f'<polygon points="{coords(shape.points)}" fill="{hex_color(shape.fill)}"/>')
        elif isinstance(shape, _Line):
            out.append(
                f'<polyline points="{coords(shape.points)}" fill="none" '
                f'stroke="{hex_color(shape.color)}" stroke-width="{shape.width}" '
                'stroke-linejoin="round"/>'
            )
        else:
            x, y = shape.position
            out.append(
                f'<text x="{x:.1f}" y="{y:.1f}" font-size="{shape.size}" '
                f'fill="{hex_color(shape.color)}" text-anchor="{text_anchor[shape.anchor[0]]}" '
                f'dominant-baseline="{baseline[shape.anchor[1]]}">{_xml_text(shape.text)}</text>'
            )
    out.append("</svg>")
    return ("\n".join(out) + "\n").encode("utf-8")


def _xml_text(text: str) -> str:
    # Control characters are not allowed in XML 1.0 at all, not even escaped.
    cleaned = "".join(c for c in text if c >= " " or c in "\t\n\r")
    return cleaned.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ----------------------------------------------------------------------------- rules


_RULE_FIELDS: Final = frozenset(
    {"match", "delay", "status", "message", "retry_after", "hang", "body", "content_type", "times"}
)


class RuleError(ValueError):
    """A rule that cannot be applied; the message says which field is wrong."""


@dataclass
class Rule:
    """How to answer the topXchart calls whose raw body contains ``match``."""

    match: str | None = None
    delay: float | None = None
    status: int | None = None
    message: str | None = None
    retry_after: str | None = None
    hang: bool = False
    body: str | None = None
    content_type: str = "application/json"
    times: int | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Rule:
        """Check a rule as given over HTTP or as keyword arguments; RuleError if bad."""
        unknown = sorted(set(data) - _RULE_FIELDS)
        if unknown:
            raise RuleError(f"Unknown rule field(s): {', '.join(unknown)}")
        rule = cls()
        match = data.get("match")
        if match is not None and not isinstance(match, str):
            raise RuleError("'match' must be a string or null")
        rule.match = match
        delay = data.get("delay")
        if delay is not None:
            if (
                isinstance(delay, bool)
                or not isinstance(delay, int | float)
                or not math.isfinite(delay)
                or delay < 0
            ):
                raise RuleError("'delay' must be a number of seconds >= 0")
            rule.delay = float(delay)
        status = data.get("status")
        if status is not None:
            if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
                raise RuleError("'status' must be an HTTP status code between 100 and 599")
            rule.status = status
        message = data.get("message")
        if message is not None and not isinstance(message, str):
            raise RuleError("'message' must be a string or null")
        rule.message = message
        retry_after = data.get("retry_after")
        if retry_after is not None:
            if isinstance(retry_after, bool) or not isinstance(retry_after, str | int | float):
                raise RuleError("'retry_after' must be a string, a number or null")
            rule.retry_after = _header_value("retry_after", str(retry_after))
        hang = data.get("hang", False)
        if not isinstance(hang, bool):
            raise RuleError("'hang' must be true or false")
        rule.hang = hang
        body = data.get("body")
        if body is not None and not isinstance(body, str):
            raise RuleError("'body' must be a string or null")
        rule.body = body
        content_type = data.get("content_type")
        if content_type is not None:
            if not isinstance(content_type, str) or not content_type:
                raise RuleError("'content_type' must be a non-empty string")
            rule.content_type = _header_value("content_type", content_type)
        times = data.get("times")
        if times is not None:
            if isinstance(times, bool) or not isinstance(times, int) or times < 0:
                raise RuleError("'times' must be an integer >= 0 or null")
            rule.times = times
        return rule

    def to_dict(self) -> dict[str, Any]:
        """The rule as JSON-ready data."""
        return {name: getattr(self, name) for name in sorted(_RULE_FIELDS)}


def _header_value(name: str, value: str) -> str:
    # A header value with a line break would let a rule forge extra headers, and
    # http.server can only send Latin-1.
    if "\r" in value or "\n" in value:
        raise RuleError(f"'{name}' must not contain line breaks")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise RuleError(f"'{name}' must be Latin-1 text") from None
    return value


class _State:
    """Everything the handler threads share; every access goes through ``lock``."""

    def __init__(self, email: str | None, token: str | None, delay: float, verbose: bool):
        self.email = email
        self.token = token
        self.delay = delay
        self.verbose = verbose
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.rules: list[Rule] = []
        self.total = 0
        self.by_query: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.last_bodies: deque[str] = deque(maxlen=HISTORY_LENGTH)
        self.last_headers: deque[dict[str, str]] = deque(maxlen=HISTORY_LENGTH)

    def add_rule(self, rule: Rule) -> int:
        with self.lock:
            self.rules.append(rule)
            return len(self.rules)

    def reset(self) -> None:
        with self.lock:
            self.rules.clear()
            self.total = 0
            self.by_query.clear()
            # Calls still running will leave later, so in_flight must stay truthful.
            self.max_in_flight = self.in_flight
            self.last_bodies.clear()
            self.last_headers.clear()

    def calls(self) -> dict[str, Any]:
        with self.lock:
            return {
                "total": self.total,
                "by_query": dict(self.by_query),
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "last_bodies": list(self.last_bodies),
                "last_headers": [dict(headers) for headers in self.last_headers],
            }

    def arrive(self, key: str, body: str, headers: dict[str, str]) -> None:
        with self.lock:
            self.total += 1
            self.by_query[key] = self.by_query.get(key, 0) + 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.last_bodies.append(body)
            self.last_headers.append(headers)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def take_rule(self, body: str) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if rule.times == 0 or (rule.match is not None and rule.match not in body):
                    continue
                if rule.times is not None:
                    rule.times -= 1
                return rule
        return None


# ---------------------------------------------------------------------------- server


class _BodyError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "KentikSimulator/1.0"
    # Headers and body go out in two writes; without this, Nagle's algorithm and
    # delayed ACKs add ~40 ms to every keep-alive answer.
    disable_nagle_algorithm = True
    # Idle keep-alive connections give their thread back after this long.
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.state.verbose:
            super().log_message(format, *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors found by http.server, answered as JSON like everything else."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        self._send_json(code, {"error": message or phrase}, close=True)

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        method = self.command
        try:
            raw = self._read_body()
        except _BodyError as exc:
            if method == "POST" and path == TOPX_PATH:
                self._count(b"")
                self.server.state.leave()
            self._send_json(exc.status, {"error": exc.message}, close=True)
            return
        if method == "POST" and path == TOPX_PATH:
            self._topx(raw)
        elif method == "POST" and path == RULES_PATH:
            self._add_rule(raw)
        elif method == "POST" and path == RESET_PATH:
            self.server.state.reset()
            self._send_json(HTTPStatus.OK, {"reset": True})
        elif method == "GET" and path == CALLS_PATH:
            self._send_json(HTTPStatus.OK, self.server.state.calls())
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"Not found: {method} {path}"})

    # Every method goes through one dispatcher, which answers what it does not serve.
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise _BodyError(HTTPStatus.BAD_REQUEST, "Invalid Content-Length header") from None
        if length < 0:
            raise _BodyError(HTTPStatus.BAD_REQUEST, "Invalid Content-Length header")
        if length > MAX_BODY_BYTES:
            raise _BodyError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body is too large")
        raw = self.rfile.read(length)
        if len(raw) < length:
            raise _BodyError(HTTPStatus.BAD_REQUEST, "Request body is shorter than Content-Length")
        return raw

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        size_total = 0
        while True:
            line = self.rfile.readline(1026)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BodyError(HTTPStatus.BAD_REQUEST, "Malformed chunked body") from None
            if size == 0:
                # Trailer fields, if any, end with an empty line.
                while self.rfile.readline(65537).strip():
                    pass
                return b"".join(parts)
            size_total += size
            if size_total > MAX_BODY_BYTES:
                raise _BodyError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body is too large")
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise _BodyError(HTTPStatus.BAD_REQUEST, "Chunked body ended early")
            parts.append(chunk)
            self.rfile.readline(3)

    def _count(self, raw: bytes) -> tuple[Any, str | None]:
        """Record an arriving topXchart call; its parsed body, or why it did not parse."""
        parsed, problem = _parse_json(raw)
        key = hashlib.sha256(raw).hexdigest()
        if problem is None:
            try:
                key = query_hash(parsed)
            except ValueError:
                pass
        headers = {
            name: "***" if name.lower() == TOKEN_HEADER.lower() else value
            for name, value in self.headers.items()
        }
        self.server.state.arrive(key, raw.decode("utf-8", errors="replace"), headers)
        return parsed, problem

    def _topx(self, raw: bytes) -> None:
        state = self.server.state
        parsed, problem = self._count(raw)
        try:
            answer = self._topx_answer(raw, parsed, problem)
        finally:
            # Leave before answering: a client that already has its answer must not
            # find its call still in flight when it asks /_sim/calls next.
            state.leave()
        if answer is None:
            self.close_connection = True
            return
        self._send(*answer)

    def _topx_answer(
        self, raw: bytes, parsed: Any, problem: str | None
    ) -> tuple[int, bytes, str, list[tuple[str, str]]] | None:
        """Status, body, content type and extra headers; None to close without answer."""
        state = self.server.state
        rule = state.take_rule(raw.decode("utf-8", errors="replace"))
        delay = rule.delay if rule is not None and rule.delay is not None else state.delay
        if delay > 0 and state.stopping.wait(delay):
            # Shutting down: answering early would break the promise of the delay.
            return None
        if rule is not None and rule.hang:
            state.stopping.wait(HANG_SECONDS)
            return None
        extra: list[tuple[str, str]] = []
        if rule is not None and rule.retry_after is not None:
            extra.append(("Retry-After", rule.retry_after))
        if rule is not None and rule.body is not None:
            return rule.status or 200, rule.body.encode("utf-8"), rule.content_type, extra
        if rule is not None and rule.status is not None:
            message = rule.message or f"Simulated error {rule.status}"
            payload = json.dumps({"error": message}).encode("utf-8")
            return rule.status, payload, rule.content_type, extra
        status, answer = self._chart_answer(parsed, problem)
        return status, json.dumps(answer).encode("utf-8"), "application/json", extra

    def _chart_answer(self, parsed: Any, problem: str | None) -> tuple[int, dict[str, Any]]:
        auth_problem = self._auth_problem()
        if auth_problem is not None:
            return HTTPStatus.UNAUTHORIZED, {"error": f"Authentication failed: {auth_problem}"}
        if problem is not None:
            return HTTPStatus.BAD_REQUEST, {"error": problem}
        invalid = validate_request(parsed)
        if invalid is not None:
            return HTTPStatus.BAD_REQUEST, {"error": invalid}
        try:
            mime, data = render_chart(parsed)
        except Exception as exc:  # noqa: BLE001 - a drawing bug must still get an answer
            if self.server.state.verbose:
                self.log_error("Drawing failed: %r", exc)
            return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"Simulator could not draw: {exc}"}
        encoded = base64.b64encode(data).decode("ascii")
        return HTTPStatus.OK, {"dataUri": f"data:{mime};base64,{encoded}"}

    def _auth_problem(self) -> str | None:
        state = self.server.state
        email = self.headers.get(EMAIL_HEADER, "")
        token = self.headers.get(TOKEN_HEADER, "")
        if not email:
            return f"missing {EMAIL_HEADER} header"
        if not token:
            return f"missing {TOKEN_HEADER} header"
        if state.email is not None and not hmac.compare_digest(
            email.encode("utf-8", "surrogateescape"), state.email.encode("utf-8")
        ):
            return "unknown user or wrong API token"
        if state.token is not None and not hmac.compare_digest(
            token.encode("utf-8", "surrogateescape"), state.token.encode("utf-8")
        ):
            return "unknown user or wrong API token"
        return None

    def _add_rule(self, raw: bytes) -> None:
        parsed, problem = _parse_json(raw)
        if problem is None and not isinstance(parsed, dict):
            problem = "A rule must be a JSON object"
        if problem is None:
            try:
                count = self.server.state.add_rule(Rule.from_mapping(parsed))
            except ValueError as exc:
                problem = str(exc)
            else:
                self._send_json(HTTPStatus.OK, {"rules": count})
                return
        self._send_json(HTTPStatus.BAD_REQUEST, {"error": problem})

    def _send_json(
        self,
        status: int,
        payload: Any,
        *,
        extra: Sequence[tuple[str, str]] = (),
        close: bool = False,
    ) -> None:
        body = json.dumps(payload).encode("utf-8")
        self._send(status, body, "application/json", extra, close=close)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        extra: Sequence[tuple[str, str]] = (),
        *,
        close: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _parse_json(raw: bytes) -> tuple[Any, str | None]:
    def reject_constant(name: str) -> NoReturn:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=reject_constant), None
    except UnicodeDecodeError:
        return None, "Request body is not valid UTF-8"
    except ValueError as exc:
        return None, f"Request body is not valid JSON: {exc}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # stop() ends the handler threads itself, with a deadline; the stdlib join has none.
    block_on_close = False
    # The default backlog of 5 drops bursts of parallel connects, which then wait
    # a full second for the SYN to be retried.
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], state: _State):
        self.state = state
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Registered here, in the accepting thread, so that close_connections() after
        # shutdown() cannot miss a connection whose thread has not started yet.
        with self._lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        current = threading.current_thread()
        with self._lock:
            self._workers.add(current)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._connections.discard(request)
                self._workers.discard(current)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that give up (timeouts, resets) are routine in tests, not news.
        if self.state.verbose:
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def join_workers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))


# ------------------------------------------------------------------------ public API


class KentikSimulator:
    """A Kentik chart API on a local port, for tests and local development.

    >>> with KentikSimulator(email="me@example.com", token="secret") as sim:
    ...     base_url = sim.url  # http://127.0.0.1:<port>/api/v5
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        email: str | None = None,
        token: str | None = None,
        delay: float = 0.0,
        verbose: bool = False,
    ):
        self.host = host
        self._requested_port = port
        self._state = _State(email, token, float(delay), verbose)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def port(self) -> int:
        """The port actually listened on (the requested one before start())."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The API base to configure clients with, e.g. ``http://127.0.0.1:8001/api/v5``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{API_PREFIX}"

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("KentikSimulator can only be started once")
        self._server = _Server((self.host, self._requested_port), self._state)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"kentik-simulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end hanging and delayed calls, and close every connection."""
        if self._server is None or self._stopped:
            return
        self._stopped = True
        self._state.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._server.join_workers(timeout=1.5)
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def __enter__(self) -> Self:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def add_rule(self, **rule: Any) -> int:
        """Append a rule (same fields as ``POST /_sim/rules``); the number of rules."""
        return self._state.add_rule(Rule.from_mapping(rule))

    def reset(self) -> None:
        """Forget all rules and counters."""
        self._state.reset()

    def calls(self) -> dict[str, Any]:
        """What ``GET /_sim/calls`` answers."""
        return self._state.calls()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m imagecache.simulator", description="Simulate Kentik's chart API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--email", help="the only X-CH-Auth-Email accepted")
    parser.add_argument("--token", help="the only X-CH-Auth-API-Token accepted")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    stop_requested: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # Only a list append here: taking a lock in a signal handler can deadlock
        # against the very thread the handler interrupted.
        stop_requested.append(signum)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    simulator = KentikSimulator(
        args.host, args.port, args.email, args.token, args.delay, verbose=args.verbose
    )
    try:
        simulator.start()
    except OSError as exc:
        print(f"Cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"Kentik simulator listening on {simulator.url}", flush=True)
    while not stop_requested:
        time.sleep(0.1)
    simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
