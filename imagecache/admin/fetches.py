"""Fetches for operators: one Kentik call each, with its lease, outcome and image."""

from django.contrib import admin
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html

from imagecache.admin.base import ImageRowAdmin, MediaTypeFilter, QueryLabelAdmin
from imagecache.admin.display import PREVIEW_STYLE, image_html, plural, pretty_json
from imagecache.models import Fetch, FetchState


@admin.register(Fetch)
class FetchAdmin(QueryLabelAdmin, ImageRowAdmin):
    list_display = (
        "id",
        "query_label",
        "chart",
        "short_hash",
        "state",
        "attempts",
        "lease_owner",
        "lease_until",
        "error_status",
        "short_error",
        "media_type",
        "size_display",
        "entry_count",
        "created_at",
        "finished_at",
    )
    list_filter = ("state", MediaTypeFilter)
    search_fields = ("^query_hash", "lease_owner", "error_message")
    search_help_text = "The beginning of a query hash, a lease owner, or words of an error."
    ordering = ("-created_at",)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "query_label",
                    "chart",
                    "query_hash",
                    "state",
                    "entries_link",
                    "attempts",
                )
            },
        ),
        (
            "Times",
            {"fields": ("created_at", "enqueued_at", "started_at", "finished_at", "last_read_at")},
        ),
        ("Lease", {"fields": ("lease_owner", "lease_until")}),
        ("Image", {"fields": ("media_type", "size_display", "content_hash", "preview")}),
        ("Kentik", {"fields": ("error_status", "error_message", "query")}),
    )
    # Every field shown: the rows are the machine's, not an operator's to edit.
    readonly_fields = flatten_fieldsets(fieldsets)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Fetch]:
        # The query text can be long and the list never shows it.
        queryset = super().get_queryset(request).defer("query_json")
        return self.label_annotate(queryset.annotate(entry_count=Count("entries")))

    def image_fetch_id(self, obj: Fetch) -> int:
        return obj.pk

    @admin.display(description="query hash", ordering="query_hash")
    def short_hash(self, fetch: Fetch) -> str:
        return format_html('<code title="{}">{}…</code>', fetch.query_hash, fetch.query_hash[:12])

    @admin.display(description="error")
    def short_error(self, fetch: Fetch) -> str | None:
        if not fetch.error_message:
            return None
        text = fetch.error_message
        return text if len(text) <= 60 else text[:59] + "…"

    @admin.display(description="size", ordering="size")
    def size_display(self, fetch: Fetch) -> str | None:
        return filesizeformat(fetch.size) if fetch.size is not None else None

    @admin.display(description="entries", ordering="entry_count")
    def entry_count(self, fetch: Fetch) -> int:
        # Annotated by get_queryset, which the model's type does not know.
        return int(fetch.entry_count)  # type: ignore[attr-defined]

    @admin.display(description="entries")
    def entries_link(self, fetch: Fetch) -> str:
        url = reverse("admin:imagecache_entry_changelist")
        return format_html(
            '<a href="{}?fetch__id__exact={}">{}</a>',
            url,
            fetch.pk,
            plural(self.entry_count(fetch), "entry", "entries"),
        )

    @admin.display(description="image")
    def preview(self, fetch: Fetch) -> str | None:
        if fetch.state != FetchState.READY:
            return None
        url = reverse("admin:imagecache_fetch_image", args=[fetch.pk])
        return image_html(url, fetch, style=PREVIEW_STYLE)

    @admin.display(description="query sent to Kentik")
    def query(self, fetch: Fetch) -> str:
        return pretty_json(fetch.query_json)
