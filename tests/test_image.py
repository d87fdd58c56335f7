"""The Docker image's decisions, read from the Dockerfile, .dockerignore and
compose.yaml: production code only (no simulator, no Pillow, no tests or
docs), installed from uv.lock, on a pinned base, run by a numeric non-root
user, no proxy trusted unless named, and the web port on loopback. tests/docker/smoke.sh
checks the same on the built image where a Docker engine runs."""

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from django.http.request import validate_host

from config.healthcheck import check_host
from tests import pins
from tests.harness import image
from tests.harness.service import ROOT


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


def uv_sync_run() -> str:
    """The build stage's RUN that installs the venv with `uv sync`."""
    [run] = [
        args for keyword, args in image.instructions() if keyword == "RUN" and "uv sync" in args
    ]
    return run


def uv_sync_argv() -> list[str]:
    """The build stage's `uv sync`, as a list of words."""
    [command] = [part for part in uv_sync_run().split("&&") if " sync " in part]
    return shlex.split(command)


def test_the_image_installs_the_locked_service_without_dev_tools_or_pillow():
    argv = uv_sync_argv()
    # Exactly the lock, or the build fails; not the project itself (it runs from /app).
    assert {"--locked", "--no-dev", "--no-install-project"} <= set(argv)
    copied = [args.split() for keyword, args in image.instructions() if keyword == "COPY"]
    assert ["pyproject.toml", "uv.lock", "./"] in copied
    # What that selection of the lock installs, as uv itself exports it.
    selection = [
        {"--no-install-project": "--no-emit-project"}.get(word, word)
        for word in argv[argv.index("sync") + 1 :]
        if word.startswith("--") and not word.startswith("--python")
    ]
    export = [str(pins.UV), "export", "--offline", "--no-hashes", "--format", "requirements-txt"]
    result = subprocess.run(
        [*export, *selection],
        cwd=ROOT,
        env=pins.uv_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    installed = {line.split(" ")[0] for line in result.stdout.splitlines() if line[:1].isalnum()}
    assert {"django==5.2.20", "kentik-api==1.0.7", "gunicorn==27.0.1"} <= installed
    names = {requirement.split("==")[0] for requirement in installed}
    assert not names & {"pillow", "pytest", "mypy", "ruff", "kentik-image-cache"}


def test_the_image_installs_the_uv_that_pyproject_requires():
    run = uv_sync_run()
    [spec] = re.findall(r'pip install ("uv\$\(.*\)")(?:\s|$)', run)
    # The build's own command, run on the clone's pyproject.toml.
    result = subprocess.run(
        ["sh", "-c", f"echo {spec}"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    with (ROOT / "pyproject.toml").open("rb") as file:
        required = tomllib.load(file)["tool"]["uv"]["required-version"]
    assert result.stdout.strip() == f"uv{required}"


def test_the_image_starts_from_a_python_patch_release_that_the_project_admits():
    bases = image.base_images()
    assert len(bases) == 2
    assert len(set(bases)) == 1
    match = re.fullmatch(r"python:(3\.\d+)\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", bases[0])
    assert match, bases[0]
    with (ROOT / "pyproject.toml").open("rb") as file:
        requires_python = tomllib.load(file)["project"]["requires-python"]
    assert f">={match[1]}," in requires_python


def pod_security_contexts() -> list[dict[str, object]]:
    found = []
    for path in sorted((ROOT / "deploy" / "kubernetes" / "base").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            spec = (document or {}).get("spec", {})
            spec = spec.get("jobTemplate", {}).get("spec", spec)
            context = spec.get("template", {}).get("spec", {}).get("securityContext")
            if context:
                found.append(context)
    return found


def test_the_image_runs_as_the_numeric_user_the_manifests_expect():
    user, _, group = image.user().partition(":")
    # Numeric: runAsNonRoot cannot tell a user name from root.
    assert user.isdigit() and group.isdigit(), image.user()
    assert int(user) != 0
    contexts = pod_security_contexts()
    assert contexts
    for context in contexts:
        assert (context["runAsUser"], context["runAsGroup"]) == (int(user), int(group))
        assert context["fsGroup"] == int(group)
    # The account exists with those numbers, and owns the cache volume.
    [run] = [
        args for keyword, args in image.final_stage() if keyword == "RUN" and "useradd" in args
    ]
    assert f"groupadd --system --gid {group} " in run
    assert f"useradd --system --uid {user} --gid {group} " in run
    cache = image.environment()["CACHE_PATH"]
    assert f"chown {user}:{group} {cache}" in run
    volumes = [args for keyword, args in image.final_stage() if keyword == "VOLUME"]
    assert volumes == [f'["{cache}"]']


def test_the_runtime_image_holds_no_tests_benchmarks_or_docs():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
    ).stdout.splitlines()
    sources = [
        word.rstrip("/")
        for keyword, args in image.final_stage()
        if keyword == "COPY" and not args.startswith("--from")
        for word in args.split()[:-1]
    ]
    assert sources
    copied = [
        path
        for path in tracked
        if not image.dockerignored(path)
        and any(
            source == "." or path == source or path.startswith(f"{source}/") for source in sources
        )
    ]
    assert "imagecache/kentik.py" in copied
    assert "manage.py" in copied
    unwanted = [
        path
        for path in copied
        if path.split("/")[0] in ("tests", "bench", "docs") or path.endswith(".md")
    ]
    assert unwanted == []
    # Nor in the build context, where a later `COPY .` would find them.
    for path in ("tests/conftest.py", "bench/run.py", "docs/deploying.md", "README.md"):
        assert image.dockerignored(path), path


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
