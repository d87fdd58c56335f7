"""Saved charts' definitions (imagecache.services.chart_definitions): each
refusal names its field (and, from a file, the file and the chart), a load
is all or nothing, loading twice changes nothing, and a dump loads back as
a no-op."""

from typing import Any

import pytest
import time_machine

from imagecache.errors import ChartInvalid, ChartNotFound, ChartsRefused
from imagecache.models import Chart
from imagecache.services import chart_definitions
from imagecache.services.chart_definitions import LoadResult
from tests.harness.data import NOW

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen")]

QUERY = {
    "queries": [
        {"query": {"metric": "bytes", "device_name": "{{device}}", "lookback_seconds": "{{lb}}"}}
    ]
}
PARAMS: list[dict[str, Any]] = [
    {"name": "device", "kind": "string", "pattern": "[a-z0-9-]+", "default": "edge01"},
    {"name": "lb", "kind": "integer", "min": 60, "max": 86400, "default": 3600},
]


@pytest.fixture
def frozen() -> Any:
    with time_machine.travel(NOW, tick=False):
        yield


def chart(slug: str = "edge-traffic", **fields: Any) -> dict[str, Any]:
    return {"slug": slug, "title": f"Traffic {slug}", "query": QUERY, "params": PARAMS, **fields}


def test_save_creates_then_updates_then_leaves_an_unchanged_chart_alone() -> None:
    saved, outcome = chart_definitions.chart_save(**chart(max_age=120))
    assert outcome == "created"
    assert (saved.max_age, saved.params[1]) == (120, PARAMS[1])
    _, outcome = chart_definitions.chart_save(**chart(max_age=300))
    assert outcome == "updated"
    with time_machine.travel(NOW.replace(hour=13), tick=False):
        _, outcome = chart_definitions.chart_save(**chart(max_age=300))
    assert outcome == "unchanged"
    assert Chart.objects.get().updated_at == NOW


def test_max_age_defaults_to_reuse_max_age(settings: Any) -> None:
    settings.REUSE_MAX_AGE = 77
    saved, _ = chart_definitions.chart_save(slug="plain", title="Plain", query={"a": 1})
    assert (saved.max_age, saved.params) == (77, [])


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"slug": "Edge_Traffic"}, "slug"),
        ({"slug": "x" * 65}, "slug"),
        ({"title": ""}, "title"),
        ({"title": "t" * 201}, "title"),
        ({"query": []}, "query"),
        ({"query": {"q": "{{site}}"}}, "query"),
        ({"max_age": 0}, "max_age"),
        ({"max_age": "60"}, "max_age"),
        ({"max_age": True}, "max_age"),
        ({"params": {"name": "device"}}, "params"),
        ({"params": [{**PARAMS[0], "pattern": "("}, PARAMS[1]]}, "params[0].pattern"),
        ({"params": [PARAMS[0]]}, "query"),
    ],
)
def test_a_bad_definition_is_refused_naming_its_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ChartInvalid) as refused:
        chart_definitions.chart_save(**chart(**fields))
    assert refused.value.field == field
    assert not Chart.objects.exists()


def test_delete_removes_a_chart_and_refuses_an_unknown_one() -> None:
    chart_definitions.chart_save(**chart())
    chart_definitions.chart_delete(slug="edge-traffic")
    assert not Chart.objects.exists()
    with pytest.raises(ChartNotFound):
        chart_definitions.chart_delete(slug="edge-traffic")


def test_loading_the_same_documents_twice_changes_nothing() -> None:
    documents = [("a.yaml", {"charts": [chart("one"), chart("two")]})]
    first = chart_definitions.charts_load(documents=documents, prune=False)
    assert first == LoadResult(created=2)
    before = list(Chart.objects.values_list("slug", "updated_at"))
    with time_machine.travel(NOW.replace(hour=14), tick=False):
        second = chart_definitions.charts_load(documents=documents, prune=False)
    assert second == LoadResult(unchanged=2)
    assert list(Chart.objects.values_list("slug", "updated_at")) == before
    assert str(second) == "0 created, 0 updated, 2 unchanged, 0 deleted"


def test_prune_deletes_the_charts_no_document_names() -> None:
    chart_definitions.charts_load(
        documents=[("a.json", {"charts": [chart("one"), chart("two")]})], prune=False
    )
    result = chart_definitions.charts_load(
        documents=[("b.json", {"charts": [chart("two", title="New"), chart("three")]})],
        prune=True,
    )
    assert result == LoadResult(created=1, updated=1, deleted=1)
    assert list(Chart.objects.values_list("slug", flat=True)) == ["three", "two"]


def test_without_prune_no_chart_is_deleted() -> None:
    chart_definitions.chart_save(**chart("kept"))
    chart_definitions.charts_load(documents=[("a.json", {"charts": []})], prune=False)
    assert Chart.objects.filter(slug="kept").exists()


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ([], ("bad.yaml", "", "charts")),
        ({"charts": [chart("fine")], "extra": 1}, ("bad.yaml", "", "extra")),
        ({"charts": [chart("fine"), "text"]}, ("bad.yaml", "#2", "")),
        (
            {"charts": [chart("fine"), {"title": "No slug", "query": QUERY}]},
            ("bad.yaml", "#2", "slug"),
        ),
        ({"charts": [chart("fine"), chart("BAD slug")]}, ("bad.yaml", "#2", "slug")),
        ({"charts": [chart("fine"), chart("two", colour="red")]}, ("bad.yaml", "two", "colour")),
        (
            {
                "charts": [
                    chart("fine"),
                    chart("two", params=[{**PARAMS[0], "kind": "x"}, PARAMS[1]]),
                ]
            },
            ("bad.yaml", "two", "params[0].kind"),
        ),
        ({"charts": [chart("fine"), chart("ok")]}, ("bad.yaml", "ok", "slug")),
    ],
)
def test_a_bad_file_is_refused_whole_naming_the_file_the_chart_and_the_field(
    document: Any, where: tuple[str, str, str]
) -> None:
    chart_definitions.chart_save(**chart("existing"))
    documents = [("good.yaml", {"charts": [chart("ok"), chart("existing", title="Changed")]})]
    with pytest.raises(ChartsRefused) as refused:
        chart_definitions.charts_load(documents=[*documents, ("bad.yaml", document)], prune=True)
    assert (refused.value.file, refused.value.chart, refused.value.field) == where
    assert where[0] in refused.value.message
    # Nothing loaded, nothing pruned, nothing changed.
    assert [(c.slug, c.title) for c in Chart.objects.all()] == [("existing", "Traffic existing")]


def test_a_dump_loads_back_as_a_no_op() -> None:
    chart_definitions.chart_save(**chart("one", max_age=90))
    chart_definitions.chart_save(slug="two", title="Two", query={"a": [1, None, "x"]})
    dump = chart_definitions.charts_dump()
    assert [c["slug"] for c in dump["charts"]] == ["one", "two"]
    assert dump["charts"][0] == {
        "slug": "one",
        "title": "Traffic one",
        "query": QUERY,
        "max_age": 90,
        "params": PARAMS,
    }
    result = chart_definitions.charts_load(documents=[("dump", dump)], prune=True)
    assert result == LoadResult(unchanged=2)
