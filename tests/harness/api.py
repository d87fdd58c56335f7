"""The Django test client, checked for leaked credentials, and the readers of
its answers."""

import json
from typing import Any

from django.http import HttpResponseBase
from django.test import Client

from imagecache.api import examples


def chart_query(image_type: str = "png", title: str = "Total traffic") -> dict[str, Any]:
    return examples.chart_query(title, image_type)


def body_of(response: HttpResponseBase) -> bytes:
    """The body of any response, streamed or not; read once and kept."""
    # The ignores: streamed or not is known from `streaming`, not from the type,
    # and `test_body` is this helper's own attribute.
    if not hasattr(response, "test_body"):
        response.test_body = (  # type: ignore[attr-defined]
            b"".join(response.streaming_content)  # type: ignore[attr-defined]
            if response.streaming
            else response.content  # type: ignore[attr-defined]
        )
    return response.test_body  # type: ignore[attr-defined]


def json_error(response: HttpResponseBase, status: int) -> dict[str, Any]:
    """The JSON error body of a response, checked to have the status and JSON headers."""
    assert response.status_code == status, body_of(response)
    assert response["Content-Type"] == "application/json"
    data: dict[str, Any] = json.loads(body_of(response))
    assert isinstance(data["error"], str) and data["error"]
    assert data["status"] == status
    return data


class Api:
    """The test client, checking that no answer ever carries the Kentik token."""

    def __init__(self, client: Client, token: str) -> None:
        self._client = client
        self._token = token.encode()

    def post(
        self, path: str, body: Any, content_type: str = "application/json", **extra: Any
    ) -> HttpResponseBase:
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return self._checked(self._client.post(path, data, content_type=content_type, **extra))

    def get(self, path: str, **extra: Any) -> HttpResponseBase:
        return self._checked(self._client.get(path, **extra))

    def delete(self, path: str) -> HttpResponseBase:
        return self._checked(self._client.delete(path))

    def _checked(self, response: HttpResponseBase) -> HttpResponseBase:
        assert self._token not in body_of(response)
        return response


def pending(api: Api, api_query: dict[str, Any], **fields: Any) -> str:
    """POST a request whose fetch is never run (its on_commit is not executed)."""
    response = api.post("/requests", {"api_query": api_query, **fields})
    assert response.status_code == 200, body_of(response)
    return str(json.loads(body_of(response))["id"])
