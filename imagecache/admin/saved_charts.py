"""Saved charts for operators: create, edit (the query and the parameters as
JSON, checked by `services.chart_definitions`), delete, render now, and the
list with a thumbnail, the last render and the last day's views and Kentik
calls; actions refresh and purge. Not `charts.py`, which draws the cache's
last 24 hours."""

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from imagecache import chart_urls
from imagecache.admin.display import DAY, PREVIEW_STYLE, THUMBNAIL_STYLE, plural, when
from imagecache.errors import ChartInvalid
from imagecache.media import IMAGE_TYPES
from imagecache.models import Chart
from imagecache.selectors.charts import charts_with_activity
from imagecache.services import chart_definitions, charts


class ChartForm(forms.ModelForm):
    """The definition as the API and charts files give it, checked whole by
    the service; a refusal is shown at the field it names."""

    class Meta:
        model = Chart
        fields = ("slug", "title", "max_age", "query", "params")
        widgets = {
            "query": forms.Textarea(attrs={"rows": 14, "cols": 80, "class": "vLargeTextField"}),
            "params": forms.Textarea(attrs={"rows": 6, "cols": 80, "class": "vLargeTextField"}),
        }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        slug = cleaned.get("slug", self.instance.slug)
        try:
            definition = chart_definitions.definition_check(
                slug=slug,
                title=cleaned.get("title"),
                query=cleaned.get("query"),
                max_age=cleaned.get("max_age"),
                params=cleaned.get("params"),
            )
        except ChartInvalid as exc:
            field = exc.field.partition("[")[0].partition(".")[0]
            self.add_error(field if field in self.fields else None, exc.message)
            return cleaned
        cleaned["params"] = definition.params
        return cleaned


def default_image_url(
    chart: Chart, image_type: str = "png", *, absolute: bool = True
) -> str | None:
    """The chart's image with its parameters' defaults; None when one has none."""
    if any("default" not in param for param in chart.params):
        return None
    return chart_urls.url_make(
        path=chart_urls.chart_path(chart.slug, image_type), absolute=absolute
    )


def image_link(href: str, src: str, chart: Chart, style: str, loading: str) -> str:
    return format_html(
        '<a href="{}"><img src="{}" alt="{}" style="{}" loading="{}"></a>',
        href,
        src,
        chart.title,
        style,
        loading,
    )


