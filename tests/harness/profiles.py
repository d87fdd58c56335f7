"""A settings profile started in a fresh process."""

import os
import subprocess
import sys

from tests.harness.service import ROOT


def start(settings_module: str, **env: str) -> subprocess.CompletedProcess[str]:
    return setup_and_run(settings_module, "print('started')", env)


def setup_and_run(
    settings_module: str, code: str, env: dict[str, str], dropped: frozenset[str] = frozenset()
) -> subprocess.CompletedProcess[str]:
    """`code` run after django.setup(), without the variables `dropped`."""
    clean = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", *dropped}}
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": settings_module, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
