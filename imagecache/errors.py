"""Domain errors: raised by services and selectors, answered in one place
(`imagecache.exception_handlers`)."""


class ImageCacheError(Exception):
    status = 500
    default_message = "The image cache failed."

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)

    def headers(self) -> dict[str, str]:
        return {}


class EntryNotFound(ImageCacheError):
    status = 404
    default_message = "No such image: the id is unknown, malformed or expired."


class FetchFailed(ImageCacheError):
    """Kentik answered an error, timed out or could not be reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FetchPending(ImageCacheError):
    status = 500
    default_message = "The image is still being fetched from Kentik; try again later."

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
