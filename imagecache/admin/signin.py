"""Sign-in through the proxy in front (Traefik forward-auth, oauth2-proxy, an
Apache with Kerberos): with REMOTE_USER_HEADER set, the admin trusts the user
that header names, and no other header.

Only the admin's pages read it. The API and the probes never sign anyone in,
so a proxy that sends the header with every request costs no session and no
user lookup per API call. Users the proxy names for the first time are made
by Django's RemoteUserBackend with no rights at all (not staff, no
permission, no password): the admin answers "no permission" until a superuser grants them.
"""

from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.contrib.auth.backends import RemoteUserBackend
from django.contrib.auth.middleware import PersistentRemoteUserMiddleware
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

User = TypeVar("User", bound=AbstractBaseUser)


def meta_key(header: str) -> str:
    """Where WSGI puts an HTTP request header: `X-Forwarded-User` is
    `HTTP_X_FORWARDED_USER`."""
    return "HTTP_" + header.upper().replace("-", "_")


class ProxyUserMiddleware(PersistentRemoteUserMiddleware):
    """Django's PersistentRemoteUserMiddleware on REMOTE_USER_HEADER, for the
    admin's paths only. Persistent: the user stays signed in through the
    session when a request comes without the header (a proxy that signs in
    on some paths only); a request that names another user signs the first
    one out."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        super().__init__(get_response)
        # A class attribute in Django's; one header per process.
        type(self).header = meta_key(settings.REMOTE_USER_HEADER)
        self.admin_prefix: str | None = None

    def process_request(self, request: HttpRequest) -> None:
        if self.admin_prefix is None:
            self.admin_prefix = reverse("admin:index")
        if request.path.startswith(self.admin_prefix):
            super().process_request(request)


class ProxyUserBackend(RemoteUserBackend):
    """Django's RemoteUserBackend, whose new users also get an unusable
    password: they sign in through the proxy or not at all."""

    def configure_user(self, request: HttpRequest | None, user: User, created: bool = True) -> User:
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        return user
