"""Saved charts for tools and people: the list (`GET /charts/`), the chart
page (`GET /charts/{slug}`: HTML for a browser, JSON on request), and the
writes of tools (`PUT` and `DELETE /charts/{slug}`, with a DRF token and the
admin's permissions on charts). The image itself (`/charts/{slug}.{ext}`) is
`views.ChartImageGetApi`'s.

With signing on, the list and the page show signed URLs: they need a
signature of their own URL, or a staff session.
"""

from typing import Any, ClassVar

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.utils.html import escape
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from imagecache import chart_params, chart_urls
from imagecache.api import openapi
from imagecache.errors import ChartInvalid
from imagecache.hashing import canonical_json
from imagecache.media import BY_EXTENSION
from imagecache.models import Chart
from imagecache.selectors.charts import ChartRender, chart_get, chart_renders, charts_list
from imagecache.services import chart_definitions, portal

FORMATS = list(BY_EXTENSION)
NO_CACHE = {"Cache-Control": "private, no-cache"}


def viewer_check(request: Request, given: dict[str, str]) -> bool:
    """Whether the viewer is staff; otherwise, with signing on, SignatureRefused
    unless the URL is rightly signed."""
    staff = bool(request.user and request.user.is_staff)
    if not staff:
        chart_urls.url_verify(path=request.path_info, params=given)
    return staff


def image_urls(slug: str, params: dict[str, str]) -> dict[str, str]:
    return {
        ext: chart_urls.url_make(path=chart_urls.chart_path(slug, ext), params=params)
        for ext in FORMATS
    }


class ChartOutputSerializer(serializers.Serializer):
    slug = serializers.CharField()
    title = serializers.CharField()
    query = serializers.JSONField()
    max_age = serializers.IntegerField()
    params = serializers.JSONField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ChartListApi(APIView):
    authentication_classes = [SessionAuthentication]

    @extend_schema_serializer(component_name="ChartListItem")
    class OutputSerializer(serializers.Serializer):
        slug = serializers.CharField()
        title = serializers.CharField()
        max_age = serializers.IntegerField(help_text="Seconds an image may age before a refresh.")
        params = serializers.JSONField(help_text="The declared parameters.")
        page = serializers.SerializerMethodField(
            help_text="The chart page's URL (signed when signing is on)."
        )
        images = serializers.SerializerMethodField(help_text="Per extension, the image's URL.")

        def get_page(self, chart: Chart) -> str:
            return chart_urls.url_make(path=chart_urls.chart_path(chart.slug))

        def get_images(self, chart: Chart) -> dict[str, str]:
            # With each parameter's default: a chart with a parameter that
            # has none needs it added (and signed: manage.py chart_url).
            return image_urls(chart.slug, {})

    @openapi.chart_list(OutputSerializer)
    def get(self, request: Request) -> Response:
        viewer_check(request, chart_params.query_values(request.query_params.lists()))
        charts = charts_list()
        return Response({"charts": self.OutputSerializer(charts, many=True).data}, headers=NO_CACHE)


class ChartPermission(BasePermission):
    """The admin's model permission on charts that the view names for the method."""

    def has_permission(self, request: Request, view: Any) -> bool:
        required = view.permissions_required[request.method]
        return bool(request.user and request.user.has_perm(required))


