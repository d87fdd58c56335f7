"""What every answerer of the service's HTTP agrees on: where it listens, the
largest body it takes, the image and chart routes, the header of a stale
answer, and the shape of an error.

A leaf: it imports nothing of the app and nothing of Django, so that
gunicorn's master (config/gunicorn.py), its workers (config/web_worker.py),
the settings, the API and `manage.py serve` all read this one definition.
"""

from collections.abc import Mapping
from typing import Any, Final

# The largest request body the API takes (Django's DATA_UPLOAD_MAX_MEMORY_SIZE):
# a query is a few KiB, so anything near this is a mistake or an attack.
BODY_LIMIT: Final = 1024 * 1024

# The path of an image, before its id: `/image/<id>`.
IMAGE_PATH: Final = "/image/"
# The saved charts' list, before a chart's slug: `/charts/<slug>[.<ext>]`.
CHARTS_PATH: Final = "/charts/"
# On an older image that answers while Kentik fails: why (stale-if-error).
STALE_HEADER: Final = "X-Image-Stale"

# The address the web server listens on, and what it is without them.
BIND_VARIABLE: Final = "BIND"
PORT_VARIABLE: Final = "PORT"
BIND_DEFAULT: Final = "127.0.0.1"
PORT_DEFAULT: Final = "8000"


def listen_address(environ: Mapping[str, str]) -> tuple[str, int]:
    """The host and port the web server listens on (BIND, PORT)."""
    host = environ.get(BIND_VARIABLE, BIND_DEFAULT)
    port = environ.get(PORT_VARIABLE, PORT_DEFAULT)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{PORT_VARIABLE} must be a port number (1-65535), not {port!r}")
    return host, int(port)


def error_body(status: int, message: str, **more: Any) -> dict[str, Any]:
    """The JSON body of every error the service answers, whoever answers it."""
    return {"error": message, **more, "status": status}
