"""The storage name of an image: `images/<hh>/<query hash>-<fetch id>-<content hash>.<ext>`.

The fetch writes it; the fetch reads it back (an image an earlier attempt
stored but could not record), and so does the fast path, which takes the
ETag and the media type from the name, without the database. `<hh>`, the
query hash's first two digits, keeps each directory small.

It imports only `imagecache.media`, a leaf, so that any module may import it.
"""

import re
from typing import Final, NamedTuple

from imagecache.media import BY_EXTENSION, EXTENSIONS

# The directory of every image, under the storage's root.
IMAGES: Final = "images"

_END = re.compile(rf"-([0-9]+)-([0-9a-f]{{64}})\.({'|'.join(BY_EXTENSION)})$")


class ImageName(NamedTuple):
    fetch_id: int
    content_hash: str
    extension: str  # without the dot, a key of `media.BY_EXTENSION`


def image_prefix(*, query_hash: str, fetch_id: int) -> str:
    """What the names of a fetch's images begin with, whatever their content."""
    return f"{IMAGES}/{query_hash[:2]}/{query_hash}-{fetch_id}-"


def image_name_make(*, query_hash: str, fetch_id: int, content_hash: str, media_type: str) -> str:
    """The name of a fetch's image: the content hash gives the fast path its
    ETag, the fetch's id lets a later attempt find an image this one stored
    but could not record."""
    extension = EXTENSIONS.get(media_type, ".bin")
    return f"{image_prefix(query_hash=query_hash, fetch_id=fetch_id)}{content_hash}{extension}"


def image_name_parse(name: str) -> ImageName | None:
    """The parts at the end of `name` (a storage name, or a path or URL that
    ends with one); None if it does not end as an image's name does (an
    unknown media type's `.bin`, a name the storage changed to avoid a clash)."""
    found = _END.search(name)
    if found is None:
        return None
    return ImageName(int(found[1]), found[2], found[3])
