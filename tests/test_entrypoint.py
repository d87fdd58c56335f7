"""The Docker image's entry point, role by role: the script runs directly, with
the image's production settings (tests/docker/smoke.sh runs the image itself
where a Docker engine runs)."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from imagecache.api.examples import chart_query
from tests.harness import image
from tests.harness.data import E2E_EMAIL, E2E_TOKEN
from tests.harness.prometheus import parse, value
from tests.harness.service import ROOT, free_port, wait_for

ENTRYPOINT = ROOT / "config" / "entrypoint.sh"


@pytest.fixture
def image_env(tmp_path: Path) -> dict[str, str]:
    """What the Dockerfile and a deployment set, pointed at a temp directory."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL")
    }
    return {
        **clean,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": "entrypoint-test",
        "ALLOWED_HOSTS": "127.0.0.1",
        "CACHE_PATH": str(tmp_path / "cache"),
        "BIND": "127.0.0.1",
        "PORT": str(free_port()),
        "KT_AUTH_EMAIL": "ops@example.com",
        "KT_AUTH_TOKEN": "token",
    }


def run(
    role: str, env: dict[str, str], *args: str, entrypoint: Path = ENTRYPOINT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(entrypoint), role, *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_migrate_role_migrates_and_registers_schedules(image_env):
    result = run("migrate", image_env)
    assert result.returncode == 0, result.stderr
    assert "Registered 1 schedules: imagecache.maintain_cache" in result.stdout
    # The embedded database lives on the cache volume in production.
    assert (Path(image_env["CACHE_PATH"]) / "db.sqlite3").is_file()


def test_recover_role_reports_what_it_enqueued(image_env):
    assert run("migrate", image_env).returncode == 0
    result = run("recover", image_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("Recovered 0 pending fetches")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give the volume away")
def test_started_as_root_it_gives_the_cache_to_run_as_and_runs_as_that_user(image_env):
    # A host directory mounted on the volume is root's, files in it included;
    # outside pytest's temp directories, which only root may enter.
    mount = Path(tempfile.mkdtemp())
    mount.chmod(0o755)
    cache = mount / "cache"
    cache.mkdir()
    (cache / "db.sqlite3").write_bytes(b"")
    # The script runs itself again as RUN_AS, who may not enter the clone.
    entrypoint = entrypoint_copy(mount)
    env = {**image_env, "CACHE_PATH": str(cache), "RUN_AS": "nobody"}
    script = 'id -un; stat -c %U "$CACHE_PATH" "$CACHE_PATH/db.sqlite3"; touch "$CACHE_PATH/new"'
    try:
        result = run("sh", env, "-c", script, entrypoint=entrypoint)
    finally:
        shutil.rmtree(mount)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["nobody", "nobody", "nobody"]


def entrypoint_copy(mount: Path) -> Path:
    """The entry point, copied where any user may run it (a clone in a `mktemp
    -d` directory is 0700)."""
    app = mount / "app" / "config"
    app.mkdir(parents=True)
    return Path(shutil.copy2(ENTRYPOINT, app / ENTRYPOINT.name))


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can start it as another user")
@pytest.mark.parametrize("owner", ["root", "service"])
def test_run_as_the_images_user_it_needs_a_cache_it_can_write(image_env, owner):
    # The image's USER; the cache as a host directory left root's, or given to it.
    uid = int(image.user().split(":")[0])
    mount = Path(tempfile.mkdtemp())
    mount.chmod(0o755)
    cache = mount / "cache"
    cache.mkdir()
    if owner == "service":
        os.chown(cache, uid, uid)
    entrypoint = entrypoint_copy(mount)
    env = {**image_env, "CACHE_PATH": str(cache), "RUN_AS": "imagecache"}
    as_user = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    try:
        result = subprocess.run(
            [*as_user, str(entrypoint), "sh", "-c", 'id -u; touch "$CACHE_PATH/new"'],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        shutil.rmtree(mount)
    if owner == "root":
        assert result.returncode == 1
        assert result.stdout == ""
        assert f"CACHE_PATH ({cache}) is not writable by uid {uid}" in result.stderr
        assert "--user 0" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [str(uid)]


def test_other_arguments_run_as_a_command(image_env):
    assert run("migrate", image_env).returncode == 0
    result = run("python", image_env, "manage.py", "prune_cache", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Would prune 0 entries")


@pytest.mark.parametrize(
    "role, ready",
    [("web", "Booting worker"), ("worker", "running.")],
)
def test_long_running_roles_start_and_stop_on_sigterm(image_env, role, ready, tmp_path):
    assert run("migrate", image_env).returncode == 0
    process = start_role(role, image_env, tmp_path / f"{role}.log", ready)
    try:
        if role == "web":
            web_answers(image_env["PORT"])
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()


def start_role(role: str, env: dict[str, str], log: Path, ready: str) -> subprocess.Popen[bytes]:
    """The entry point's `role`, running once `ready` is in its log."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(ENTRYPOINT), role], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while ready not in log.read_text() and time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        time.sleep(0.2)
    assert ready in log.read_text()
    return process


def web_answers(port: str) -> None:
    """Until the web role answers `/info` (its workers load the app after it
    logs that they boot)."""
    url = f"http://127.0.0.1:{port}/info?limit=0"
    deadline = time.monotonic() + 60
    while True:
        try:
            assert requests.get(url, timeout=5).status_code == 200
            return
        except requests.ConnectionError:
            assert time.monotonic() < deadline, f"{url} does not answer"
            time.sleep(0.2)


def kentik_calls(metrics_text: str) -> float:
    return value(parse(metrics_text), "imagecache_kentik_calls_total", status="200")


def test_worker_role_serves_its_workers_metrics_the_web_cannot_read(image_env, simulator, tmp_path):
    """A worker in a container of its own: its Kentik calls are counted in
    its processes, which the web's /metrics does not see."""
    env = {
        **image_env,
        "KENTIK_API_URL": simulator.url,
        "KT_AUTH_EMAIL": E2E_EMAIL,
        "KT_AUTH_TOKEN": E2E_TOKEN,
    }
    worker_env = {**env, "WORKER_METRICS_PORT": str(free_port())}
    assert run("migrate", env).returncode == 0
    processes = []
    try:
        processes.append(start_role("web", env, tmp_path / "web.log", "Booting worker"))
        processes.append(start_role("worker", worker_env, tmp_path / "worker.log", "running."))
        web_answers(env["PORT"])
        web = f"http://127.0.0.1:{env['PORT']}"
        worker_metrics = f"http://127.0.0.1:{worker_env['WORKER_METRICS_PORT']}/metrics"
        assert kentik_calls(requests.get(worker_metrics, timeout=5).text) == 0
        query = {"api_query": chart_query("worker metrics"), "ttl": 60}
        entry_id = requests.post(f"{web}/requests", json=query, timeout=10).json()["id"]
        assert requests.get(f"{web}/image/{entry_id}", timeout=60).status_code == 200
        # The worker counts the call just after it stores the image that the GET answered.
        wait_for(lambda: kentik_calls(requests.get(worker_metrics, timeout=5).text) > 0)
        assert kentik_calls(requests.get(worker_metrics, timeout=5).text) == 1
        assert kentik_calls(requests.get(f"{web}/metrics", timeout=5).text) == 0
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=60) for process in processes]
    assert codes == [0, 0]


@pytest.mark.parametrize("allowed_hosts", ["cache.example.com", ".example.com"])
def test_the_images_health_check_passes_when_allowed_hosts_is_not_loopback(
    image_env, allowed_hosts, tmp_path
):
    # The Dockerfile's HEALTHCHECK command, run as Docker runs it (in the
    # image's WORKDIR, with the container's environment) against the web role.
    env = {**image_env, "ALLOWED_HOSTS": allowed_hosts}
    assert run("migrate", env).returncode == 0
    process = start_role("web", env, tmp_path / "web.log", "Booting worker")
    try:
        host = allowed_hosts.removeprefix(".")
        url = f"http://127.0.0.1:{env['PORT']}/healthz"
        wait_for(lambda: answers(url, host), timeout=60)
        check = subprocess.run(
            image.healthcheck_argv(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def answers(url: str, host: str) -> bool:
    """Whether the server answers `url` with `host` at all (whatever the status)."""
    try:
        requests.get(url, headers={"Host": host}, timeout=5)
    except requests.ConnectionError:
        return False
    return True
