"""Chart URLs as the service prints and shows them (`manage.py chart_url`,
the list, the chart page, the admin): the whole URL from PUBLIC_URL, signed
with the first of CHART_URL_KEYS when signing is on.

The path signed is the request's `path_info` as the routes see it
(`/charts/edge-traffic.png`); PUBLIC_URL may add a prefix that a proxy in
front strips.
"""

import time
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlencode

from django.conf import settings

from imagecache import signing
from imagecache.wire import CHARTS_PATH

LIST_PATH: Final = CHARTS_PATH


def url_keys() -> list[bytes]:
    """The keys that sign and verify chart URLs; empty: signing is off."""
    return list(settings.CHART_URL_KEYS)


def chart_path(slug: str, image_type: str | None = None) -> str:
    """The page's path, or with `image_type` (an extension) the image's."""
    return f"{LIST_PATH}{slug}" + (f".{image_type}" if image_type else "")


def url_make(
    *,
    path: str,
    params: Mapping[str, str] | None = None,
    expires: int | None = None,
    absolute: bool = True,
) -> str:
    """`path` with `params`, signed when signing is on (with `exp` if given);
    from PUBLIC_URL when `absolute`, else as a path for the service's own pages."""
    given = dict(params or {})
    keys = url_keys()
    if keys:
        given = signing.url_params_sign(keys=keys, path=path, params=given, expires=expires)
    base = settings.PUBLIC_URL if absolute else ""
    return base + path + (f"?{urlencode(given)}" if given else "")


def url_verify(*, path: str, params: Mapping[str, str]) -> None:
    """SignatureRefused unless signing is off or the URL is rightly signed."""
    keys = url_keys()
    if keys:
        signing.url_verify(keys=keys, path=path, params=params, now=time.time())