@admin.register(Chart)
class ChartAdmin(admin.ModelAdmin):
    form = ChartForm
    list_display = (
        "title",
        "slug",
        "thumbnail",
        "last_render_display",
        "views_day",
        "calls_day",
        "state",
    )
    search_fields = ("slug", "title")
    search_help_text = "Part of a slug or of a title."
    ordering = ("slug",)
    actions = ("refresh_now", "purge")
    readonly_fields = ("urls_shown", "preview", "created_at", "updated_at")
    change_form_template = "admin/imagecache/chart/change_form.html"

    def get_fieldsets(self, request: HttpRequest, obj: Chart | None = None) -> Any:
        definition = (None, {"fields": ("slug", "title", "max_age", "query", "params")})
        if obj is None:
            return (definition,)
        return (
            definition,
            ("URLs", {"fields": ("urls_shown",)}),
            ("Image", {"fields": ("preview", "created_at", "updated_at")}),
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Chart | None = None) -> Any:
        # A slug is the chart's name in every URL handed out: a new one is a new chart.
        return (*self.readonly_fields, "slug") if obj is not None else self.readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Chart]:
        return charts_with_activity(since=timezone.now() - timedelta(seconds=DAY))

    def save_model(self, request: HttpRequest, obj: Chart, form: Any, change: bool) -> None:
        saved, _ = chart_definitions.chart_save(
            slug=obj.slug, title=obj.title, query=obj.query, max_age=obj.max_age, params=obj.params
        )
        obj.pk = saved.pk

    def delete_model(self, request: HttpRequest, obj: Chart) -> None:
        chart_definitions.chart_delete(slug=obj.slug)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Chart]) -> None:
        for chart in queryset:
            chart_definitions.chart_delete(slug=chart.slug)

    @admin.display(description="thumbnail")
    def thumbnail(self, chart: Chart) -> str:
        url = default_image_url(chart, absolute=False)
        if url is None:
            return "needs a value"
        return image_link(chart_urls.chart_path(chart.slug), url, chart, THUMBNAIL_STYLE, "lazy")

    @admin.display(description="last render", ordering="last_render")
    def last_render_display(self, chart: Chart) -> str | None:
        rendered = chart.last_render  # type: ignore[attr-defined] # annotated
        return when(rendered) if rendered is not None else None

    @admin.display(description="views, last day", ordering="views_day")
    def views_day(self, chart: Chart) -> int:
        return int(chart.views_day)  # type: ignore[attr-defined] # annotated

    @admin.display(description="Kentik calls, last day", ordering="refreshes_day")
    def calls_day(self, chart: Chart) -> int:
        return int(chart.refreshes_day)  # type: ignore[attr-defined] # annotated

    @admin.display(description="state")
    def state(self, chart: Chart) -> str:
        return str(chart.newest_state or "never rendered")  # type: ignore[attr-defined]

    @admin.display(description="URLs (signed when CHART_URL_KEYS is set)")
    def urls_shown(self, chart: Chart) -> str:
        rows = [("page", chart_urls.url_make(path=chart_urls.chart_path(chart.slug)))]
        for image in IMAGE_TYPES:
            url = default_image_url(chart, image.extension)
            if url is not None:
                rows.append((image.extension, url))
        return format_html(
            "<table>{}</table>",
            format_html_join("", "<tr><th>{}</th><td><code>{}</code></td></tr>", rows),
        )

    @admin.display(description="image (png, default values)")
    def preview(self, chart: Chart) -> str:
        url = default_image_url(chart, absolute=False)
        if url is None:
            return "Every parameter needs a default for a preview."
        # The image route answers the newest image, and waits for a first render.
        return image_link(url, url, chart, PREVIEW_STYLE, "eager")

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<path:object_id>/render/",
                self.admin_site.admin_view(require_POST(self.render_view)),
                name="imagecache_chart_render",
            ),
            *super().get_urls(),
        ]

    def render_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        chart = self.get_object(request, unquote(object_id))
        if chart is None or not self.has_change_permission(request, chart):
            raise Http404("No such chart")
        self._refresh(request, [chart])
        return HttpResponseRedirect(reverse("admin:imagecache_chart_change", args=[chart.pk]))

    def _refresh(self, request: HttpRequest, chosen: list[Chart]) -> None:
        started, refused = 0, []
        for chart in chosen:
            try:
                charts.chart_refresh(chart=chart)
            except ChartInvalid as exc:
                refused.append(f"{chart.slug} ({exc.message})")
            else:
                started += 1
        if started:
            self.message_user(
                request,
                f"Rendering {plural(started, 'chart')} now (png, default values): "
                "the image shows once Kentik answers.",
                messages.SUCCESS,
            )
        if refused:
            self.message_user(request, f"Not rendered: {', '.join(refused)}", messages.WARNING)

    @admin.action(description="Refresh now (png, default values)", permissions=["change"])
    def refresh_now(self, request: HttpRequest, queryset: QuerySet[Chart]) -> None:
        self._refresh(request, list(queryset))

    @admin.action(description="Purge their images", permissions=["change"])
    def purge(self, request: HttpRequest, queryset: QuerySet[Chart]) -> None:
        total = None
        chosen = list(queryset)
        for chart in chosen:
            removed = charts.chart_purge(chart=chart)
            total = removed if total is None else total + removed
        if total is not None:
            self.message_user(
                request,
                f"Purged {plural(len(chosen), 'chart')}: "
                f"{plural(total.entries, 'entry', 'entries')}, "
                f"{plural(total.fetches, 'fetch', 'fetches')}, {plural(total.files, 'file')}.",
                messages.SUCCESS,
            )
