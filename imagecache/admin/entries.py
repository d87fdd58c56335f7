"""Entries for operators: the cache at a glance above the list, and the
actions (purge, refetch, extend) that call `services.operators`."""

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets, quote
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django_q.models import Failure, OrmQ, Schedule, Success

from imagecache.admin.base import (
    EntryMediaTypeFilter,
    ExpiredFilter,
    ImageRowAdmin,
    QueryLabelAdmin,
)
from imagecache.admin.charts import activity_svg
from imagecache.admin.display import (
    DAY,
    HOUR,
    PREVIEW_STYLE,
    THUMBNAIL_STYLE,
    duration,
    image_html,
    plural,
    pretty_json,
    time_left,
    when,
)
from imagecache.ids import entry_id_parts
from imagecache.models import Entry, FetchState
from imagecache.selectors import shield
from imagecache.selectors.stats import cache_stats, fetch_activity
from imagecache.services import operators


@admin.register(Entry)
class EntryAdmin(QueryLabelAdmin, ImageRowAdmin):
    query_path = "fetch__"
    list_display = (
        "short_id",
        "query_label",
        "chart",
        "state",
        "media_type",
        "size",
        "created",
        "expires",
        "kentik_status",
        "thumbnail",
    )
    list_filter = (
        ("fetch__state", admin.ChoicesFieldListFilter),
        EntryMediaTypeFilter,
        ExpiredFilter,
    )
    search_fields = ("id", "^fetch__query_hash")
    search_help_text = "An entry id or part of it, or the beginning of a query hash."
    list_select_related = ("fetch",)
    ordering = ("-created_at",)
    actions = ("purge", "refetch", "extend_hour", "extend_day")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "query_label",
                    "chart",
                    "state",
                    "fetch_link",
                    "created_at",
                    "expiry",
                )
            },
        ),
        ("Image", {"fields": ("media_type", "size", "preview")}),
        ("Kentik", {"fields": ("kentik_status", "kentik_message", "query")}),
    )
    # Every field shown: the rows are the machine's, not an operator's to edit.
    readonly_fields = flatten_fieldsets(fieldsets)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Entry]:
        # The query text can be long and the list never shows it.
        queryset = super().get_queryset(request).select_related("fetch")
        return self.label_annotate(queryset.defer("fetch__query_json"))

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = {**self._cache_at_a_glance(), **(extra_context or {})}
        return super().changelist_view(request, context)

    def _cache_at_a_glance(self) -> dict[str, Any]:
        stats = cache_stats()
        name = self.admin_site.name
        changelist = reverse("admin:imagecache_entry_changelist", current_app=name)
        states = [
            {
                "label": label,
                "entries": stats.entries_by_state[state],
                "fetches": stats.fetches_by_state[state],
                "url": f"{changelist}?fetch__state__exact={state}&expired=no",
            }
            for state, label in FetchState.choices
        ]
        queue_models: tuple[tuple[str, type[Model]], ...] = (
            ("tasks", Success),
            ("failures", Failure),
            ("schedules", Schedule),
        )
        if self.admin_site.is_registered(OrmQ):  # the ORM broker only
            queue_models += (("queued", OrmQ),)
        return {
            "kentik": shield.kentik_status(),
            "cache_stats": stats,
            "cache_states": states,
            "cache_expired_url": f"{changelist}?expired=yes",
            "cache_activity": activity_svg(fetch_activity(hours=24)),
            "cache_oldest_pending": (
                duration(stats.oldest_pending_age) if stats.oldest_pending_age is not None else None
            ),
            "task_queue_url": reverse(
                "admin:app_list", kwargs={"app_label": "django_q"}, current_app=name
            ),
            "task_queue_links": [
                (
                    label,
                    reverse(
                        f"admin:django_q_{model._meta.model_name}_changelist", current_app=name
                    ),
                )
                for label, model in queue_models
            ],
        }

    def image_fetch_id(self, obj: Entry) -> int:
        return obj.fetch_id

    # --- Columns and fields ---

    @admin.display(description="id", ordering="id")
    def short_id(self, entry: Entry) -> str:
        query_key, expiry = entry_id_parts(entry.pk)
        return format_html(
            '<code title="{}" style="white-space: nowrap">{}…_{}</code>',
            entry.pk,
            query_key[:12],
            expiry,
        )

    @admin.display(description="state", ordering="fetch__state")
    def state(self, entry: Entry) -> str:
        return entry.fetch.get_state_display()

    @admin.display(description="media type", ordering="fetch__media_type")
    def media_type(self, entry: Entry) -> str | None:
        return entry.fetch.media_type or None

    @admin.display(description="size", ordering="fetch__size")
    def size(self, entry: Entry) -> str | None:
        return filesizeformat(entry.fetch.size) if entry.fetch.size is not None else None

    @admin.display(description="created", ordering="created_at")
    def created(self, entry: Entry) -> str:
        return format_html('<span style="white-space: nowrap">{}</span>', when(entry.created_at))

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, entry: Entry) -> str:
        return format_html(
            '<span style="white-space: nowrap">{}</span><br><small>{}</small>',
            when(entry.expires_at),
            time_left(entry.expires_at, timezone.now()),
        )

    @admin.display(description="expires")
    def expiry(self, entry: Entry) -> str:
        """On the change page: also whether the expiry was extended, since the
        id keeps the number it was created with."""
        written = float(entry_id_parts(entry.pk)[1])
        note = ""
        if abs(entry.expires_at.timestamp() - written) > 1e-3:
            note = format_html(
                "<br><small>Extended: the number in the id ({}) was the first expiry.</small>",
                written,
            )
        return format_html("{}{}", self.expires(entry), note)

    @admin.display(description="Kentik status", ordering="fetch__error_status")
    def kentik_status(self, entry: Entry) -> str | None:
        if entry.fetch.state != FetchState.FAILED:
            return None
        return format_html(
            '<span title="{}">{}</span>', entry.fetch.error_message, entry.fetch.error_status
        )

    @admin.display(description="Kentik's message")
    def kentik_message(self, entry: Entry) -> str | None:
        return entry.fetch.error_message or None

    @admin.display(description="image")
    def thumbnail(self, entry: Entry) -> str | None:
        if entry.fetch.state != FetchState.READY:
            return None
        url = reverse("admin:imagecache_entry_image", args=[quote(entry.pk)])
        return image_html(url, entry.fetch, style=THUMBNAIL_STYLE, lazy=True)

    @admin.display(description="image")
    def preview(self, entry: Entry) -> str | None:
        if entry.fetch.state != FetchState.READY:
            return None
        url = reverse("admin:imagecache_entry_image", args=[quote(entry.pk)])
        return image_html(url, entry.fetch, style=PREVIEW_STYLE)

    @admin.display(description="fetch")
    def fetch_link(self, entry: Entry) -> str:
        url = reverse("admin:imagecache_fetch_change", args=[entry.fetch_id])
        return format_html('<a href="{}">{}</a>', url, entry.fetch)

    @admin.display(description="query sent to Kentik")
    def query(self, entry: Entry) -> str:
        return pretty_json(entry.fetch.query_json)

    # --- Actions: each calls a service and says what it did ---

    def has_purge_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("imagecache.delete_entry")

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("imagecache.change_entry")

    @admin.action(
        description="Purge: delete the entries, and their images unless other entries use them",
        permissions=["purge"],
    )
    def purge(self, request: HttpRequest, queryset: QuerySet[Entry]) -> None:
        result = operators.entry_purge(entry_ids=_ids(queryset))
        self.message_user(
            request,
            f"Purged {plural(result.entries, 'entry', 'entries')}, "
            f"{plural(result.fetches, 'fetch', 'fetches')} and "
            f"{plural(result.files, 'file')} ({filesizeformat(result.bytes_freed)} freed).",
            messages.SUCCESS,
        )

    @admin.action(description="Refetch now from Kentik", permissions=["operate"])
    def refetch(self, request: HttpRequest, queryset: QuerySet[Entry]) -> None:
        result = operators.entry_refetch(entry_ids=_ids(queryset))
        message = (
            f"Refetching {plural(result.entries, 'entry', 'entries')}: "
            f"{plural(result.fetches_created, 'new fetch', 'new fetches')} enqueued, "
            f"{plural(result.fetches_joined, 'fetch', 'fetches')} already in flight joined; "
            f"{plural(result.fetches_deleted, 'old fetch', 'old fetches')} deleted."
        )
        if result.expired:
            message += f" Skipped {plural(result.expired, 'expired entry', 'expired entries')}."
        self.message_user(request, message, messages.SUCCESS)

    @admin.action(description="Extend expiry by 1 hour", permissions=["operate"])
    def extend_hour(self, request: HttpRequest, queryset: QuerySet[Entry]) -> None:
        self._extend(request, queryset, HOUR, "1 hour")

    @admin.action(description="Extend expiry by 1 day", permissions=["operate"])
    def extend_day(self, request: HttpRequest, queryset: QuerySet[Entry]) -> None:
        self._extend(request, queryset, DAY, "1 day")

    def _extend(
        self, request: HttpRequest, queryset: QuerySet[Entry], seconds: int, label: str
    ) -> None:
        ids = _ids(queryset)
        extended = operators.entry_extend(entry_ids=ids, seconds=seconds)
        message = (
            f"Extended {plural(extended, 'entry', 'entries')} by {label}; "
            "their ids keep the expiry they were created with."
        )
        if extended < len(ids):
            skipped = len(ids) - extended
            message += f" Skipped {plural(skipped, 'expired entry', 'expired entries')}."
        self.message_user(request, message, messages.SUCCESS)


def _ids(queryset: QuerySet[Entry]) -> list[str]:
    return list(queryset.values_list("pk", flat=True))
