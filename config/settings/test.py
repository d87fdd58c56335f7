"""The profile of the unit and API tests (end-to-end tests run `local`)."""

import tempfile
from pathlib import Path

from .inputs import INPUTS

INPUTS.update(
    # Images of a run of their own, on the file system whatever the environment.
    CACHE_PATH=tempfile.mkdtemp(prefix="imagecache-test-"),
    STORAGE_BACKEND="filesystem",
    STATIC_FROM_APPS=True,
    # Tasks run in the process that enqueues them.
    Q_SYNC=True,
)

from .base import *  # noqa: E402, F403

SECRET_KEY = "test-only"
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
KT_AUTH_EMAIL = "tests@example.com"
KT_AUTH_TOKEN = "test-token-never-logged"
KENTIK_API_URL = "http://127.0.0.1:9/api/v5"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Wake-up sockets of this run's own: concurrent runs share var/db.sqlite3.
WAKE_DIR = Path(tempfile.mkdtemp(prefix="imagecache-wake-test-"))