class ChartApi(APIView):
    """`/charts/{slug}`: the chart page for GET and HEAD (a session, or a
    signature with signing on); a tool's write for PUT and DELETE (a DRF
    token and the admin's permission on charts)."""

    permissions_required: ClassVar[dict[str, str]] = {
        "PUT": "imagecache.change_chart",
        "DELETE": "imagecache.delete_chart",
    }

    # Named apart from POST /requests' InputSerializer in the API's description.
    @extend_schema_serializer(component_name="ChartInput")
    class InputSerializer(serializers.Serializer):
        slug = serializers.CharField(required=False)
        title = serializers.JSONField()
        query = serializers.JSONField()
        max_age = serializers.JSONField(required=False)
        params = serializers.JSONField(required=False)

    def _writes(self) -> bool:
        # No request yet while drf-spectacular builds its own: the page's.
        request = getattr(self, "request", None)
        return request is not None and request.method in self.permissions_required

    def get_authenticators(self) -> list[Any]:
        return [TokenAuthentication()] if self._writes() else [SessionAuthentication()]

    def get_permissions(self) -> list[Any]:
        return [IsAuthenticated(), ChartPermission()] if self._writes() else []

    @openapi.chart_page
    def get(self, request: Request, slug: str) -> HttpResponseBase:
        given = chart_params.query_values(request.query_params.lists())
        staff = viewer_check(request, given)
        chart = chart_get(slug=slug)
        page = ChartPage.of(
            chart, {k: v for k, v in given.items() if k not in chart_params.RESERVED}
        )
        if request.get_preferred_type(["text/html", "application/json"]) == "application/json":
            return Response(page.as_json(), headers=NO_CACHE)
        return page.render(request._request, form=staff or not chart_urls.url_keys())

    @openapi.chart_put(InputSerializer, ChartOutputSerializer)
    def put(self, request: Request, slug: str) -> Response:
        if not isinstance(request.data, dict):
            raise serializers.ValidationError("The request body must be a JSON object.")
        unknown = sorted(set(request.data) - set(chart_definitions.FIELDS))
        if unknown:
            raise ChartInvalid(unknown[0], "is not a field of a chart")
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields = serializer.validated_data
        if fields.pop("slug", slug) != slug:
            raise ChartInvalid("slug", "differs from the URL's")
        chart, outcome = chart_definitions.chart_save(slug=slug, **fields)
        return Response(
            {**ChartOutputSerializer(chart).data, "outcome": outcome},
            status=201 if outcome == "created" else 200,
        )

    @openapi.chart_delete
    def delete(self, request: Request, slug: str) -> Response:
        chart_definitions.chart_delete(slug=slug)
        return Response(status=204)


def markdown_text(text: str) -> str:
    """`text` as the alt text of a Markdown image: its brackets escaped."""
    return text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


class ChartPage:
    """What the chart page shows: the definition, the values asked for (each
    checked; a missing one without default leaves no image, and the form
    asks for it), the URLs to embed, and the last render of each format."""

    def __init__(self, chart: Chart, params: list[chart_params.Param], given: dict[str, str]):
        missing = {p.name for p in params if p.name not in given and p.default is None}
        self.chart, self.params, self.given, self.missing = chart, params, given, missing
        self.values = chart_params.values_check([p for p in params if p.name not in missing], given)

    @classmethod
    def of(cls, chart: Chart, given: dict[str, str]) -> "ChartPage":
        return cls(chart, chart_params.params_parse(chart.params), given)

    def renders(self) -> list[ChartRender]:
        values_json = canonical_json(self.values).decode()
        return chart_renders(chart=self.chart, values_json=values_json, image_types=FORMATS)

    def as_json(self) -> dict[str, Any]:
        return {
            **ChartOutputSerializer(self.chart).data,
            "values": self.values,
            "missing": sorted(self.missing),
            "images": image_urls(self.chart.slug, self.given) if not self.missing else {},
            "renders": {
                render.image_type: {
                    "state": render.state,
                    "rendered_at": render.rendered_at,
                    "size": render.size,
                    "media_type": render.media_type,
                }
                for render in self.renders()
            },
        }

    def render(self, request: HttpRequest, *, form: bool) -> HttpResponse:
        slug = self.chart.slug
        png = chart_urls.chart_path(slug, "png")
        url = chart_urls.url_make(path=png, params=self.given)
        renders = self.renders()
        context = {
            "chart": self.chart,
            "image_src": None
            if self.missing
            else chart_urls.url_make(path=png, params=self.given, absolute=False),
            "image_url": url,
            "rendered_at": renders[0].rendered_at,
            "renders": renders,
            "fields": [
                {
                    "param": p,
                    "value": self.given.get(p.name, "" if p.default is None else p.default),
                }
                for p in self.params
            ]
            if form
            else [],
            "form_action": chart_urls.chart_path(slug),
            # Kentik's portal link of the query, once Kentik gave it (asked
            # for in the background on the first view).
            "portal_url": None
            if self.missing
            else portal.portal_link_get(
                query=chart_params.query_fill(self.chart.query, self.values)
            ),
            "snippets": None
            if self.missing
            else [
                ("URL", url),
                ("Markdown", f"![{markdown_text(self.chart.title)}]({url})"),
                ("HTML", f'<img src="{escape(url)}" alt="{escape(self.chart.title)}">'),
                ("Confluence wiki markup", f"!{url}!"),
            ],
        }
        response = render(request, "imagecache/chart.html", context)
        response["Cache-Control"] = NO_CACHE["Cache-Control"]
        return response
