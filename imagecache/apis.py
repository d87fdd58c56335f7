"""The HTTP API: one view per operation, each validating, calling one
service or selector, and serializing."""

from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import render
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from imagecache import metrics, openapi, selectors, services
from imagecache.errors import EntryNotFound
from imagecache.parsers import AnyTypeJSONParser
from imagecache.runner import SIMULATOR_EMAIL
from imagecache.serializers import JSONObjectField, StrictIntegerField


class RequestCreateApi(APIView):
    parser_classes = [AnyTypeJSONParser]

    class InputSerializer(serializers.Serializer):
        api_query = JSONObjectField()
        ttl = StrictIntegerField(min_value=1, required=False, allow_null=True)

    class OutputSerializer(serializers.Serializer):
        id = serializers.CharField()

    @openapi.request_create(InputSerializer, OutputSerializer)
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise serializers.ValidationError("The request body must be a JSON object.")
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        entry = services.entry_create(**serializer.validated_data)
        return Response(self.OutputSerializer(entry).data)


class ImageGetApi(APIView):
    @openapi.image_get
    def get(self, request: Request, entry_id: str) -> FileResponse:
        entry = selectors.entry_get_ready(entry_id=entry_id, wait=settings.ENTRY_WAIT_TIMEOUT)
        try:
            image = default_storage.open(entry.fetch.file_name, "rb")
        except FileNotFoundError:
            raise EntryNotFound() from None  # pruned or evicted meanwhile
        services.fetch_mark_read(fetch=entry.fetch)
        metrics.CACHE_HITS.inc()
        return FileResponse(image, content_type=entry.fetch.media_type)


class InfoApi(APIView):
    class FilterSerializer(serializers.Serializer):
        limit = serializers.IntegerField(min_value=0, max_value=10_000, default=100)

    @openapi.info
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        info: dict[str, Any] = selectors.cache_info(**filters.validated_data)
        return Response(info)


def index(request: HttpRequest) -> HttpResponse:
    """A page for people who open the service in a browser."""
    context = {
        "info": selectors.cache_info(limit=0),
        "kentik_url": settings.KENTIK_API_URL,
        "simulated": settings.KT_AUTH_EMAIL == SIMULATOR_EMAIL,
    }
    return render(request, "imagecache/index.html", context)
