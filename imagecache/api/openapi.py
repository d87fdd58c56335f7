"""The OpenAPI description of the API (drf-spectacular), kept beside the
views rather than in them."""

from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers

from imagecache.api.examples import chart_query
from imagecache.ids import CHART_SLUG_PATTERN
from imagecache.media import MEDIA_TYPES
from imagecache.wire import BODY_LIMIT, STALE_HEADER


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="What went wrong, for people.")
    status = serializers.IntegerField(help_text="The HTTP status, repeated.")
    # DRF's metaclass takes declared fields out of the class: this one does not
    # hide Serializer.fields, as the stubs believe.
    fields = serializers.DictField(  # type: ignore[assignment]
        required=False, help_text="Per-field messages, for a request that failed validation."
    )


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


QUERY_EXAMPLE = {"api_query": chart_query(), "ttl": 600}


_View = TypeVar("_View", bound=Callable[..., Any])


def request_create(request: type, response: type) -> Callable[[_View], _View]:
    """The description of `POST /requests`, given the view's own serializers."""
    return extend_schema(
        # Any Content-Type is read as JSON; JSON is what to send.
        request={"application/json": request},
        responses=_REQUEST_CREATE_RESPONSES | {200: response},
        **_REQUEST_CREATE,
    )


_REQUEST_CREATE_RESPONSES = {
    400: _error("The body is not JSON, or a field is invalid (named in `fields`)."),
    403: _error("ADHOC_QUERIES is off: only saved charts are served."),
    413: _error(f"The body is larger than {BODY_LIMIT} bytes."),
}

_REQUEST_CREATE: dict[str, Any] = dict(
    operation_id="request_create",
    summary="Ask for a chart",
    description=(
        "Registers a Kentik query and answers at once with an image id: the sha256 of the "
        "query's canonical JSON and the expiry as a unix epoch. The chart is fetched in the "
        "background; identical queries share one Kentik call. `api_query` goes to Kentik "
        "unmodified. The body is read as JSON whatever its Content-Type."
    ),
    examples=[
        OpenApiExample("A PNG chart of total traffic", value=QUERY_EXAMPLE, request_only=True),
        OpenApiExample(
            "The id",
            value={
                "id": "4295aa38281c869ae8827320d407bf1dd1f38a7bf65af00551ce461e70f863d5"
                "_1620973821.284400"
            },
            response_only=True,
        ),
    ],
)


class PendingSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The image id asked for.")
    state = serializers.ChoiceField(
        choices=["pending", "fetching"],
        help_text="`pending`: queued for a worker; `fetching`: a worker is calling Kentik.",
    )
    status = serializers.IntegerField(help_text="202, repeated.")
    retry_after = serializers.IntegerField(help_text="Seconds before asking again.")


def _header(name: str, description: str, responses: list[int]) -> OpenApiParameter:
    return OpenApiParameter(
        name,
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        description=description,
        response=responses,
    )


_WAIT = OpenApiParameter(
    "wait",
    {"type": "number", "minimum": 0},
    OpenApiParameter.QUERY,
    required=False,
    description=(
        "How long to wait for an image still being fetched, in seconds (fractions allowed), "
        "at most ENTRY_WAIT_TIMEOUT. `0` never waits: a pending image is answered 202 at once. "
        "Without it, the request waits ENTRY_WAIT_TIMEOUT."
    ),
)

# A 200 of each media type an image may have.
_IMAGES: dict[Any, Any] = {
    (200, media_type): OpenApiResponse(OpenApiTypes.BINARY, description="The chart.")
    for media_type in MEDIA_TYPES.values()
}

