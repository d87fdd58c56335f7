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

# --- HTTPS, ended at the proxy in front ----------------------------------------
from .base import SECURE_PROXY_SSL_HEADER, env_flag, env_number  # noqa: E402

# The proxy terminates TLS and says which requests came over HTTPS
# (X-Forwarded-Proto, read through SECURE_PROXY_SSL_HEADER). The admin's
# cookies travel over HTTPS only: false where the admin is served over plain HTTP.
SESSION_COOKIE_SECURE = env_flag("SESSION_COOKIE_SECURE", True)
CSRF_COOKIE_SECURE = env_flag("CSRF_COOKIE_SECURE", True)
# Browsers that saw an HTTPS answer keep to HTTPS for this long. An hour to
# begin with, so that a mistake costs an hour: raise it once HTTPS is known
# good; 0 where the same host name must still be reached over plain HTTP.
SECURE_HSTS_SECONDS = env_number("SECURE_HSTS_SECONDS", 3600, integer=True)
# Plain HTTP is redirected to HTTPS only if the service can tell the two
# apart: by default, when SECURE_PROXY_SSL_HEADER is set. Without it, every
# request through the proxy looks like plain HTTP and would be redirected for ever.
SECURE_SSL_REDIRECT = env_flag("SECURE_SSL_REDIRECT", SECURE_PROXY_SSL_HEADER is not None)
# Probes and the metrics scrape come over plain HTTP from beside the service
# (kubelet, Docker's HEALTHCHECK, Prometheus), not through the proxy.
SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz|metrics)$"]
# HSTS for subdomains, and the browsers' preload list, bind every host of the
# domain: its owner's decision, made at the domain, not this service's.
SILENCED_SYSTEM_CHECKS = ["security.W005", "security.W021"]
