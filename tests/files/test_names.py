from imagecache.files.names import ImageName, image_name_make, image_name_parse, image_prefix
from imagecache.media import IMAGE_TYPES

QUERY_HASH = "ab" + "c" * 62
CONTENT_HASH = "0123456789abcdef" * 4


def test_an_image_name_reads_back_as_it_was_made_for_every_media_type():
    for image in IMAGE_TYPES:
        name = image_name_make(
            query_hash=QUERY_HASH,
            fetch_id=17,
            content_hash=CONTENT_HASH,
            media_type=image.media_type,
        )
        assert name.startswith(image_prefix(query_hash=QUERY_HASH, fetch_id=17))
        assert name.startswith(f"images/ab/{QUERY_HASH}-17-")
        assert image_name_parse(name) == ImageName(17, CONTENT_HASH, image.extension)
        # The fast path reads it at the end of a path or a redirect target.
        assert image_name_parse(f"/protected/{name}") == image_name_parse(name)


def test_names_not_made_here_do_not_read_as_images():
    made = image_name_make(
        query_hash=QUERY_HASH, fetch_id=17, content_hash=CONTENT_HASH, media_type="image/png"
    )
    unknown = image_name_make(
        query_hash=QUERY_HASH, fetch_id=17, content_hash=CONTENT_HASH, media_type="text/html"
    )
    assert unknown.endswith(".bin") and image_name_parse(unknown) is None
    # The storage's own name for a clash: a suffix before the extension.
    assert image_name_parse(made.replace(".png", "_AbC1234.png")) is None
    assert image_name_parse("images/gone.png") is None
