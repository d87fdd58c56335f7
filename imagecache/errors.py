"""Domain errors: raised by services and selectors, answered in one place
(`imagecache.api.exception_handlers`)."""

from typing import Any

from imagecache.wire import error_body


class ImageCacheError(Exception):
    status = 500
    default_message = "The image cache failed."

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)

    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message)


class EntryNotFound(ImageCacheError):
    status = 404
    default_message = "No such image: the id is unknown, malformed or expired."


class FetchFailed(ImageCacheError):
    """Kentik answered an error, timed out or could not be reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FetchPending(ImageCacheError):
    """The image is still being fetched after the longest wait allowed."""

    status = 500
    default_message = "The image is still being fetched from Kentik; try again later."

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class FetchStillPending(ImageCacheError):
    """The client asked not to wait (`?wait=0`) and the image is not ready yet:
    not a failure but "come back later" (202), with the fetch's state."""

    status = 202
    default_message = "The image is still being fetched from Kentik; come back later."

    def __init__(self, entry_id: str, state: str, retry_after: int) -> None:
        super().__init__()
        self.entry_id = entry_id
        self.state = state
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}

    def body(self) -> dict[str, Any]:
        return {
            "id": self.entry_id,
            "state": self.state,
            "status": self.status,
            "retry_after": self.retry_after,
        }


class ChartNotFound(ImageCacheError):
    status = 404
    default_message = "No such chart."


class ChartInvalid(ImageCacheError):
    """A chart's definition, or the parameter values of a request, do not fit:
    `field` names what (a parameter's name, or a definition's field)."""

    status = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field

    def body(self) -> dict[str, Any]:
        return {**super().body(), "field": self.field}


class SignatureRefused(ImageCacheError):
    """A chart URL that must be signed is not, or not rightly, or has expired."""

    status = 403
    default_message = "This chart URL needs a valid signature."


class ChartsRefused(ImageCacheError):
    """A charts file that cannot be loaded: it names the file, the chart (its
    slug, else its index) and the field, so that nothing is loaded and the
    author knows where to look."""

    status = 400

    def __init__(self, *, file: str, chart: str, field: str, message: str) -> None:
        where = ", ".join(part for part in (file, chart and f"chart {chart}", field) if part)
        super().__init__(f"{where}: {message}")
        self.file, self.chart, self.field = file, chart, field


class AdhocQueriesRefused(ImageCacheError):
    """ADHOC_QUERIES is off: a client may spend the Kentik token only on the
    charts an operator saved."""

    status = 403
    default_message = (
        "Ad-hoc queries are turned off here: only saved charts are served "
        "(GET /charts/{slug}.{png,jpg,svg,pdf})."
    )
