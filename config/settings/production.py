"""The profile of gunicorn and the Docker image: nothing secret has a default."""

import os

from django.core.exceptions import ImproperlyConfigured

from .inputs import INPUTS

# The embedded database (without DATABASE_URL) lives beside the images, on
# the same volume.
INPUTS.update(DATABASE_BESIDE_IMAGES=True)

from .base import *  # noqa: E402, F403
from .base import ALLOWED_HOSTS, DEBUG, SECRET_KEY  # noqa: E402

if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) must be set in production")
if DEBUG:
    raise ImproperlyConfigured("DEBUG must be off in production")
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set in production")
if not os.environ.get("CACHE_PATH"):
    raise ImproperlyConfigured("CACHE_PATH must be set in production")
