"""The admin's building blocks: read-only rows the service makes, rows with
an image, and the lists' filters."""

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.db.models import Model, QuerySet
from django.http import FileResponse, Http404, HttpRequest
from django.urls import URLPattern, path
from django.utils import timezone

from imagecache.admin.display import image_response
from imagecache.media import EXTENSIONS


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
