"""Sign-in through the proxy (REMOTE_USER_HEADER): the admin trusts the one
header the setting names, only when it is set, and gives the users it has
not seen before no rights."""

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from config.settings import base
from imagecache.admin.signin import meta_key

pytestmark = pytest.mark.django_db

HEADER = "X-Forwarded-User"
ADMIN = reverse("admin:index")
ENTRIES = reverse("admin:imagecache_entry_changelist")


@pytest.fixture
def proxy_sign_in(settings: Any) -> None:
    """The settings as REMOTE_USER_HEADER=X-Forwarded-User makes them."""
    settings.REMOTE_USER_HEADER = HEADER
    settings.MIDDLEWARE, settings.AUTHENTICATION_BACKENDS = base.with_proxy_sign_in(
        settings.MIDDLEWARE, settings.AUTHENTICATION_BACKENDS
    )


def as_proxy_user(client: Client, path: str, user: str, **extra: Any) -> Any:
    return client.get(path, headers={HEADER: user}, **extra)


def test_meta_key_is_where_wsgi_puts_the_header():
    assert meta_key("X-Forwarded-User") == "HTTP_X_FORWARDED_USER"


def test_a_user_the_proxy_names_for_the_first_time_is_made_with_no_rights(proxy_sign_in, client):
    response = as_proxy_user(client, ADMIN, "alice@example.com")
    # Signed in, but the admin wants staff: its login page says so.
    assert response.status_code == 302
    login = client.get(response.url)
    assert "You are authenticated as alice@example.com" in login.content.decode()
    user = User.objects.get(username="alice@example.com")
    assert (user.is_staff, user.is_superuser, user.has_usable_password()) == (False, False, False)
    assert not user.user_permissions.exists() and not user.groups.exists()
    assert client.session["_auth_user_id"] == str(user.pk)


def test_a_user_a_superuser_made_staff_sees_what_they_were_granted(proxy_sign_in, client):
    user = User.objects.create_user("bob", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_entry"))
    assert as_proxy_user(client, ENTRIES, "bob").status_code == 200
    # The session holds the user: the next page needs no header.
    assert client.get(ENTRIES).status_code == 200


def test_another_user_in_the_header_signs_the_first_one_out(proxy_sign_in, client):
    User.objects.create_user("bob", is_staff=True, is_superuser=True)
    assert as_proxy_user(client, ENTRIES, "bob").status_code == 200
    assert as_proxy_user(client, ENTRIES, "mallory").status_code == 302
    assert client.session["_auth_user_id"] == str(User.objects.get(username="mallory").pk)


def test_without_the_header_nobody_is_signed_in(proxy_sign_in, client):
    response = client.get(ENTRIES)
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))
    assert not User.objects.exists()


def test_only_the_named_header_is_trusted(proxy_sign_in, client):
    User.objects.create_user("ops", is_staff=True, is_superuser=True)
    # REMOTE_USER (what a web server's own authentication sets) and another
    # header are not the one the setting names.
    response = client.get(ENTRIES, REMOTE_USER="ops", headers={"X-Remote-User": "ops"})
    assert response.status_code == 302
    assert "_auth_user_id" not in client.session


def test_the_api_never_signs_anyone_in(proxy_sign_in, client):
    response = as_proxy_user(client, reverse("info"), "alice")
    assert response.status_code == 200
    assert not User.objects.exists()
    assert "sessionid" not in response.cookies


def test_with_the_setting_off_a_client_sending_the_header_is_ignored(client):
    from django.conf import settings

    assert settings.REMOTE_USER_HEADER == ""
    assert "imagecache.admin.signin.ProxyUserMiddleware" not in settings.MIDDLEWARE
    User.objects.create_user("ops", is_staff=True, is_superuser=True)
    response = as_proxy_user(client, ENTRIES, "ops")
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))
    assert "_auth_user_id" not in client.session
    assert list(User.objects.values_list("username", flat=True)) == ["ops"]
