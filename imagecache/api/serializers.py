"""Fields shared by the API's serializers."""

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

# The shortest time to live a request may ask for, in seconds.
MIN_TTL = 1


@extend_schema_field(
    {"type": "integer", "minimum": MIN_TTL, "maximum": settings.MAX_TTL, "nullable": True}
)
class TTLField(serializers.Field):
    """A request's time to live, in seconds: a JSON integer (not a string, a
    float or a boolean) from MIN_TTL to MAX_TTL."""

    default_error_messages = {
        "invalid": "Must be a whole number of seconds.",
        "min_value": "Must be at least {min_value}.",
        "max_value": "Must be at most {max_value} (MAX_TTL).",
    }

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        if data < MIN_TTL:
            self.fail("min_value", min_value=MIN_TTL)
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
