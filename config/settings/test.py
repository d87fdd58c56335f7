"""The profile of the unit and API tests (end-to-end tests run `local`)."""

import tempfile

from .base import *  # noqa: F403

SECRET_KEY = "test-only"
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
KT_AUTH_EMAIL = "tests@example.com"
KT_AUTH_TOKEN = "test-token-never-logged"
KENTIK_API_URL = "http://127.0.0.1:9/api/v5"
CACHE_PATH = Path(tempfile.mkdtemp(prefix="imagecache-test-"))  # noqa: F405
STORAGES = {
    "default": {
        "BACKEND": "imagecache.files.storage.AtomicFileSystemStorage",
        "OPTIONS": {"location": str(CACHE_PATH), "base_url": None},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
STATIC_ROOT = None
Q_CLUSTER = {**Q_CLUSTER, "sync": True}  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
