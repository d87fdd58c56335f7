"""Where the images go (a directory or S3-compatible object storage), how a
fronting nginx sends them, and the static files.
"""

from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .inputs import BASE_DIR, INPUTS, env_str

CACHE_PATH = Path(
    INPUTS.get("CACHE_PATH") or env_str("CACHE_PATH", str(BASE_DIR / "var" / "cache"))
).resolve()

# Where the images go: a directory (CACHE_PATH, which may be a network file
# system shared by several hosts) or S3-compatible object storage.
STORAGE_BACKEND = INPUTS.get("STORAGE_BACKEND") or env_str("STORAGE_BACKEND", "filesystem")
if STORAGE_BACKEND == "filesystem":
    IMAGE_STORAGE: dict[str, Any] = {
        "BACKEND": "imagecache.files.storage.AtomicFileSystemStorage",
        "OPTIONS": {"location": str(CACHE_PATH), "base_url": None},
    }
elif STORAGE_BACKEND == "s3":
    IMAGE_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env_str("AWS_STORAGE_BUCKET_NAME"),
            "endpoint_url": env_str("AWS_S3_ENDPOINT_URL", "") or None,
            "region_name": env_str("AWS_S3_REGION_NAME", "") or None,
            "access_key": env_str("AWS_ACCESS_KEY_ID", "") or None,
            "secret_key": env_str("AWS_SECRET_ACCESS_KEY", "") or None,
            "location": env_str("AWS_LOCATION", ""),
            "default_acl": None,
            "querystring_auth": False,
            # Names are unique per fetch; an existing one is never overwritten.
            "file_overwrite": False,
        },
    }
else:
    raise ImproperlyConfigured(f"STORAGE_BACKEND must be filesystem or s3, not {STORAGE_BACKEND!r}")
# With a prefix (e.g. /protected-images/), ready images on the file system
# are answered with an empty body and `X-Accel-Redirect: <prefix><file name>`,
# and a fronting nginx sends the bytes from an `internal` location aliased to
# CACHE_PATH. Empty: the service sends the bytes itself.
X_ACCEL_REDIRECT_PREFIX = env_str("X_ACCEL_REDIRECT_PREFIX", "")
if X_ACCEL_REDIRECT_PREFIX:
    if not X_ACCEL_REDIRECT_PREFIX.startswith("/"):
        raise ImproperlyConfigured(
            "X_ACCEL_REDIRECT_PREFIX must be a path starting with /, "
            f"not {X_ACCEL_REDIRECT_PREFIX!r}"
        )
    X_ACCEL_REDIRECT_PREFIX = X_ACCEL_REDIRECT_PREFIX.rstrip("/") + "/"

# The local and test profiles serve static files from the apps: no
# collectstatic needed.
STATIC_FROM_APPS = bool(INPUTS.get("STATIC_FROM_APPS"))
STORAGES = {
    "default": IMAGE_STORAGE,
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if STATIC_FROM_APPS
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

STATIC_URL = "static/"
STATIC_ROOT: Path | None = None if STATIC_FROM_APPS else BASE_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = STATIC_FROM_APPS
WHITENOISE_ROOT = BASE_DIR / "imagecache" / "root"
