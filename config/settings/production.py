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

# --- Kentik credentials ------------------------------------------------------
# Without them `manage.py serve` would start the bundled simulator and serve
# its made-up charts as Kentik's. The simulator is for people who ask for it
# (`make run`, the tests, the benchmarks) and is not in the production image.
from .base import KT_AUTH_EMAIL, KT_AUTH_TOKEN  # noqa: E402

if not (KT_AUTH_EMAIL and KT_AUTH_TOKEN):
    raise ImproperlyConfigured(
        "KT_AUTH_EMAIL and KT_AUTH_TOKEN (or KT_AUTH_TOKEN_FILE) must be set in production"
    )
