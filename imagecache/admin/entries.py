"""The cache for operators: entries and fetches, read-only (the service makes
them), with actions that call services, and the cache at a glance above the
entries. Images are shown through staff-only views that read them from
storage, so CACHE_PATH is never exposed."""

import json
from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.db.models import Count, Model, QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django_q.models import Failure, OrmQ, Schedule, Success

from imagecache import selectors
from imagecache.errors import EntryNotFound
from imagecache.ids import entry_id_parts
from imagecache.media import EXTENSIONS, INLINE_MEDIA_TYPES
from imagecache.models import Entry, Fetch, FetchState
from imagecache.services import operators

admin.site.site_header = "Kentik Image Cache"
admin.site.site_title = "Kentik Image Cache"
admin.site.index_title = "Operating the cache"

THUMBNAIL_STYLE = "max-height: 60px; max-width: 160px"
PREVIEW_STYLE = "max-width: 100%; border: 1px solid var(--hairline-color)"
# An image is opened at the admin's origin: a script in an SVG must not run
# there with the operator's session (the sandbox gives it an opaque origin).
IMAGE_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox"

HOUR = 3600
DAY = 24 * HOUR


def time_left(expires_at: datetime, now: datetime) -> str:
    """'in 45 s', 'in 4 min', 'in 3 h', 'in 2 days', or 'expired'."""
    seconds = int((expires_at - now).total_seconds())
    if seconds <= 0:
        return "expired"
    if seconds < 60:
        return f"in {seconds} s"
    if seconds < HOUR:
        return f"in {seconds // 60} min"
    if seconds < 2 * DAY:
        return f"in {seconds // HOUR} h"
    return f"in {seconds // DAY} days"


def when(moment: datetime) -> str:
    """A compact local date and time for the lists: '2026-11-28 12:04:05'."""
    return date_format(timezone.localtime(moment), "Y-m-d H:i:s")


def duration(age: timedelta) -> str:
    """A short, rounded age: '42 s', '3 min 5 s', '2 h 10 min', '3 days 4 h'."""
    seconds = max(0, int(age.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < HOUR:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < DAY:
        return f"{seconds // HOUR} h {seconds % HOUR // 60} min"
    return f"{seconds // DAY} days {seconds % DAY // HOUR} h"


def plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"


def pretty_json(text: str) -> str:
    """HTML: the query as the client sent it, indented, escaped, in <pre>."""
    try:
        pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        pretty = text
    return format_html(
        '<pre style="white-space: pre-wrap; max-height: 40em; overflow: auto">{}</pre>', pretty
    )


def image_response(fetch_id: int) -> FileResponse:
    """A ready fetch's image, streamed from storage; 404 if it is not there."""
    try:
        image, media_type = selectors.fetch_image_open(fetch_id=fetch_id)
    except EntryNotFound:
        raise Http404("No stored image") from None
    response = FileResponse(image, content_type=media_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-cache"
    if media_type != "application/pdf":
        # Chromium's PDF viewer does not run in a sandboxed document.
        response["Content-Security-Policy"] = IMAGE_CSP
    return response


def image_html(url: str, fetch: Fetch, *, style: str, lazy: bool = False) -> str:
    """HTML: the image of a ready fetch at `url`, or a link for what <img> cannot show."""
    # PDFs get a link instead.
    if fetch.media_type not in INLINE_MEDIA_TYPES:
        return format_html('<a href="{}">open ({})</a>', url, fetch.media_type)
    return format_html(
        '<a href="{}"><img src="{}" alt="{} chart" style="{}" loading="{}"></a>',
        url,
        url,
        fetch.media_type,
        style,
        "lazy" if lazy else "eager",
    )


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the service makes: viewed, never added, edited or deleted by hand.

    Changes go through the actions, which call services and are allowed by
    the user's model permissions (see `has_purge_permission`)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class ImageRowAdmin(ReadOnlyAdmin):
    """A row with an image: `<id>/image/` serves it to staff (admin_view),
    expired or not, named `imagecache_<model>_image`."""

    def image_fetch_id(self, obj: Any) -> int:
        raise NotImplementedError

    def get_urls(self) -> list[URLPattern]:
        # Before the stock URLs: their "<path:object_id>/" would take this one.
        return [
            path(
                "<path:object_id>/image/",
                self.admin_site.admin_view(self.image_view),
                name=f"imagecache_{self.opts.model_name}_image",
            ),
            *super().get_urls(),
        ]

    def image_view(self, request: HttpRequest, object_id: str) -> FileResponse:
        obj = self.get_object(request, unquote(object_id))
        if obj is None or not self.has_view_permission(request, obj):
            raise Http404(f"No such {self.opts.verbose_name}")
        return image_response(self.image_fetch_id(obj))


class MediaTypeFilter(admin.SimpleListFilter):
    title = "media type"
    parameter_name = "media_type"
    field = "media_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(media_type, media_type) for media_type in EXTENSIONS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(**{self.field: self.value()})
        return queryset


class EntryMediaTypeFilter(MediaTypeFilter):
    field = "fetch__media_type"


class ExpiredFilter(admin.SimpleListFilter):
    title = "expired"
    parameter_name = "expired"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("no", "Live"), ("yes", "Expired (until pruned)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        if self.value() == "yes":
            return queryset.filter(expires_at__lte=now)
        if self.value() == "no":
            return queryset.filter(expires_at__gt=now)
        return queryset


@admin.register(Entry)
class EntryAdmin(ImageRowAdmin):
    list_display = (
        "short_id",
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
        (None, {"fields": ("id", "state", "fetch_link", "created_at", "expiry")}),
        ("Image", {"fields": ("media_type", "size", "preview")}),
        ("Kentik", {"fields": ("kentik_status", "kentik_message", "query")}),
    )
    readonly_fields = (
        "id",
        "state",
        "fetch_link",
        "created_at",
        "expiry",
        "media_type",
        "size",
        "preview",
        "kentik_status",
        "kentik_message",
        "query",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Entry]:
        # The query text can be long and the list never shows it.
        return super().get_queryset(request).select_related("fetch").defer("fetch__query_json")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = {**self._cache_at_a_glance(), **(extra_context or {})}
        return super().changelist_view(request, context)

    def _cache_at_a_glance(self) -> dict[str, Any]:
        stats = selectors.cache_stats()
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
            "cache_stats": stats,
            "cache_states": states,
            "cache_expired_url": f"{changelist}?expired=yes",
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


@admin.register(Fetch)
class FetchAdmin(ImageRowAdmin):
    list_display = (
        "id",
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
        (None, {"fields": ("id", "query_hash", "state", "entries_link", "attempts")}),
        (
            "Times",
            {"fields": ("created_at", "enqueued_at", "started_at", "finished_at", "last_read_at")},
        ),
        ("Lease", {"fields": ("lease_owner", "lease_until")}),
        ("Image", {"fields": ("media_type", "size_display", "content_hash", "preview")}),
        ("Kentik", {"fields": ("error_status", "error_message", "query")}),
    )
    readonly_fields = (
        "id",
        "query_hash",
        "state",
        "entries_link",
        "attempts",
        "created_at",
        "enqueued_at",
        "started_at",
        "finished_at",
        "last_read_at",
        "lease_owner",
        "lease_until",
        "media_type",
        "size_display",
        "content_hash",
        "preview",
        "error_status",
        "error_message",
        "query",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Fetch]:
        # The query text can be long and the list never shows it.
        queryset = super().get_queryset(request).defer("query_json")
        return queryset.annotate(entry_count=Count("entries"))

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
