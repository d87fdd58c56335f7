"""gunicorn's settings (config/gunicorn.py) as gunicorn reads them at start:
which worker WEB_WORKER picks, and a wrong WEB_WORKER or PORT stops the start
naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from gunicorn.util import load_class

from config import gunicorn as gunicorn_config
from config.web_worker import HeadersFirstWorker
from imagecache import wire
from tests.harness.service import ROOT

# How the web role starts gunicorn (config/entrypoint.sh), but only to check.
CHECK = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "--check-config"]


def check_config(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """gunicorn's own check of config/gunicorn.py and the app, as the web role starts it."""
    return subprocess.run(
        [*CHECK, "config.wsgi"],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k not in ("WEB_WORKER", "BIND", "PORT")},
            "DJANGO_SETTINGS_MODULE": "config.settings.local",
            "CACHE_PATH": str(tmp_path / "cache"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("chosen", ["gthread", "headers-first"])
def test_gunicorn_starts_with_either_web_worker(tmp_path, chosen):
    result = check_config(tmp_path, WEB_WORKER=chosen)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("variable", "value"), [("WEB_WORKER", "sync"), ("PORT", "http")])
def test_a_wrong_value_stops_gunicorn_naming_the_variable(tmp_path, variable, value):
    result = check_config(tmp_path, **{variable: value})
    assert result.returncode != 0
    assert f"{variable} must be" in result.stderr
    assert repr(value) in result.stderr


def test_web_worker_picks_gunicorns_gthread_or_the_headers_first_worker():
    assert gunicorn_config.web_worker_class({"WEB_WORKER": "gthread"}) == "gthread"
    default = gunicorn_config.web_worker_class({})
    assert load_class(default) is HeadersFirstWorker


@pytest.mark.parametrize("port", ["", "0", "65536", "-1", "80.5", "eighty"])
def test_a_port_that_is_no_port_number_is_refused(port):
    with pytest.raises(ValueError, match="PORT must be a port number"):
        wire.listen_address({"PORT": port})


def test_gunicorn_binds_where_serve_announces():
    # Both read the one definition: what gunicorn binds is what serve waits for.
    host, port = wire.listen_address(os.environ)
    assert gunicorn_config.bind == f"{host}:{port}"
