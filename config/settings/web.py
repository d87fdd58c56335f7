"""Django's own settings and the web's: the secret key and hosts, the proxy
in front, apps, middleware (with the proxy's sign-in), templates, the
REST framework and the OpenAPI schema.
"""

import re

from django.core.exceptions import ImproperlyConfigured

from imagecache.wire import BODY_LIMIT

from .inputs import BASE_DIR, SECRETS_FROM_FILES, _read, env, env_str

DEBUG = _read(env.bool, "DEBUG", default=False)
SECRET_KEY = SECRETS_FROM_FILES.get("SECRET_KEY") or env_str("SECRET_KEY", "")
ALLOWED_HOSTS: list[str] = _read(env.list, "ALLOWED_HOSTS", default=[])

# Behind a TLS proxy: trust its headers only when told to.
CSRF_TRUSTED_ORIGINS: list[str] = _read(env.list, "CSRF_TRUSTED_ORIGINS", default=[])
USE_X_FORWARDED_HOST = _read(env.bool, "USE_X_FORWARDED_HOST", default=False)
_proxy_ssl_header = _read(env.list, "SECURE_PROXY_SSL_HEADER", default=[])
SECURE_PROXY_SSL_HEADER: tuple[str, str] | None = None
if _proxy_ssl_header:
    if len(_proxy_ssl_header) != 2:
        raise ImproperlyConfigured(
            "SECURE_PROXY_SSL_HEADER must be a header and a value, "
            "e.g. HTTP_X_FORWARDED_PROTO,https"
        )
    SECURE_PROXY_SSL_HEADER = (_proxy_ssl_header[0], _proxy_ssl_header[1])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    # Tokens of the tools that write saved charts (PUT/DELETE /charts/{slug}).
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "imagecache",
]

MIDDLEWARE = [
    # Outermost: a log line and a count for every request, timed end to end.
    "imagecache.ops.log.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Sign-in through the proxy in front: the name of the request header in which
# it passes the signed-in user (e.g. X-Forwarded-User). Off (empty) by
# default; set it only when the proxy strips that header from what clients
# send (see imagecache/admin/signin.py).
REMOTE_USER_HEADER = env_str("REMOTE_USER_HEADER", "")
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]


def with_proxy_sign_in(middleware: list[str], backends: list[str]) -> tuple[list[str], list[str]]:
    """`middleware` with the proxy's sign-in after Django's authentication, and
    `backends` with Django's RemoteUserBackend (a subclass) first. Passwords still work (a
    superuser made with createsuperuser, for when the proxy is down)."""
    at = middleware.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1
    return (
        [*middleware[:at], "imagecache.admin.signin.ProxyUserMiddleware", *middleware[at:]],
        ["imagecache.admin.signin.ProxyUserBackend", *backends],
    )


if REMOTE_USER_HEADER:
    # A token of letters, digits and dashes: WSGI turns both `-` and `_` into
    # `_`, so a name with an underscore would be ambiguous.
    if not re.fullmatch(r"[A-Za-z0-9]+(-[A-Za-z0-9]+)*", REMOTE_USER_HEADER):
        raise ImproperlyConfigured(
            "REMOTE_USER_HEADER must be a header name of letters, digits and dashes, "
            f"e.g. X-Forwarded-User, not {REMOTE_USER_HEADER!r}"
        )
    MIDDLEWARE, AUTHENTICATION_BACKENDS = with_proxy_sign_in(MIDDLEWARE, AUTHENTICATION_BACKENDS)

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["imagecache.api.parsers.StrictJSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "imagecache.api.negotiation.JSONOnlyNegotiation",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "imagecache.api.exception_handlers.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Kentik Image Cache",
    "DESCRIPTION": (
        "Caches charts rendered by Kentik's `POST /api/v5/query/topXchart`. Post a query, "
        "get an image id at once, and fetch the image with it until it expires. Every error "
        'is JSON: `{"error": "<message>", "status": <code>}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}
# A request body larger than this is refused before it is parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = BODY_LIMIT