image_get = extend_schema(
    operation_id="image_get",
    summary="Get a chart",
    description=(
        "The image, with its real media type. While it is being fetched the request waits, "
        f"at most ENTRY_WAIT_TIMEOUT ({settings.ENTRY_WAIT_TIMEOUT:g} s here) or `wait`; "
        "`wait=0` answers 202 at once instead. A Kentik error is answered with Kentik's status "
        "code and message.\n\n"
        "A ready image never changes, so it is cacheable until its id expires: `ETag` (the "
        "sha256 of the bytes), `Last-Modified`, `Cache-Control: public, max-age=<seconds to "
        "the expiry>, immutable` and `Expires`. `If-None-Match` (weak comparison, lists and "
        "`*`) or, without it, `If-Modified-Since` answer 304. `HEAD` answers the same headers "
        "without the body. Every other answer carries `Cache-Control: no-store`. With "
        "X_ACCEL_REDIRECT_PREFIX set, a ready image comes with an empty body and an "
        "`X-Accel-Redirect` header for the nginx in front to send the file.\n\n"
        "Stale-if-error: when Kentik fails the fetch for a transient cause (429, 5xx, a "
        "timeout, unreachable, or the budget not reached within the wait) and an image of "
        "the same query finished within STALE_IF_ERROR, that image answers: 200, its `ETag`, "
        "`Age`, `Cache-Control: no-cache` and `X-Image-Stale`."
    ),
    parameters=[
        OpenApiParameter(
            "entry_id",
            OpenApiTypes.STR,
            OpenApiParameter.PATH,
            description="An id from `POST /requests`: `<64 hex>_<expiry epoch>`.",
        ),
        _WAIT,
        _header("ETag", 'The sha256 of the image, quoted: `"<64 hex>"`.', [200, 304]),
        _header("Last-Modified", "When the image was fetched from Kentik.", [200]),
        _header(
            "Cache-Control",
            "`public, max-age=<whole seconds to the expiry>, immutable` for the image; "
            "`no-cache` for a stale one; `no-store` for every other answer.",
            [200, 202, 304, 400, 401, 403, 404, 429, 500, 502, 503, 504],
        ),
        _header("Expires", "The id's expiry, an HTTP date.", [200, 304]),
        _header("Retry-After", "Seconds before asking again.", [202, 500]),
        _header(
            STALE_HEADER,
            "Only on a stale answer, why an older image of the query answers: "
            "`error=<status>`, `paused` (Kentik is paused for the deployment, or failed the "
            "query's last fetch) or `pending` (the wait ran out in line for Kentik).",
            [200],
        ),
        _header("Age", "Only on a stale answer: seconds since Kentik rendered it.", [200]),
    ],
    responses=_IMAGES
    | {
        202: OpenApiResponse(
            PendingSerializer, description="`wait=0` and the image is still being fetched."
        ),
        304: OpenApiResponse(
            description="Not modified (`If-None-Match` or `If-Modified-Since`); no body."
        ),
        400: _error("Kentik rejected the query (its message), or `wait` is not a number >= 0."),
        401: _error("Kentik refused the service's credentials."),
        403: _error("Kentik refused the service's credentials."),
        404: _error("Unknown, malformed or expired id."),
        # A long `wait=...&wait=...` list is refused by gunicorn before the service sees it.
        414: _error("The request line is longer than gunicorn accepts (4094 bytes)."),
        429: _error("Kentik's rate limit, after the service's retries (no older image to answer)."),
        500: _error("Still being fetched after ENTRY_WAIT_TIMEOUT (or `wait`); see `Retry-After`."),
        502: _error("Kentik could not be reached, redirected, or answered something unreadable."),
        503: _error("Kentik was unavailable, after the service's retries."),
        504: _error("Kentik did not answer in time."),
    },
)


_SLUG = OpenApiParameter(
    "slug",
    {"type": "string", "pattern": f"^{CHART_SLUG_PATTERN}$"},
    OpenApiParameter.PATH,
    description="The chart's slug: lower-case letters, digits and '-', at most 64.",
)

