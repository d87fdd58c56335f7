"""The image types: Kentik's name for each (a query's `imageType`), its media
type, and the extension the cache stores it under.

A leaf: it imports nothing of the app, so that the Kentik seam, the fetch,
the fast path, the admin, the API description and the simulator (which runs
without Django) all read this one table.
"""

from typing import Final, NamedTuple


class ImageType(NamedTuple):
    kentik: str  # Kentik's `imageType`
    media_type: str
    extension: str  # without the dot


IMAGE_TYPES: Final = (
    ImageType("png", "image/png", "png"),
    ImageType("jpeg", "image/jpeg", "jpg"),
    ImageType("svg", "image/svg+xml", "svg"),
    ImageType("pdf", "application/pdf", "pdf"),
)

# Kentik's `imageType` -> media type.
MEDIA_TYPES: Final = {image.kentik: image.media_type for image in IMAGE_TYPES}
# What a query may ask for in its `imageType` (Kentik takes "jpg" for "jpeg").
REQUESTED_MEDIA_TYPES: Final = {**MEDIA_TYPES, "jpg": MEDIA_TYPES["jpeg"]}
# Media type -> the stored file's extension, with its dot.
EXTENSIONS: Final = {image.media_type: f".{image.extension}" for image in IMAGE_TYPES}
# A stored file's extension, without its dot -> media type.
BY_EXTENSION: Final = {image.extension: image.media_type for image in IMAGE_TYPES}
# What an <img> can show (a PDF cannot).
INLINE_MEDIA_TYPES: Final = frozenset(EXTENSIONS) - {"application/pdf"}

# The Content-Security-Policy of every image the cache serves (the API, its
# fast path, the admin's previews): no script runs, whatever the file holds
# (an SVG may carry <script>), and the sandbox gives the document an origin
# of its own, so nothing in it can reach the admin's session.
IMAGE_CSP: Final = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox"
