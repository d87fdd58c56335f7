"""Whether a process of this host runs, and ending with one's parent.

A leaf, free of Django: the leases of fetches ask it of a worker, and the
metrics directory of a dead run's supervisor, before Django is set up
(gunicorn's master).
"""

import ctypes
import os
import sys


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


# prctl(2)'s option: the signal the kernel sends a process when its parent dies.
PR_SET_PDEATHSIG = 1
# Looked up once, in the parent: the hook below may run between a fork and
# an exec, where loading a library could wait for a lock that another
# thread of the parent held at the fork.
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def die_with_parent(signum: int, parent: int) -> None:
    """Have the kernel send `signum` to this process when `parent` (the
    process that forked it) dies, however it dies (Linux; elsewhere nothing).
    The kernel watches the *thread* that forked: the fork must come from a
    thread that lives as long as its process. A parent that died before this
    call cannot send it any more: then this process ends here."""
    if _libc is not None and _libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os._exit(1)


# The pid of `manage.py serve`, in the environment of the children it starts:
# a child that outlives it can tell, even where the kernel would not signal it.
SUPERVISOR_PID = "IMAGECACHE_SUPERVISOR_PID"


def supervisor_gone() -> bool:
    """Whether this process was started by `manage.py serve` and has lost it."""
    supervisor = os.environ.get(SUPERVISOR_PID)
    return supervisor is not None and os.getppid() != int(supervisor)
