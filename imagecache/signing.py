"""Signed chart URLs: an HMAC-SHA256 over the path and the query parameters.

The first of CHART_URL_KEYS signs and every one verifies, so that a key can
be rotated: add the new one first, wait until the URLs signed with the old
one are replaced, then drop it. `exp` (a unix time) is signed with the rest,
so it cannot be pushed back.

A leaf: it imports nothing of the app but its errors; the keys are passed in.
"""

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import urlencode

from imagecache.errors import SignatureRefused

SIGNATURE: Final = "sig"
EXPIRES: Final = "exp"


def _message(path: str, params: Mapping[str, str]) -> bytes:
    # Sorted, so that the order of a URL's parameters does not matter; the
    # path and the parameters are separated as in the URL itself, and
    # urlencode escapes '&' and '=' in values, so no two URLs share a message.
    pairs = sorted((name, value) for name, value in params.items() if name != SIGNATURE)
    return f"{path}?{urlencode(pairs)}".encode()


def signature(*, key: bytes, path: str, params: Mapping[str, str]) -> str:
    digest = hmac.new(key, _message(path, params), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def url_params_sign(
    *, keys: Sequence[bytes], path: str, params: Mapping[str, str], expires: int | None = None
) -> dict[str, str]:
    """The parameters of a signed URL of `path`: `params`, `exp` if given, and `sig`."""
    signed = dict(params)
    if expires is not None:
        signed[EXPIRES] = str(expires)
    signed[SIGNATURE] = signature(key=keys[0], path=path, params=signed)
    return signed


def url_verify(*, keys: Sequence[bytes], path: str, params: Mapping[str, str], now: float) -> None:
    """SignatureRefused unless one of `keys` signed `path` with `params` and
    its `exp`, if any, is still ahead."""
    given = params.get(SIGNATURE)
    if not given:
        raise SignatureRefused("This chart URL must be signed (sig).")
    if not any(
        hmac.compare_digest(given, signature(key=key, path=path, params=params)) for key in keys
    ):
        raise SignatureRefused("The signature of this chart URL does not match.")
    expires = params.get(EXPIRES)
    if expires is not None:
        if not expires.isdigit() or int(expires) <= now:
            raise SignatureRefused("This chart URL has expired.")
