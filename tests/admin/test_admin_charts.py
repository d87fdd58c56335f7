"""The admin's picture of the last 24 hours (imagecache.admin.charts): SVG
drawn on the server from the fetches, well-formed, to scale, and with nothing
of a client's or Kentik's text in it."""

import re
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse

from imagecache import kentik
from imagecache.admin import charts
from imagecache.selectors.stats import HourActivity, fetch_activity
from imagecache.services import fetching
from imagecache.services.entries import entry_create
from tests.harness.data import NOW, QUERY

SVG = "{http://www.w3.org/2000/svg}"
START = NOW - timedelta(hours=23)


def hours(**busy: tuple[int, int, float, float]) -> list[HourActivity]:
    """24 hours from START; `busy` gives some (as h<n>=) calls, failures,
    mean and longest duration in seconds."""
    found = []
    for n in range(24):
        calls, failures, mean, longest = busy.get(f"h{n}", (0, 0, 0.0, 0.0))
        found.append(
            HourActivity(
                start=START + timedelta(hours=n),
                calls=calls,
                failures=failures,
                mean_duration=timedelta(seconds=mean) if calls else None,
                max_duration=timedelta(seconds=longest) if calls else None,
            )
        )
    return found


def drawn(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def shapes(root: ET.Element, css_class: str) -> list[ET.Element]:
    return [e for e in root.iter() if e.get("class") == css_class]


def height(element: ET.Element) -> float:
    return float(element.get("height", "0"))


def test_each_hour_is_a_column_with_its_numbers_in_a_title():
    root = drawn(charts.activity_svg(hours(h23=(5, 2, 1.5, 4.0), h3=(1, 0, 0.4, 0.4))))
    columns = shapes(root, "activity-hour")
    assert len(columns) == 24
    titles = [column.findtext(f"{SVG}title") for column in columns]
    assert titles[23] == (
        "12:00 to 13:00: 5 Kentik calls, 2 failed; fetches took 1.5 s on average, 4.0 s at most"
    )
    assert titles[3] == (
        "16:00 to 17:00: 1 Kentik call, 0 failed; fetches took 0.40 s on average, 0.40 s at most"
    )
    assert titles[0] == "13:00 to 14:00: 0 Kentik calls"
    assert root.get("aria-label") == "6 Kentik calls, 2 failed, in the last 24 hours"
    times = [text.text for text in shapes(root, "activity-time")]
    assert times == ["13:00", "19:00", "01:00", "07:00"]


def test_bars_are_to_scale_of_the_busiest_hour_and_the_longest_fetch():
    root = drawn(
        charts.activity_svg(hours(h10=(8, 0, 2.0, 10.0), h11=(4, 1, 5.0, 5.0), h12=(2, 2, 1, 1)))
    )
    calls = [height(rect) for rect in shapes(root, "activity-calls")]
    failures = [height(rect) for rect in shapes(root, "activity-failures")]
    # The busiest hour fills the plot; its failed part, and a failed hour, are red.
    assert calls == [charts.CALLS_HEIGHT, charts.CALLS_HEIGHT * 3 / 8, 0]
    assert failures == [charts.CALLS_HEIGHT / 8, charts.CALLS_HEIGHT / 4]
    durations = [height(rect) for rect in shapes(root, "activity-duration")]
    assert durations == [charts.DURATIONS_HEIGHT * r for r in (0.2, 0.5, 0.1)]
    longest = [float(line.get("y1", "0")) for line in shapes(root, "activity-longest")]
    assert longest == [charts.AXIS - charts.DURATIONS_HEIGHT * r for r in (1.0, 0.5, 0.1)]
    scales = [text.text for text in shapes(root, "activity-scale")]
    assert scales == ["8", "0", "10 s", "0"]


def test_a_day_without_calls_says_so_and_draws_no_bar():
    root = drawn(charts.activity_svg(hours()))
    assert "No Kentik call in the last 24 hours" in "".join(root.itertext())
    assert not shapes(root, "activity-calls") and not shapes(root, "activity-duration")
    assert len(shapes(root, "activity-hover")) == 24


def chart_of(page: str) -> str:
    found = re.search(
        r'<figure class="cache-activity" id="cache-activity">(.*?)</figure>', page, re.S
    )
    assert found, "no chart on the page"
    return found.group(1)


@pytest.mark.django_db
def test_the_entries_page_draws_the_last_day_from_the_database(admin_client, fetch_chart):
    with time_machine.travel(NOW, tick=False):
        entry = entry_create(api_query=QUERY, ttl=600)
        fetching.fetch_run(fetch_id=entry.fetch_id)
        page = admin_client.get(reverse("admin:imagecache_entry_changelist")).content.decode()
        expected = charts.activity_svg(fetch_activity(hours=24))
    svg = chart_of(page).split("<figcaption")[0].strip()
    assert svg == expected
    root = drawn(svg)
    assert root.get("aria-label") == "1 Kentik call, 0 failed, in the last 24 hours"
    assert len(shapes(root, "activity-calls")) == 1
    assert "<script" not in page.split('id="cache-activity"')[1].split("</figure>")[0]


@pytest.mark.django_db
def test_no_text_of_a_query_or_of_kentik_reaches_the_chart(admin_client, fetch_chart):
    hostile = '</svg><script>alert("x")</script><svg>'
    fetch_chart.side_effect = kentik.KentikError(400, hostile)
    with time_machine.travel(NOW, tick=False):
        entry = entry_create(api_query={**QUERY, "title": hostile}, ttl=600)
        fetching.fetch_run(fetch_id=entry.fetch_id)
        page = admin_client.get(reverse("admin:imagecache_entry_changelist")).content.decode()
    chart = chart_of(page)
    assert "<script" not in chart and "alert" not in chart
    root = drawn(chart.split("<figcaption")[0].strip())
    assert root.get("aria-label") == "1 Kentik call, 1 failed, in the last 24 hours"
    # The page holds the message elsewhere, escaped as everywhere in the admin.
    assert "<script>alert" not in page
