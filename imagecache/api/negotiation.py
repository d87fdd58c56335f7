from collections.abc import Iterable

from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request


class JSONOnlyNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, except that an Accept header no renderer satisfies
    gets the view's first renderer (JSON for the API) instead of a 406: a
    client asking for `image/png` must still get its error as JSON."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        choices = list(renderers)  # DRF passes a list; read twice here
        try:
            return super().select_renderer(request, choices, format_suffix)
        except exceptions.NotAcceptable:
            return choices[0], choices[0].media_type
