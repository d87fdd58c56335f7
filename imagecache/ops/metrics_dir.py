"""The directory of Prometheus' multiprocess mode (`imagecache.ops.metrics`):
every process of the service writes its metrics there, and /metrics sums
them.

It must be prepared, and named in the environment, before prometheus_client
is first imported: `manage.py serve` and gunicorn's master (config/gunicorn.py)
call this module before anything imports the metrics, so it imports neither
prometheus_client nor Django's models.
"""

import os
import shutil
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

from imagecache.processes import process_alive

METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# The directory that was prepared for the processes started with this
# environment: gunicorn, started by `manage.py serve` after the qcluster,
# must not empty it under the qcluster's feet.
METRICS_DIR_PREPARED = "IMAGECACHE_METRICS_DIR_PREPARED"
# A temp directory made here is named after the process that removes it when
# it stops: `imagecache-metrics-<pid>-<random>`.
METRICS_TEMP_PREFIX = "imagecache-metrics-"


def metrics_dir_prepare(env: MutableMapping[str, str]) -> Path | None:
    """Give the processes started with `env` one empty directory for their
    metrics: PROMETHEUS_MULTIPROC_DIR, emptied of a previous run's files, or
    a new temp directory. Nothing if it is already prepared. Returns the
    directory if it was made here, for the caller to remove at the end."""
    path = env.get(METRICS_DIR)
    if path and env.get(METRICS_DIR_PREPARED) == path:
        return None
    made = None
    if path:
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        # A dead process's counters would be summed with the new ones.
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        metrics_temp_dirs_remove_stale()
        made = Path(tempfile.mkdtemp(prefix=f"{METRICS_TEMP_PREFIX}{os.getpid()}-"))
        path = str(made)
    env[METRICS_DIR] = path
    env[METRICS_DIR_PREPARED] = path
    return made


def metrics_temp_dirs_remove_stale() -> None:
    """The temp metrics directories of runs that could not remove their own
    (killed with -9): their process is gone."""
    for directory in Path(tempfile.gettempdir()).glob(f"{METRICS_TEMP_PREFIX}*-*"):
        pid = directory.name.removeprefix(METRICS_TEMP_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(directory, ignore_errors=True)
