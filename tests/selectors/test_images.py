"""A stored image opened for the admin (imagecache.selectors.images)."""

import pytest

from imagecache.errors import EntryNotFound
from imagecache.models import Fetch, FetchState
from imagecache.selectors.images import fetch_image_open
from imagecache.services.entries import entry_create
from tests.harness.data import PNG, QUERY
from tests.services.test_operators import ready_entry

pytestmark = pytest.mark.django_db


def test_fetch_image_open_gives_the_file_and_its_type(fetch_chart):
    entry = ready_entry()
    image, media_type = fetch_image_open(fetch_id=entry.fetch_id)
    with image:
        assert (image.read(), media_type) == (PNG, "image/png")


def test_fetch_image_open_of_a_missing_file_or_pending_fetch_raises():
    pending = entry_create(api_query=QUERY)
    with pytest.raises(EntryNotFound):
        fetch_image_open(fetch_id=pending.fetch_id)
    Fetch.objects.filter(pk=pending.fetch_id).update(
        state=FetchState.READY, file_name="images/gone.png"
    )
    with pytest.raises(EntryNotFound):
        fetch_image_open(fetch_id=pending.fetch_id)
