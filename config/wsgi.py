"""WSGI entry point for gunicorn."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

django_application = get_wsgi_application()

from imagecache.fastpath import FastImages  # noqa: E402 - needs Django set up

# Ready images are answered before Django runs (imagecache/fastpath.py).
application = FastImages(django_application)
