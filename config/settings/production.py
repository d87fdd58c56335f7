"""The profile of gunicorn and the Docker image: nothing secret has a default."""

import os

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import ALLOWED_HOSTS, CACHES, DEBUG, SECRET_KEY, cluster_stats_cache

if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set in production")
if DEBUG:
    raise ImproperlyConfigured("DEBUG must be off in production")
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set in production")
if not os.environ.get("CACHE_PATH"):
    raise ImproperlyConfigured("CACHE_PATH must be set in production")
if "DATABASE_URL" not in os.environ:
    # The embedded database lives beside the images, on the same volume.
    CACHE_PATH.mkdir(parents=True, exist_ok=True)  # noqa: F405
    DATABASES["default"]["NAME"] = str(CACHE_PATH / "db.sqlite3")  # noqa: F405
    if "django_q" in CACHES:
        CACHES["django_q"] = cluster_stats_cache(DATABASES["default"])  # noqa: F405
