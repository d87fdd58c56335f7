"""The credentials that `manage.py serve` gives the bundled Kentik simulator it
starts when there are no Kentik credentials (`make run`), and by which the
index page tells that its charts are simulated.

Outside `imagecache.simulator`, which the production image leaves out: the
index page runs there too.
"""

from typing import Final

LOCAL_EMAIL: Final = "simulator@example.com"
LOCAL_TOKEN: Final = "simulator-token"
