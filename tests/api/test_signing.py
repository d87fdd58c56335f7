import pytest

from imagecache.errors import SignatureRefused
from imagecache.signing import url_params_sign, url_verify

OLD, NEW = b"old-key", b"new-key"
PATH = "/charts/edge-traffic.png"
NOW = 1_800_000_000


def test_a_signed_url_verifies_in_any_parameter_order() -> None:
    signed = url_params_sign(keys=[NEW], path=PATH, params={"device": "edge01", "lookback": "60"})
    reordered = dict(reversed(list(signed.items())))
    url_verify(keys=[NEW], path=PATH, params=reordered, now=NOW)


def test_rotation_the_first_key_signs_and_every_key_verifies() -> None:
    by_old = url_params_sign(keys=[OLD], path=PATH, params={"device": "edge01"})
    by_new = url_params_sign(keys=[NEW, OLD], path=PATH, params={"device": "edge01"})
    assert by_old["sig"] != by_new["sig"]
    for params in (by_old, by_new):
        url_verify(keys=[NEW, OLD], path=PATH, params=params, now=NOW)
    with pytest.raises(SignatureRefused, match="does not match"):
        url_verify(keys=[NEW], path=PATH, params=by_old, now=NOW)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"device": "edge02"}, "does not match"),
        ({"extra": "1"}, "does not match"),
        ({"exp": str(NOW + 10**6)}, "does not match"),
        ({"sig": ""}, "must be signed"),
        ({"sig": "x" * 43}, "does not match"),
    ],
)
def test_a_tampered_url_is_refused(change: dict[str, str], message: str) -> None:
    signed = url_params_sign(keys=[NEW], path=PATH, params={"device": "edge01"}, expires=NOW + 60)
    with pytest.raises(SignatureRefused, match=message):
        url_verify(keys=[NEW], path=PATH, params={**signed, **change}, now=NOW)


def test_another_path_or_format_is_refused() -> None:
    signed = url_params_sign(keys=[NEW], path=PATH, params={})
    with pytest.raises(SignatureRefused):
        url_verify(keys=[NEW], path="/charts/edge-traffic.svg", params=signed, now=NOW)


def test_an_expired_url_is_refused_and_one_still_ahead_is_not() -> None:
    signed = url_params_sign(keys=[NEW], path=PATH, params={}, expires=NOW + 60)
    url_verify(keys=[NEW], path=PATH, params=signed, now=NOW + 59)
    with pytest.raises(SignatureRefused, match="expired"):
        url_verify(keys=[NEW], path=PATH, params=signed, now=NOW + 60)


def test_a_value_with_separators_cannot_pose_as_two_parameters() -> None:
    one = url_params_sign(keys=[NEW], path=PATH, params={"a": "1&b=2"})
    with pytest.raises(SignatureRefused):
        url_verify(keys=[NEW], path=PATH, params={"a": "1", "b": "2", "sig": one["sig"]}, now=NOW)
