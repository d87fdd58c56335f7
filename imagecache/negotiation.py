from typing import Any

from rest_framework.negotiation import BaseContentNegotiation


class JSONOnlyNegotiation(BaseContentNegotiation):
    """Every API answer that is not an image is JSON, whatever Accept says:
    a client asking for `image/png` must get its error as JSON, not a 406."""

    def select_parser(self, request: Any, parsers: list[Any]) -> Any:
        for parser in parsers:
            if parser.media_type in ("*/*", request.content_type.split(";")[0].strip()):
                return parser
        return None

    def select_renderer(
        self, request: Any, renderers: list[Any], format_suffix: str | None = None
    ) -> tuple[Any, str]:
        return renderers[0], renderers[0].media_type
