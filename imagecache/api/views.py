"""The HTTP API: one view per operation, each validating, calling one
service or selector, and serializing."""

import time
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotModified,
)
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import (
    http_date,
    parse_etags,
    parse_http_date,
    parse_http_date_safe,
    quote_etag,
)
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from imagecache.api import chart_fastpath, openapi
from imagecache.api.parsers import AnyTypeJSONParser
from imagecache.api.serializers import JSONObjectField, TTLField
from imagecache.chart_params import RESERVED, query_values
from imagecache.errors import AdhocQueriesRefused, EntryNotFound
from imagecache.files import links
from imagecache.media import EXTENSIONS, IMAGE_CSP
from imagecache.models import Fetch
from imagecache.ops import metrics
from imagecache.ops.local_kentik import LOCAL_EMAIL
from imagecache.selectors.info import cache_info
from imagecache.services import charts, entries
from imagecache.signing import url_verify
from imagecache.waiting import ready
from imagecache.wire import STALE_HEADER


class RequestCreateApi(APIView):
    parser_classes = [AnyTypeJSONParser]

    class InputSerializer(serializers.Serializer):
        api_query = JSONObjectField()
        ttl = TTLField(required=False, allow_null=True)

    class OutputSerializer(serializers.Serializer):
        id = serializers.CharField()

    @openapi.request_create(InputSerializer, OutputSerializer)
    def post(self, request: Request) -> Response:
        if not settings.ADHOC_QUERIES:
            raise AdhocQueriesRefused()
        if not isinstance(request.data, dict):
            raise serializers.ValidationError("The request body must be a JSON object.")
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        entry = entries.entry_create(**serializer.validated_data)
        return Response(self.OutputSerializer(entry).data)


class ImageGetApi(APIView):
    class FilterSerializer(serializers.Serializer):
        wait = serializers.FloatField(
            min_value=0,
            required=False,
            error_messages={
                "invalid": "Must be a number of seconds.",
                "min_value": "Must be at least 0 seconds.",
            },
        )

    # HEAD is answered by `get` (Django's View.setup maps it), with no body.
    @openapi.image_get
    def get(self, request: Request, entry_id: str) -> HttpResponseBase:
        # A plain dict, so that an empty `wait=` is refused rather than ignored.
        filters = self.FilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        answer = ready.entry_get_ready(entry_id=entry_id, **filters.validated_data)
        headers = _caching_headers(answer)
        response: HttpResponseBase
        if _not_modified(request, headers):
            response = _not_modified_response(answer.fetch, headers)
        else:
            response = _image_response(request, answer.fetch, headers, name=answer.entry.id)
        entries.fetch_mark_read(fetch=answer.fetch)
        metrics.CACHE_HITS.inc()
        return response


# Says that an older image of the query answers, and why (see ready.Answer).
def _caching_headers(answer: ready.Answer) -> dict[str, str]:
    """A ready image never changes: cacheable by anyone until its entry expires.
    A stale one stands in for the entry's own: a cache must ask again each time."""
    entry, fetch = answer.entry, answer.fetch
    now = timezone.now()
    if answer.stale:
        headers = {"Cache-Control": "no-cache", STALE_HEADER: answer.stale}
        if fetch.finished_at is not None:
            headers["Age"] = str(max(0, int((now - fetch.finished_at).total_seconds())))
    else:
        fresh_for = max(0, int((entry.expires_at - now).total_seconds()))
        headers = {
            "Cache-Control": f"public, max-age={fresh_for}, immutable",
            "Expires": http_date(entry.expires_at.timestamp()),
        }
    return _validators(fetch, headers)


def _validators(fetch: Fetch, headers: dict[str, str]) -> dict[str, str]:
    """ETag and Last-Modified of an image, added to `headers`."""
    if fetch.content_hash:
        headers["ETag"] = quote_etag(fetch.content_hash)
    if fetch.finished_at is not None:
        headers["Last-Modified"] = http_date(fetch.finished_at.timestamp())
    return headers


def _not_modified(request: Request, headers: dict[str, str]) -> bool:
    """RFC 9110 13.2.2 for GET and HEAD: If-None-Match (weak comparison) when
    present, else If-Modified-Since."""
    if_none_match = request.headers.get("If-None-Match", "").strip()
    if if_none_match:
        etags = parse_etags(if_none_match)
        if etags == ["*"]:
            return True
        etag = headers.get("ETag")
        return etag is not None and _weak(etag) in {_weak(tag) for tag in etags}
    since = parse_http_date_safe(request.headers.get("If-Modified-Since", ""))
    modified = headers.get("Last-Modified")
    return since is not None and modified is not None and parse_http_date(modified) <= since


