"""Fields shared by the API's serializers."""

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


@extend_schema_field(
    {"type": "integer", "minimum": 1, "maximum": settings.MAX_TTL, "nullable": True}
)
class StrictIntegerField(serializers.Field):
    """A JSON integer: not a string, a float or a boolean."""

    default_error_messages = {
        "invalid": "Must be a whole number of seconds.",
        "min_value": "Must be at least {min_value}.",
        "max_value": "Must be at most {max_value} (MAX_TTL).",
    }

    def __init__(self, *, min_value: int, **kwargs: Any) -> None:
        self.min_value = min_value
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        if data < self.min_value:
            self.fail("min_value", min_value=self.min_value)
        if data > settings.MAX_TTL:
            self.fail("max_value", max_value=settings.MAX_TTL)
        return data

    def to_representation(self, value: int) -> int:
        return value


@extend_schema_field({"type": "object", "additionalProperties": True})
class JSONObjectField(serializers.Field):
    """A JSON object, kept exactly as parsed (key order and nulls too)."""

    default_error_messages = {"invalid": "Must be a JSON object."}

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fail("invalid")
        return data

    def to_representation(self, value: dict[str, Any]) -> dict[str, Any]:
        return value
