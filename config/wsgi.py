"""WSGI entry point for gunicorn."""

import importlib
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

django_application = get_wsgi_application()

from config.chunked import ChunkedBodies  # noqa: E402 - needs Django set up
from imagecache.api.fastpath import FastImages  # noqa: E402 - needs Django set up

# Ready images are answered before Django runs (imagecache/api/fastpath.py);
# chunked request bodies are read whole before Django does (config/chunked.py).
application = FastImages(ChunkedBodies(django_application))


def _warm_up() -> None:
    """Import now what each worker's first requests would otherwise import
    while their clients wait: the views (through the URLconf) and the queue
    broker's client (redis-py alone takes about 0.2 s)."""
    from django.urls import get_resolver
    from django_q.conf import Conf

    get_resolver().url_patterns  # noqa: B018 - the property imports the views
    importlib.import_module("django_q.brokers." + ("orm" if Conf.ORM else "redis_broker"))


_warm_up()
