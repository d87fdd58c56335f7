"""A chart laid out as shapes on a canvas, and drawn with Pillow (PNG, JPEG,
PDF) or written as SVG."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageDraw, ImageFont

from imagecache.simulator.chart import Chart, Color, Point, Series, format_value, nice_step

_WHITE: Final[Color] = (255, 255, 255)
_INK: Final[Color] = (31, 41, 55)
_MUTED: Final[Color] = (107, 114, 128)
_GRID: Final[Color] = (229, 231, 235)
_AXIS: Final[Color] = (156, 163, 175)


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


def layout(chart: Chart) -> _Canvas:
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
    step = nice_step(max(max(totals), 1.0), 4)
    y_top = step * max(1, math.ceil(max(totals) / step))
    y_ticks = [step * i for i in range(round(y_top / step) + 1)]
    y_labels = [format_value(value, chart.unit) for value in y_ticks]
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


def to_pillow(canvas: _Canvas) -> Image.Image:
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


def to_svg(canvas: _Canvas, title: str) -> bytes:
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
