"""The Docker image's decisions, read from the Dockerfile, .dockerignore and
compose.yaml: production code only (no simulator, no Pillow), no proxy
trusted unless named, and the web port on loopback. tests/docker/smoke.sh
checks the same on the built image where a Docker engine runs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.http.request import validate_host

from config.healthcheck import check_host
from tests.harness import image
from tests.harness.service import ROOT

REQUIREMENT = re.compile(r"-r\s+\S*?requirements/(\S+)")


def requirement_files(name: str) -> set[str]:
    """`name` and the files it includes with -r, recursively."""
    found = {name}
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        if match := re.fullmatch(r"-r\s+(\S+)", line.strip()):
            found |= requirement_files(match[1])
    return found


def test_the_image_holds_the_service_but_not_the_simulator():
    app = [
        path.relative_to(ROOT).as_posix()
        for folder in ("imagecache", "config")
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    ]
    simulator = [path for path in app if path.startswith("imagecache/simulator/")]
    assert simulator
    assert [path for path in simulator if not image.dockerignored(path)] == []
    kept = [path for path in app if path not in simulator]
    assert [path for path in kept if image.dockerignored(path)] == []


def test_the_image_installs_no_pillow():
    installed: set[str] = set()
    for keyword, arguments in image.instructions():
        if keyword == "RUN" and "pip install" in arguments:
            for name in REQUIREMENT.findall(arguments):
                installed |= requirement_files(name)
    assert "base.txt" in installed
    assert "simulator.txt" not in installed
    for name in installed:
        text = (ROOT / "requirements" / name).read_text().lower()
        assert not re.search(r"^pillow\b", text, re.MULTILINE), name


def production_env(tmp_path: Path) -> dict[str, str]:
    """The image's environment, with credentials, on a temp volume, without the
    suite's servers."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    return {
        **clean,
        **image.environment(),
        "CACHE_PATH": str(tmp_path),
        "SECRET_KEY": "image-test",
        "ALLOWED_HOSTS": "cache.example.com",
        "KT_AUTH_EMAIL": "ops@example.com",
        "KT_AUTH_TOKEN": "token",
    }


def run_in_image_env(
    argv: list[str], tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """`argv`, in the clone, with the image's environment and then `env`."""
    return subprocess.run(
        argv,
        cwd=ROOT,
        env={**production_env(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_what_production_runs_imports_neither_pillow_nor_the_simulator(tmp_path):
    # The web workers' application, the admin, the worker's tasks and the
    # Kentik client, and every command the entry point's roles run.
    code = """
import sys
import config.wsgi, django.contrib.admin
django.contrib.admin.site.get_urls()
import django_q.cluster, imagecache.tasks, imagecache.services.fetching, imagecache.kentik
from django.core.management import get_commands, load_command_class
for name, app in get_commands().items():
    if app == "imagecache" or name in ("migrate", "collectstatic"):
        load_command_class(app, name)
print(sorted(m for m in sys.modules if m.split(".")[0] == "PIL" or m.startswith("imagecache.sim")))
"""
    result = run_in_image_env([sys.executable, "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_images_build_time_collectstatic_has_what_production_needs(tmp_path):
    [run] = [args for keyword, args in image.final_stage() if "collectstatic" in args]
    words = run.split()
    assignments = dict(word.split("=", 1) for word in words[: words.index("python")])
    # Nothing but the image's ENV and the line's own assignments.
    unset = {k: "" for k in ("SECRET_KEY", "ALLOWED_HOSTS", "KT_AUTH_EMAIL", "KT_AUTH_TOKEN")}
    result = run_in_image_env(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--dry-run"],
        tmp_path,
        **{**unset, **assignments},
    )
    assert result.returncode == 0, result.stderr


def test_the_image_trusts_no_proxy_until_one_is_named(tmp_path):
    # What gunicorn makes of config/gunicorn.py's value, in the image's environment.
    code = (
        "from gunicorn.config import Config; from config import gunicorn;"
        " c = Config(); c.set('forwarded_allow_ips', gunicorn.forwarded_allow_ips);"
        " print(c.forwarded_allow_ips)"
    )
    result = run_in_image_env([sys.executable, "-c", code], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_compose_publishes_the_web_port_on_loopback_only():
    # A client that reached it directly could forge what the proxy vouches
    # for: the signed-in user (REMOTE_USER_HEADER) and X-Forwarded-*.
    services = image.compose()["services"]
    published = [str(port) for service in services.values() for port in service.get("ports", [])]
    assert published
    assert [port for port in published if not port.startswith("127.0.0.1:")] == []


def test_compose_lets_the_proxy_be_named_and_requires_kentik_credentials():
    env = image.compose()["x-app"]["environment"]
    assert env["FORWARDED_ALLOW_IPS"] == "${FORWARDED_ALLOW_IPS:-}"
    assert env["KT_AUTH_EMAIL"].startswith("${KT_AUTH_EMAIL:?")
    assert env["KT_AUTH_TOKEN"].startswith("${KT_AUTH_TOKEN:?")


@pytest.mark.parametrize(
    "allowed, host",
    [
        ("cache.example.com", "cache.example.com"),
        (" cache.example.com , 127.0.0.1", "cache.example.com"),
        (".example.com", "example.com"),
        ("*", "localhost"),
        ("", "localhost"),
    ],
)
def test_the_health_check_sends_a_host_that_allowed_hosts_admits(allowed, host):
    assert check_host(allowed) == host
    if allowed:
        assert validate_host(host, [entry.strip() for entry in allowed.split(",")])
