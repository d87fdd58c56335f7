"""Start-up refuses wrong configuration, naming the variable."""

import os
import subprocess
import sys

import pytest

from tests.harness.profiles import setup_and_run, start
from tests.harness.service import ROOT


@pytest.mark.parametrize(
    "variable, value",
    [
        ("KENTIK_API_TIMEOUT", "sixty"),
        ("KENTIK_API_RETRIES", "-1"),
        ("KENTIK_API_BACKOFF", "soon"),
        ("DEFAULT_TTL", "0"),
        ("ENTRY_WAIT_TIMEOUT", "soon"),
        ("REUSE_MAX_AGE", "1.5"),
        ("CACHE_MAINTENANCE_PERIOD", "x"),
        ("KENTIK_API_URL", "ftp://kentik"),
        ("DATABASE_URL", "nosuchdb://x"),
        ("DB_SYNCHRONOUS_COMMIT", "never"),
    ],
)
def test_wrong_value_stops_start_up_naming_the_variable(variable, value):
    result = start("config.settings.local", **{variable: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert variable in result.stderr.splitlines()[-1]


PRODUCTION = {"SECRET_KEY": "s", "ALLOWED_HOSTS": "cache.example.com", "CACHE_PATH": "/tmp/c"}


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ALLOWED_HOSTS", "CACHE_PATH"])
def test_production_refuses_to_start_without(missing):
    env = {k: v for k, v in PRODUCTION.items() if k != missing}
    result = start("config.settings.production", **env)
    assert result.returncode != 0
    assert missing in result.stderr.splitlines()[-1]


def test_production_refuses_debug():
    result = start("config.settings.production", DEBUG="true", **PRODUCTION)
    assert result.returncode != 0
    assert "DEBUG" in result.stderr.splitlines()[-1]


def test_production_starts_with_what_it_needs():
    result = start("config.settings.production", **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started"


def test_embedded_production_writes_only_under_cache_path(tmp_path):
    # The Docker image's user may write /cache (CACHE_PATH), not /app.
    code = (
        "from django.conf import settings; "
        "print(settings.DATABASES['default']['NAME']); "
        "print(settings.CACHES['django_q']['LOCATION'])"
    )
    env = {**PRODUCTION, "CACHE_PATH": str(tmp_path)}
    # Without the production profile's servers, if the suite runs with them.
    dropped = frozenset({"DATABASE_URL", "REDIS_URL"})
    result = setup_and_run("config.settings.production", code, env, dropped)
    assert result.returncode == 0, result.stderr
    database, cluster_stats = result.stdout.split()
    assert database == str(tmp_path / "db.sqlite3")
    assert cluster_stats == str(tmp_path / "db.sqlite3-q-stats")


def test_kentik_api_backoff_is_a_setting_read_from_the_environment():
    # The e2e services set it to 0.1; the Kentik client reads the setting.
    code = "from django.conf import settings; print(settings.KENTIK_API_BACKOFF)"
    result = setup_and_run("config.settings.local", code, {"KENTIK_API_BACKOFF": "0.1"})
    assert result.stdout.split() == ["0.1"], result.stderr


def test_local_profile_needs_no_configuration():
    result = start("config.settings.local")
    assert result.returncode == 0, result.stderr


def local_python(code: str) -> str:
    """What `code` prints in a fresh interpreter on the local profile."""
    loaded = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert loaded.returncode == 0, loaded.stderr
    return loaded.stdout.strip()


def test_a_web_worker_loads_its_views_and_broker_client_before_its_first_request():
    printed = local_python(
        "import sys, config.wsgi; from django_q.conf import Conf;"
        " broker = 'django_q.brokers.' + ('orm' if Conf.ORM else 'redis_broker');"
        " print('imagecache.api.views' in sys.modules, broker in sys.modules)"
    )
    assert printed.split() == ["True", "True"]


def test_a_web_worker_never_imports_the_kentik_client():
    # kentik-api brings gRPC and protobuf (some 500 modules): only the queue
    # workers, which call Kentik, may pay for them. The admin's actions and
    # the API enqueue fetches by name.
    heavy = ["kentik_api", "grpc", "google.protobuf", "imagecache.kentik", "imagecache.tasks"]
    printed = local_python(
        "import sys, config.wsgi, django.contrib.admin;"
        " django.contrib.admin.site.get_urls();"
        f" print([name for name in {heavy!r} if name in sys.modules])"
    )
    assert printed == "[]"


def test_a_queue_worker_imports_the_kentik_client_through_the_tasks():
    # The other side of the test above: the check would pass vacuously if the
    # module names were wrong.
    printed = local_python(
        "import sys, django; django.setup(); import imagecache.tasks;"
        " print('kentik_api' in sys.modules)"
    )
    assert printed == "True"
