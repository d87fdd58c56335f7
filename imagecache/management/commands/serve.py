import os
import signal
import sys
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from imagecache.ops import metrics
from imagecache.ops.metrics_dir import METRICS_DIR
from imagecache.ops.supervisor import Supervisor, child_env, listening, port_taken
from imagecache.wire import listen_address

# django-q2's qcluster, with the worker's heartbeat (manage.py worker).
QCLUSTER = [sys.executable, "manage.py", "worker"]


class Command(BaseCommand):
    help = "Migrate, recover pending fetches, and run gunicorn and the worker in the foreground."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--worker",
            action="store_true",
            help="Only the worker: recover pending fetches, run the qcluster, and serve its "
            "metrics on WORKER_METRICS_PORT if set (the image's `worker` role).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # First: its signal handlers, before anything starts.
        runner = Supervisor(self.stdout.write)
        env = child_env()
        bind_host, port = listen_address(os.environ)
        if options["worker"]:
            sys.exit(self.worker(runner, env, bind_host))
        refuse_taken(bind_host, port, "PORT")
        try:
            # First: the children's metrics files must go to a clean directory.
            runner.prepare_metrics_dir(env)
            if not (settings.KT_AUTH_EMAIL and settings.KT_AUTH_TOKEN):
                runner.start_simulator(env)
            else:
                self.stdout.write(f"Kentik API: {settings.KENTIK_API_URL}")
            call_command("migrate", interactive=False, verbosity=0)
            call_command("register_schedules", stdout=self.stdout)
            # Before the worker starts, so that what was in flight at the last
            # stop (or crash) is taken up first.
            call_command("recover_pending", stdout=self.stdout)
            release_database()
            runner.start("worker", QCLUSTER, env)
            runner.start(
                "web",
                [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"],
                env,
                # gunicorn's quick stop: with no supervisor left to bound a
                # graceful one, the port must be free for the next start.
                # (SIGHUP would make gunicorn reload, not stop.)
                on_orphan=signal.SIGQUIT,
            )
        except BaseException:
            runner.stop()
            raise
        sys.exit(
            runner.wait(
                announce=f"Kentik image cache on http://{bind_host}:{port}/"
                f" (cache in {settings.CACHE_PATH})",
                when=lambda: listening(bind_host, port),
            )
        )

    def worker(self, runner: Supervisor, env: dict[str, str], bind_host: str) -> int:
        if settings.WORKER_METRICS_PORT:
            refuse_taken(bind_host, settings.WORKER_METRICS_PORT, "WORKER_METRICS_PORT")
        try:
            runner.prepare_metrics_dir(env)
            call_command("recover_pending", stdout=self.stdout)
            release_database()
            runner.start("worker", QCLUSTER, env)
            if settings.WORKER_METRICS_PORT:
                metrics.serve_worker_metrics(
                    bind_host, settings.WORKER_METRICS_PORT, env[METRICS_DIR]
                )
                self.stdout.write(
                    f"Worker metrics on http://{bind_host}:{settings.WORKER_METRICS_PORT}/metrics"
                )
        except BaseException:
            runner.stop()
            raise
        return runner.wait()


def refuse_taken(host: str, port: int, variable: str) -> None:
    """Stop before anything starts if another server holds the port (an
    earlier run, say): one line, not a start that fails after five seconds."""
    if port_taken(host, port):
        raise CommandError(f"{host}:{port} is in use by another server; stop it, or set {variable}")


def release_database() -> None:
    """Close this process's connections: from here on it only watches its
    children, and a connection kept would idle against PostgreSQL's
    max_connections (or hold SQLite's files) for as long as the node runs."""
    connections.close_all()