chart_image_get = extend_schema(
    operation_id="chart_image_get",
    summary="Get a saved chart's image",
    description=(
        "The newest image of a saved chart, in the format of the extension (png, jpg, svg, "
        "pdf: Kentik's `imageType`), with the chart's parameters from the query string. "
        "A ready image is answered at once, whatever its age; past the chart's `max_age` one "
        "refresh starts in the background, last in line and within the Kentik budget "
        "(stale-while-revalidate). Only an image never rendered waits, as `GET /image/{id}` "
        "does (`wait`, and the 202 of `wait=0`). An image viewed within CHART_KEEP_WARM is "
        "refreshed by the workers as it reaches `max_age`.\n\n"
        "`ETag`, `Last-Modified` and 304 as for `/image`; `Cache-Control: public, "
        "max-age=<seconds left of max_age>, stale-while-revalidate=<max_age>, "
        "stale-if-error=<STALE_IF_ERROR>`, and `Age`. While Kentik fails, an image past "
        "`max_age` answers with `X-Image-Stale` and `Cache-Control: no-cache`.\n\n"
        "With CHART_URL_KEYS set the URL must carry `sig` (HMAC-SHA256 over the path and "
        "every other parameter) and may carry `exp` (unix time); otherwise 403."
    ),
    parameters=[
        _SLUG,
        OpenApiParameter(
            "ext",
            {"type": "string", "enum": ["png", "jpg", "svg", "pdf"]},
            OpenApiParameter.PATH,
            description="The image format.",
        ),
        _WAIT,
        OpenApiParameter(
            "sig",
            OpenApiTypes.STR,
            OpenApiParameter.QUERY,
            required=False,
            description="The URL's signature, when CHART_URL_KEYS is set.",
        ),
        OpenApiParameter(
            "exp",
            OpenApiTypes.INT,
            OpenApiParameter.QUERY,
            required=False,
            description="Unix time after which a signed URL is refused.",
        ),
        _header("ETag", 'The sha256 of the image, quoted: `"<64 hex>"`.', [200, 304]),
        _header("Last-Modified", "When Kentik rendered the image.", [200]),
        _header("Age", "Seconds since Kentik rendered the image.", [200, 304]),
        _header(
            "Cache-Control",
            "`public, max-age=<seconds left>, stale-while-revalidate=<max_age>, "
            "stale-if-error=<STALE_IF_ERROR>`; `no-cache` for a stale one; `no-store` for "
            "every other answer.",
            [200, 202, 304, 400, 403, 404, 500, 502, 503, 504],
        ),
        _header(STALE_HEADER, "Only while Kentik fails: why an older image answers.", [200]),
    ],
    responses=_IMAGES
    | {
        202: OpenApiResponse(
            PendingSerializer, description="`wait=0` and the first render is still running."
        ),
        304: OpenApiResponse(description="Not modified; no body."),
        400: _error(
            "A parameter undeclared, not fitting, missing, or given twice (named in `field`); "
            "or Kentik rejected the query."
        ),
        403: _error("The URL is unsigned, wrongly signed, tampered with or expired."),
        404: _error("No such chart."),
        500: _error("Still being rendered after ENTRY_WAIT_TIMEOUT (or `wait`)."),
        502: _error("Kentik could not be reached, or answered something unreadable."),
        503: _error("Kentik was unavailable, after the service's retries."),
        504: _error("Kentik did not answer in time."),
    },
)


class InfoEntrySerializer(serializers.Serializer):
    id = serializers.CharField()
    type = serializers.CharField(allow_null=True, help_text="The media type, once known.")
    size = serializers.IntegerField(allow_null=True, help_text="Bytes, once known.")
    expiration = serializers.FloatField(help_text="Unix epoch.")
    status = serializers.IntegerField(required=False, help_text="Failed entries: the status.")


class InfoKentikSerializer(serializers.Serializer):
    calls_last_minute = serializers.IntegerField(
        help_text="Kentik calls (each attempt) of the whole deployment in the last 60 s."
    )
    rate_limit = serializers.IntegerField(help_text="KENTIK_RATE_LIMIT; 0: no limit.")
    paused_until = serializers.FloatField(
        allow_null=True, help_text="Unix epoch: no Kentik call until then (a 429, Kentik failing)."
    )
    pause_reason = serializers.CharField(help_text="What began the pause: a status, or empty.")
    probing = serializers.BooleanField(help_text="The pause is over and one call went first.")