def _weak(etag: str) -> str:
    return etag.removeprefix("W/")


def _not_modified_response(fetch: Fetch, headers: dict[str, str]) -> HttpResponseNotModified:
    response = HttpResponseNotModified()
    for name in ("ETag", "Cache-Control", "Expires", "Age", STALE_HEADER):
        if name in headers:
            response[name] = headers[name]
    # Else CommonMiddleware would say 0, which a cache could take for the image's.
    response["Content-Length"] = str(fetch.size or 0)
    return response


def _image_response(
    request: Request, fetch: Fetch, headers: dict[str, str], *, name: str
) -> HttpResponseBase:
    """The image, saved by a browser as `name` and its extension; or only its
    headers, for HEAD and for nginx to send the bytes."""
    # No script runs in an image, whatever it holds (nginx keeps this header
    # when it sends the file for X-Accel-Redirect).
    headers["Content-Security-Policy"] = IMAGE_CSP
    if settings.X_ACCEL_REDIRECT_PREFIX and isinstance(default_storage, FileSystemStorage):
        headers["X-Accel-Redirect"] = settings.X_ACCEL_REDIRECT_PREFIX + quote(fetch.file_name)
    elif request.method == "HEAD":
        headers["Content-Length"] = str(fetch.size or 0)
    else:
        try:
            image = default_storage.open(fetch.file_name, "rb")
        except FileNotFoundError:
            raise EntryNotFound() from None  # pruned or evicted meanwhile
        # Saved under the name the client knows, not the storage's.
        filename = name + EXTENSIONS.get(fetch.media_type, "")
        return FileResponse(
            image, content_type=fetch.media_type, headers=headers, filename=filename
        )
    if not default_storage.exists(fetch.file_name):
        raise EntryNotFound()  # pruned or evicted meanwhile
    return HttpResponse(content_type=fetch.media_type, headers=headers)


class ChartImageGetApi(APIView):
    """`GET|HEAD /charts/{slug}.{ext}`: a saved chart's newest image."""

    @openapi.chart_image_get
    def get(self, request: Request, slug: str, ext: str) -> HttpResponseBase:
        # Read before the chart is: what the fast path learns from this
        # answer is dropped if the chart changes meanwhile.
        stamp = links.charts_stamp()
        given = query_values(request.query_params.lists())
        if settings.CHART_URL_KEYS:
            url_verify(
                keys=settings.CHART_URL_KEYS, path=request.path_info, params=given, now=time.time()
            )
        filters = ImageGetApi.FilterSerializer(data={k: given[k] for k in ("wait",) if k in given})
        filters.is_valid(raise_exception=True)
        answer = charts.chart_image_get(
            slug=slug,
            image_type=ext,
            given={name: value for name, value in given.items() if name not in RESERVED},
            **filters.validated_data,
        )
        chart_fastpath.LEARNT.learn(stamp=stamp, url=(slug, ext, given), answer=answer)
        headers = _chart_caching_headers(answer)
        if _not_modified(request, headers):
            return _not_modified_response(answer.fetch, headers)
        return _image_response(request, answer.fetch, headers, name=slug)


def _chart_caching_headers(answer: charts.ChartAnswer) -> dict[str, str]:
    """Fresh for what is left of the chart's max_age: a browser or CDN in front
    asks again once a newer image may be there. A stale one (Kentik failing)
    must be asked for again each time, as for /image."""
    now = timezone.now()
    headers = {"Age": str(answer.age(now))}
    if answer.stale:
        headers |= {"Cache-Control": "no-cache", STALE_HEADER: answer.stale}
    else:
        headers["Cache-Control"] = (
            f"public, max-age={answer.fresh_for(now)},"
            f" stale-while-revalidate={answer.chart.max_age},"
            f" stale-if-error={settings.STALE_IF_ERROR}"
        )
    return _validators(answer.fetch, headers)


class InfoApi(APIView):
    class FilterSerializer(serializers.Serializer):
        limit = serializers.IntegerField(min_value=0, max_value=10_000, default=100)

    @openapi.info
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        info: dict[str, Any] = cache_info(**filters.validated_data)
        return Response(info)


def index(request: HttpRequest) -> HttpResponse:
    """A page for people who open the service in a browser."""
    context = {
        "info": cache_info(limit=0),
        "kentik_url": settings.KENTIK_API_URL,
        "simulated": settings.KT_AUTH_EMAIL == LOCAL_EMAIL,
    }
    return render(request, "imagecache/index.html", context)
