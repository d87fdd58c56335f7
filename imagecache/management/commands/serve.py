import os
import sys
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from imagecache.runner import Runner, child_env


class Command(BaseCommand):
    help = "Migrate, recover pending fetches, and run gunicorn and the worker in the foreground."

    def handle(self, *args: Any, **options: Any) -> None:
        runner = Runner(self.stdout.write)
        env = child_env()
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
            runner.start("worker", [sys.executable, "manage.py", "qcluster"], env)
            runner.start(
                "web",
                [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"],
                env,
            )
        except BaseException:
            runner.stop()
            raise
        bind = f"{os.environ.get('BIND', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
        self.stdout.write(f"Kentik image cache on http://{bind}/ (cache in {settings.CACHE_PATH})")
        sys.exit(runner.wait())
