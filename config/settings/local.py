"""The profile of `make run` and `manage.py`: works with no configuration."""

from .inputs import INPUTS

# Admin static files straight from the apps: no collectstatic needed locally.
INPUTS.update(STATIC_FROM_APPS=True)

from .base import *  # noqa: E402, F403
from .base import ALLOWED_HOSTS, SECRET_KEY, env_str  # noqa: E402

SECRET_KEY = SECRET_KEY or env_str(
    "DJANGO_DEV_SECRET_KEY", "local-only-insecure-key-do-not-use-in-production"
)
ALLOWED_HOSTS = ALLOWED_HOSTS or ["localhost", "127.0.0.1", "[::1]"]
