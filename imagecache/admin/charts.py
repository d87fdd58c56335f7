"""The admin's picture of the last day: Kentik calls and failures per hour,
and how long the fetches took, drawn on the server as inline SVG from
`selectors.stats.fetch_activity`. No script: each hour's numbers are in a <title>,
which the browser shows on hover.

Every value goes through `format_html`, so whatever reaches the drawing is
escaped. It draws numbers and times only: no query, message or id."""

from collections.abc import Sequence
from datetime import timedelta

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from imagecache.admin.display import plural
from imagecache.selectors.stats import HourActivity

WIDTH = 720
LEFT = 44  # room for the scales' numbers
RIGHT = 8
CALLS_TOP, CALLS_HEIGHT = 22, 80
DURATIONS_TOP, DURATIONS_HEIGHT = 130, 60
AXIS = DURATIONS_TOP + DURATIONS_HEIGHT
HEIGHT = AXIS + 18
LABEL_EVERY = 6  # hours between two times on the axis


def seconds(value: timedelta | None) -> float:
    return value.total_seconds() if value is not None else 0.0


def short_seconds(value: float) -> str:
    """'0.42 s', '3.1 s', '75 s'."""
    if value < 1:
        return f"{value:.2f} s"
    if value < 10:
        return f"{value:.1f} s"
    return f"{value:.0f} s"


def hour_label(hour: HourActivity) -> str:
    start = timezone.localtime(hour.start)
    return f"{start:%H}:00 to {start + timedelta(hours=1):%H}:00"


def hour_summary(hour: HourActivity) -> str:
    text = f"{hour_label(hour)}: {plural(hour.calls, 'Kentik call')}"
    if hour.calls:
        text += f", {hour.failures} failed"
    if hour.mean_duration is not None:
        text += (
            f"; fetches took {short_seconds(seconds(hour.mean_duration))} on average,"
            f" {short_seconds(seconds(hour.max_duration))} at most"
        )
    return text


def activity_svg(hours: Sequence[HourActivity]) -> SafeString:
    """The chart: per hour, a bar of calls (its failed part in the error
    colour) and, below, the mean fetch duration as a bar with a mark at the
    longest. The scales start at 0 and end at the busiest hour and the
    longest fetch."""
    column = (WIDTH - LEFT - RIGHT) / max(1, len(hours))
    bar = max(1.0, column * 0.7)
    most_calls = max((hour.calls for hour in hours), default=0)
    longest = max((seconds(hour.max_duration) for hour in hours), default=0.0)
    calls = sum(hour.calls for hour in hours)
    failures = sum(hour.failures for hour in hours)
    summary = f"{plural(calls, 'Kentik call')}, {failures} failed, in the last {len(hours)} hours"

    columns = []
    for n, hour in enumerate(hours):
        x = LEFT + n * column + (column - bar) / 2
        shapes = []
        if hour.calls:
            height = CALLS_HEIGHT * hour.calls / most_calls
            failed = CALLS_HEIGHT * hour.failures / most_calls
            bottom = CALLS_TOP + CALLS_HEIGHT
            shapes.append(_rect("activity-calls", x, bottom - height, bar, height - failed))
            if hour.failures:
                shapes.append(_rect("activity-failures", x, bottom - failed, bar, failed))
        if hour.mean_duration is not None and longest > 0:
            mean = DURATIONS_HEIGHT * seconds(hour.mean_duration) / longest
            top = AXIS - DURATIONS_HEIGHT * seconds(hour.max_duration) / longest
            shapes.append(_rect("activity-duration", x, AXIS - mean, bar, mean))
            shapes.append(
                format_html(
                    '<line class="activity-longest" x1="{}" y1="{}" x2="{}" y2="{}"/>',
                    _n(x),
                    _n(top),
                    _n(x + bar),
                    _n(top),
                )
            )
        # The whole column takes the hover, even where nothing is drawn.
        hover = _rect("activity-hover", LEFT + n * column, CALLS_TOP, column, AXIS - CALLS_TOP)
        columns.append(
            format_html(
                '<g class="activity-hour"><title>{}</title>{}{}</g>',
                hour_summary(hour),
                hover,
                SafeString("".join(shapes)),
            )
        )

    labels = format_html_join(
        "",
        '<text class="activity-time" x="{}" y="{}">{}</text>',
        (
            (_n(LEFT + n * column), HEIGHT - 4, f"{timezone.localtime(hour.start):%H}:00")
            for n, hour in enumerate(hours)
            if n % LABEL_EVERY == 0
        ),
    )
    calls_title = f"Kentik calls per hour, failed ones in red (busiest hour: {most_calls})"
    if not calls:
        calls_title = f"No Kentik call in the last {len(hours)} hours"
    durations_title = (
        "Fetch duration per hour: the mean (bar) and the longest (mark),"
        f" up to {short_seconds(longest)}"
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="activity-chart" role="img"'
        ' aria-label="{summary}" viewBox="0 0 {width} {height}" width="{width}"'
        ' height="{height}" preserveAspectRatio="xMinYMin meet">'
        "<title>{summary}</title>"
        '<text class="activity-heading" x="{left}" y="14">{calls_title}</text>'
        '<text class="activity-scale" x="{scale_x}" y="{calls_top_text}">{most_calls}</text>'
        '<text class="activity-scale" x="{scale_x}" y="{base}">0</text>'
        '<line class="activity-axis" x1="{left}" y1="{base}" x2="{right}" y2="{base}"/>'
        '<text class="activity-heading" x="{left}" y="{durations_heading}">{durations_title}</text>'
        '<text class="activity-scale" x="{scale_x}" y="{durations_top_text}">{longest}</text>'
        '<text class="activity-scale" x="{scale_x}" y="{axis}">0</text>'
        '<line class="activity-axis" x1="{left}" y1="{axis}" x2="{right}" y2="{axis}"/>'
        "{columns}{labels}</svg>",
        summary=summary,
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        right=WIDTH - RIGHT,
        scale_x=LEFT - 6,
        calls_title=calls_title,
        calls_top_text=CALLS_TOP + 10,
        most_calls=most_calls,
        base=CALLS_TOP + CALLS_HEIGHT,
        durations_heading=DURATIONS_TOP - 12,
        durations_title=durations_title,
        durations_top_text=DURATIONS_TOP + 10,
        longest=short_seconds(longest),
        axis=AXIS,
        columns=SafeString("".join(columns)),
        labels=labels,
    )


def _n(value: float) -> str:
    """A coordinate, short."""
    return f"{value:.1f}".removesuffix(".0")


def _rect(css_class: str, x: float, y: float, width: float, height: float) -> SafeString:
    return format_html(
        '<rect class="{}" x="{}" y="{}" width="{}" height="{}"/>',
        css_class,
        _n(x),
        _n(y),
        _n(width),
        _n(max(0.0, height)),
    )
