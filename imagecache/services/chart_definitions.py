"""Saved charts' definitions written: one by one (the API, the admin) or
as code (`manage.py charts_load`, all or nothing), and read back in the same
form (`charts_dump`), so that loading a dump changes nothing.

A definition is checked whole before anything is written: the slug, the
title, the query, max_age, and the parameters with `chart_params`, each
refusal naming its field.
"""

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from imagecache import chart_params
from imagecache.errors import ChartInvalid, ChartNotFound, ChartsRefused
from imagecache.ids import CHART_SLUG_RE
from imagecache.models import Chart

logger = logging.getLogger(__name__)

# The fields of a chart in a charts file, in the order a dump writes them.
FIELDS: Final = ("slug", "title", "query", "max_age", "params")
TITLE_MAX: Final = Chart._meta.get_field("title").max_length or 200
# A week: an image older than that is no longer "fresh" for any wallboard.
MAX_AGE_MAX: Final = 7 * 24 * 3600

Outcome = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class Definition:
    """A checked chart definition, its params as `Param.as_dict()` writes them."""

    slug: str
    title: str
    query: dict[str, Any]
    max_age: int
    params: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}

    @classmethod
    def of(cls, chart: Chart) -> "Definition":
        return cls(chart.slug, chart.title, chart.query, chart.max_age, chart.params)


@dataclass(frozen=True)
class LoadResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0

    def __str__(self) -> str:
        return (
            f"{self.created} created, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.deleted} deleted"
        )


def definition_check(
    *, slug: Any, title: Any, query: Any, max_age: Any = None, params: Any = None
) -> Definition:
    """The definition, checked; ChartInvalid naming the first field that does not fit."""
    if not isinstance(slug, str) or not CHART_SLUG_RE.match(slug):
        raise ChartInvalid("slug", "must be 1 to 64 lower-case letters, digits and '-'")
    if not isinstance(title, str) or not title.strip():
        raise ChartInvalid("title", "must be a non-empty string")
    if len(title) > TITLE_MAX:
        raise ChartInvalid("title", f"must be at most {TITLE_MAX} characters")
    if not isinstance(query, dict) or not query:
        raise ChartInvalid("query", "must be a non-empty JSON object (a Kentik query)")
    try:
        json.dumps(query, allow_nan=False)
    except (TypeError, ValueError) as exc:
        # A YAML file may give a date or a NaN, which JSON (and Kentik) cannot hold.
        raise ChartInvalid("query", f"must hold only JSON values: {exc}") from None
    if max_age is None:
        max_age = settings.REUSE_MAX_AGE
    if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 1:
        raise ChartInvalid("max_age", "must be a whole number of seconds, at least 1")
    if max_age > MAX_AGE_MAX:
        raise ChartInvalid("max_age", f"must be at most {MAX_AGE_MAX} seconds")
    parsed = chart_params.params_parse(params)
    chart_params.definition_check(query, parsed)
    return Definition(slug, title, query, max_age, [param.as_dict() for param in parsed])


def chart_save(
    *, slug: Any, title: Any, query: Any, max_age: Any = None, params: Any = None
) -> tuple[Chart, Outcome]:
    """Create or update the chart `slug`; an unchanged one is not written."""
    definition = definition_check(
        slug=slug, title=title, query=query, max_age=max_age, params=params
    )
    with transaction.atomic():
        return _save(definition)


def _save(definition: Definition) -> tuple[Chart, Outcome]:
    chart = Chart.objects.select_for_update().filter(slug=definition.slug).first()
    if chart is not None and Definition.of(chart) == definition:
        return chart, "unchanged"
    now = timezone.now()
    if chart is None:
        chart = Chart(slug=definition.slug, created_at=now)
        outcome: Outcome = "created"
    else:
        outcome = "updated"
    chart.title, chart.query = definition.title, definition.query
    chart.max_age, chart.params = definition.max_age, definition.params
    chart.updated_at = now
    chart.save()
    logger.info("chart %s %s", definition.slug, outcome)
    return chart, outcome


def chart_delete(*, slug: str) -> None:
    """Delete a chart (its images' rows go with it; their fetches are pruned
    as any other); ChartNotFound if there is none."""
    deleted, _ = Chart.objects.filter(slug=slug).delete()
    if not deleted:
        raise ChartNotFound()
    logger.info("chart %s deleted", slug)


def charts_load(*, documents: Iterable[tuple[str, Any]], prune: bool) -> LoadResult:
    """Create or update every chart of `documents` (a file's name and what it
    parsed to: `{"charts": [...]}`), and with `prune` delete the charts none
    names: all or nothing. ChartsRefused naming the file, the chart and the
    field before anything is written."""
    definitions = _documents_check(documents)
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    deleted = 0
    with transaction.atomic():
        for definition in definitions:
            _, outcome = _save(definition)
            counts[outcome] += 1
        if prune:
            slugs = [definition.slug for definition in definitions]
            # The cascade takes the charts' images and activity too: count the charts.
            _, by_model = Chart.objects.exclude(slug__in=slugs).delete()
            deleted = by_model.get(Chart._meta.label, 0)
    result = LoadResult(**counts, deleted=deleted)
    logger.info("charts loaded: %s", result)
    return result


def _documents_check(documents: Iterable[tuple[str, Any]]) -> list[Definition]:
    definitions: list[Definition] = []
    seen: dict[str, str] = {}
    for file, document in documents:
        if not isinstance(document, dict) or not isinstance(document.get("charts"), list):
            raise ChartsRefused(
                file=file, chart="", field="charts", message='must be {"charts": [...]}'
            )
        unknown = sorted(set(document) - {"charts"})
        if unknown:
            raise ChartsRefused(file=file, chart="", field=unknown[0], message="is not a field")
        for index, raw in enumerate(document["charts"]):
            definition = _chart_check(file, index, raw)
            if definition.slug in seen:
                raise ChartsRefused(
                    file=file,
                    chart=definition.slug,
                    field="slug",
                    message=f"is already defined in {seen[definition.slug]}",
                )
            seen[definition.slug] = file
            definitions.append(definition)
    return definitions


def _chart_check(file: str, index: int, raw: Any) -> Definition:
    slug = raw.get("slug") if isinstance(raw, Mapping) else None
    # Named by its slug when it has a usable one, else by its place in the file.
    name = slug if isinstance(slug, str) and CHART_SLUG_RE.match(slug) else f"#{index + 1}"
    if not isinstance(raw, Mapping):
        raise ChartsRefused(file=file, chart=name, field="", message="must be an object")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise ChartsRefused(file=file, chart=name, field=unknown[0], message="is not a field")
    for required in ("slug", "title", "query"):
        if required not in raw:
            raise ChartsRefused(file=file, chart=name, field=required, message="is required")
    try:
        return definition_check(**raw)
    except ChartInvalid as exc:
        raise ChartsRefused(
            file=file, chart=name, field=exc.field, message=exc.message.partition(": ")[2]
        ) from None


def charts_dump() -> dict[str, Any]:
    """Every chart, as `charts_load` reads it."""
    return {"charts": [Definition.of(chart).as_dict() for chart in Chart.objects.order_by("slug")]}
