"""Whether a process of this host runs.

A leaf, free of Django: the leases of fetches ask it of a worker, and the
metrics directory of a dead run's supervisor, before Django is set up
(gunicorn's master).
"""

import os


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this host runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A killed child not yet reaped by its parent is a zombie: dead.
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
