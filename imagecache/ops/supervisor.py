"""Runs the whole service in the foreground: the Kentik simulator when there
are no credentials, then gunicorn and the django-q2 cluster, until a signal or
one of them stops."""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from imagecache.ops.metrics_dir import metrics_dir_prepare

SIMULATOR_EMAIL = "simulator@example.com"
SIMULATOR_TOKEN = "simulator-token"


class Runner:
    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopping = False
        self.metrics_dir: Path | None = None

    def prepare_metrics_dir(self, env: dict[str, str]) -> None:
        """One metrics directory for every child, removed at the end if made here."""
        self.metrics_dir = metrics_dir_prepare(env)

    def start_simulator(self, env: dict[str, str]) -> None:
        """Start the bundled simulator and point `env` at it."""
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "imagecache.simulator",
                "--port",
                "0",
                "--email",
                SIMULATOR_EMAIL,
                "--token",
                SIMULATOR_TOKEN,
                "--delay",
                env.get("SIMULATOR_DELAY", "1.0"),
            ],
            stdout=subprocess.PIPE,
            cwd=settings.BASE_DIR,
        )
        self.children.append(("simulator", process))
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        if not line.startswith("Kentik simulator listening on "):
            raise RuntimeError(f"The Kentik simulator did not start: {line!r}")
        url = line.rsplit(" ", 1)[1]
        env.update(KENTIK_API_URL=url, KT_AUTH_EMAIL=SIMULATOR_EMAIL, KT_AUTH_TOKEN=SIMULATOR_TOKEN)
        self.write(
            "No Kentik credentials (KT_AUTH_EMAIL and KT_AUTH_TOKEN are not set): "
            f"charts come from the bundled Kentik simulator at {url}"
        )

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.children.append((name, subprocess.Popen(argv, env=env, cwd=Path(settings.BASE_DIR))))

    def wait(self) -> int:
        """Until a signal, or a child exits; then stop every child."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        code = 0
        while not self.stopping:
            for name, process in self.children:
                if process.poll() is not None:
                    self.write(f"{name} exited with {process.returncode}; stopping")
                    code = process.returncode or 1
                    self.stopping = True
                    break
            time.sleep(0.2)
        self.stop()
        return code

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def stop(self) -> None:
        # Web and workers first, the simulator (which they may still call) last.
        for name, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.write(f"{name} did not stop in 15 s; killing it")
                process.kill()
                process.wait()
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir = None


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", os.environ.get("DJANGO_SETTINGS_MODULE", ""))
    env["PYTHONUNBUFFERED"] = "1"
    return env
