"""Operators' labels of queries (imagecache/labels.py): titles, metric by
dimension over lookback, and any hostile JSON labelled without raising."""

import json
from typing import Any

import pytest

from imagecache.labels import LABEL_MAX, UNLABELLED, query_label, query_label_text


def kentik_query(**fields: Any) -> dict[str, Any]:
    return {"queries": [{"bucket": "Left +Y Axis", "query": fields}], "imageType": "png"}


def test_the_title_is_the_label():
    query = kentik_query(query_title="Edge traffic", metric="bytes", dimension=["i_device_name"])
    assert query_label(query) == "Edge traffic"


@pytest.mark.parametrize(
    ("fields", "label"),
    [
        (
            {"metric": "bytes", "dimension": ["i_device_name"], "lookback_seconds": 3600},
            "bytes by i_device_name over 1 h",
        ),
        (
            {"metric": "packets", "dimension": ["src_geo", "dst_geo"], "lookback_seconds": 1800},
            "packets by src_geo, dst_geo over 30 min",
        ),
        (
            {"metric": "bytes", "dimension": ["a", "b", "c", "d", "e"], "lookback_seconds": 172800},
            "bytes by a, b, c and 2 more over 2 d",
        ),
        (
            {"metric": "bytes", "dimension": "i_device_name", "lookback_seconds": 90},
            "bytes by i_device_name over 90 s",
        ),
        ({"metric": "bytes"}, "bytes"),
        ({"metric": ["bytes", "packets"], "dimension": []}, "bytes, packets"),
        ({"dimension": ["i_device_name"]}, "? by i_device_name"),
        ({"metric": "bytes", "lookback_seconds": True}, "bytes"),
        ({"metric": "bytes", "query_title": "   "}, "bytes"),
        ({"metric": "bytes", "query_title": "Two\nlines\t<b>"}, "Two lines <b>"),
    ],
)
def test_metric_by_dimension_over_lookback(fields, label):
    assert query_label(kentik_query(**fields)) == label


@pytest.mark.parametrize(
    "query",
    [
        None,
        42,
        "bytes",
        [],
        [kentik_query(metric="bytes")],
        {},
        {"queries": None},
        {"queries": []},
        {"queries": ["bytes"]},
        {"queries": [{"query": None}]},
        {"queries": [{"query": []}]},
        {"queries": [{"query": {"metric": {"nested": ["junk"]}, "dimension": [[1], {"a": 2}]}}]},
        {"queries": [{"query": {"metric": None, "dimension": None, "query_title": 7}}]},
    ],
)
def test_malformed_queries_get_the_unlabelled_label(query):
    assert query_label(query) == UNLABELLED


def test_huge_strings_are_cut_short():
    label = query_label(kentik_query(query_title="x" * 10_000_000))
    assert len(label) <= LABEL_MAX
    assert label.endswith("…")
    many = query_label(kentik_query(metric="m" * 500, dimension=["d" * 500] * 10_000))
    assert len(many) <= LABEL_MAX


def test_huge_numbers_and_odd_lookbacks_are_left_out():
    for lookback in (10**400, -5, 0, float("nan"), float("inf"), "3600"):
        assert query_label(kentik_query(metric="bytes", lookback_seconds=lookback)) == "bytes"


def test_a_deeply_nested_query_gets_a_label():
    nested: Any = "bytes"
    for _ in range(100_000):
        nested = [nested]
    assert query_label(kentik_query(metric="bytes", dimension=nested)) == "bytes"


@pytest.mark.parametrize(
    "text",
    ["", "not json", '{"queries": [', "[" * 100_000, json.dumps(kentik_query(metric="x"))[:-3]],
)
def test_text_that_is_not_a_query_gets_the_unlabelled_label(text):
    assert query_label_text(text) == UNLABELLED


def test_a_query_as_text_is_labelled():
    text = json.dumps(kentik_query(metric="bytes", dimension=["i_device_name"]))
    assert query_label_text(text) == "bytes by i_device_name"