class InfoSerializer(serializers.Serializer):
    active_count = serializers.IntegerField()
    pending_count = serializers.IntegerField()
    failed_count = serializers.IntegerField()
    stale_count = serializers.IntegerField(
        help_text="Failed entries answered with an older image of their query (STALE_IF_ERROR)."
    )
    stored_bytes = serializers.IntegerField()
    kentik = InfoKentikSerializer(help_text="The deployment's Kentik budget and pause.")
    active_entries = InfoEntrySerializer(many=True)
    pending_entries = InfoEntrySerializer(many=True)
    failed_entries = InfoEntrySerializer(many=True)


info = extend_schema(
    operation_id="info",
    summary="What the cache holds",
    description="Totals and the newest live entries by state, from the database alone.",
    responses={200: InfoSerializer, 400: _error("`limit` is not a whole number 0-10000.")},
)


_SIGNED = (
    "With CHART_URL_KEYS set, it needs a `sig` of its own URL (`manage.py chart_url`) or a "
    "staff session, since it shows signed URLs; otherwise 403."
)


def chart_list(item: type[serializers.Serializer]) -> Callable[[_View], _View]:
    """The description of `GET /charts/`, given the serializer of one item."""
    listed: serializers.ListSerializer = serializers.ListSerializer(child=item())
    return extend_schema(
        operation_id="chart_list",
        summary="List the saved charts",
        description=f"Every saved chart, by slug, with its page's and images' URLs. {_SIGNED}",
        responses={
            200: inline_serializer("ChartList", {"charts": listed}),
            403: _error("Unsigned, wrongly signed or expired."),
        },
    )


chart_page = extend_schema(
    operation_id="chart_page",
    summary="A saved chart's page",
    description=(
        "For a browser (HTML): the title, the image, when it was rendered, a form for its "
        "parameters and snippets to embed it. With `Accept: application/json`: the "
        "definition, the parameter values, the image URLs, and per format the last "
        f"render's state, time, size and media type. {_SIGNED}"
    ),
    parameters=[_SLUG],
    responses={
        (200, "text/html"): OpenApiResponse(OpenApiTypes.STR, description="The page."),
        (200, "application/json"): OpenApiResponse(
            OpenApiTypes.OBJECT, description="The definition and its renders."
        ),
        400: _error("A parameter value that does not fit (named in `field`)."),
        403: _error("Unsigned, wrongly signed or expired, with signing on."),
        404: _error("No such chart."),
    },
)

_NO_TOKEN = _error("No token, or an unknown one.")
_WRITES = (
    "For a tool: a DRF token (`Authorization: Token <key>`, made in the admin or by "
    "`manage.py drf_create_token`) of a user with the admin's {} permission on charts."
)


def chart_put(request: type, response: type) -> Callable[[_View], _View]:
    """The description of `PUT /charts/{slug}`, given the view's serializers."""
    return extend_schema(
        operation_id="chart_put",
        summary="Create or replace a saved chart",
        description=(
            "Creates the chart, or replaces its definition; checked whole as `charts_load` "
            f"checks a file. {_WRITES.format('change')}"
        ),
        parameters=[_SLUG],
        request={"application/json": request},
        responses={
            200: OpenApiResponse(response, description="Replaced (`outcome`: updated, unchanged)."),
            201: OpenApiResponse(response, description="Created."),
            400: _error("A field is missing or does not fit (named in `field`)."),
            401: _NO_TOKEN,
            403: _error("The token's user may not change charts."),
            404: _error("The slug is not one a chart may have (no such route)."),
        },
    )


chart_delete = extend_schema(
    operation_id="chart_delete",
    summary="Delete a saved chart",
    description=f"The chart and its images' records. {_WRITES.format('delete')}",
    parameters=[_SLUG],
    responses={
        204: OpenApiResponse(description="Deleted; no body."),
        401: _NO_TOKEN,
        403: _error("The token's user may not delete charts."),
        404: _error("No such chart."),
    },
)
