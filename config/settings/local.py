"""The profile of `make run` and `manage.py`: works with no configuration."""

from .base import *  # noqa: F403
from .base import ALLOWED_HOSTS, SECRET_KEY, env_str

SECRET_KEY = SECRET_KEY or env_str(
    "DJANGO_DEV_SECRET_KEY", "local-only-insecure-key-do-not-use-in-production"
)
ALLOWED_HOSTS = ALLOWED_HOSTS or ["localhost", "127.0.0.1", "[::1]"]
# Admin static files straight from the apps: no collectstatic needed locally.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT = None
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
