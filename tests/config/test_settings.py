"""Start-up refuses wrong configuration, naming the variable."""

import json
import os
import subprocess
import sys

import pytest

from config.settings import base
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
        ("CHART_KEEP_WARM", "ten minutes"),
        ("CHART_WARM_MAX", "0"),
        ("CHART_URL_KEYS", "short"),
        ("CHART_URL_KEYS", "a-secret-long-enough,,"),
        ("PUBLIC_URL", "cache.example.com"),
        ("ADHOC_QUERIES", "perhaps"),
    ],
)
def test_wrong_value_stops_start_up_naming_the_variable(variable, value):
    result = start("config.settings.local", **{variable: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert variable in result.stderr.splitlines()[-1]


PRODUCTION = {
    "SECRET_KEY": "s",
    "ALLOWED_HOSTS": "cache.example.com",
    "CACHE_PATH": "/tmp/c",
    "KT_AUTH_EMAIL": "ops@example.com",
    "KT_AUTH_TOKEN": "t",
}
KENTIK_CREDENTIALS = frozenset({"KT_AUTH_EMAIL", "KT_AUTH_TOKEN", "KT_AUTH_TOKEN_FILE"})


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ALLOWED_HOSTS", "CACHE_PATH"])
def test_production_refuses_to_start_without(missing):
    env = {k: v for k, v in PRODUCTION.items() if k != missing}
    result = start("config.settings.production", **env)
    assert result.returncode != 0
    assert missing in result.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    "missing", [{"KT_AUTH_EMAIL"}, {"KT_AUTH_TOKEN"}, {"KT_AUTH_EMAIL", "KT_AUTH_TOKEN"}]
)
def test_production_refuses_to_start_without_kentik_credentials(missing):
    # Without them, `manage.py serve` would serve the simulator's charts as Kentik's.
    env = {k: v for k, v in PRODUCTION.items() if k not in missing}
    result = setup_and_run(
        "config.settings.production", "print('started')", env, KENTIK_CREDENTIALS
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    last = result.stderr.splitlines()[-1]
    assert "KT_AUTH_EMAIL" in last and "KT_AUTH_TOKEN" in last


def test_production_takes_the_kentik_token_from_its_file(tmp_path):
    token = tmp_path / "token"
    token.write_text("t\n")
    env = {k: v for k, v in PRODUCTION.items() if k != "KT_AUTH_TOKEN"}
    env["KT_AUTH_TOKEN_FILE"] = str(token)
    result = setup_and_run(
        "config.settings.production", "print('started')", env, KENTIK_CREDENTIALS
    )
    assert result.returncode == 0, result.stderr


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
    heavy = [
        "kentik_api",
        "grpc",
        "google.protobuf",
        "imagecache.kentik",
        "imagecache.kentik_transport",
        "imagecache.tasks",
    ]
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


# --- Secrets from files (NAME_FILE) ----------------------------------------------

SECRET_FILES = frozenset(
    f"{name}{suffix}" for name in base.SECRET_FILE_VARIABLES for suffix in ("", "_FILE")
)


def with_secret_file(tmp_path, name: str, content: str, code: str) -> str:
    """What `code` prints on the local profile with `name`_FILE naming a file
    that holds `content`, and no other secret from the test run's environment."""
    secret = tmp_path / name.lower()
    secret.write_text(content)
    result = setup_and_run(
        "config.settings.local", code, {f"{name}_FILE": str(secret)}, dropped=SECRET_FILES
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_secret_key_comes_from_its_file_without_the_trailing_newline(tmp_path):
    code = "from django.conf import settings; print(repr(settings.SECRET_KEY))"
    printed = with_secret_file(tmp_path, "SECRET_KEY", "a key from a file \n", code)
    assert printed == repr("a key from a file ")


def test_kentik_token_comes_from_its_file(tmp_path):
    code = "from django.conf import settings; print(repr(settings.KT_AUTH_TOKEN))"
    assert with_secret_file(tmp_path, "KT_AUTH_TOKEN", "t0ken\r\n", code) == repr("t0ken")


def test_database_url_comes_from_its_file(tmp_path):
    code = (
        "from django.conf import settings; d = settings.DATABASES['default'];"
        " print(d['ENGINE'], d['NAME'])"
    )
    url = f"sqlite:///{tmp_path / 'from-file.sqlite3'}\n"
    printed = with_secret_file(tmp_path, "DATABASE_URL", url, code)
    assert printed == f"django.db.backends.sqlite3 {tmp_path / 'from-file.sqlite3'}"


def test_production_starts_with_its_secret_key_from_a_file(tmp_path):
    secret = tmp_path / "secret_key"
    secret.write_text("s\n")
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}
    result = setup_and_run(
        "config.settings.production",
        "print('started')",
        {**env, "SECRET_KEY_FILE": str(secret)},
        dropped=SECRET_FILES,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started"


def start_with(env: dict[str, str]) -> str:
    """The last line of the local profile's failed start-up with `env`."""
    result = setup_and_run("config.settings.local", "print('started')", env, dropped=SECRET_FILES)
    assert result.returncode != 0, result.stdout
    assert "ImproperlyConfigured" in result.stderr
    return result.stderr.splitlines()[-1]


@pytest.mark.parametrize("name", base.SECRET_FILE_VARIABLES)
def test_a_secret_and_its_file_both_set_stop_start_up_naming_both(tmp_path, name):
    secret = tmp_path / "secret"
    secret.write_text("sqlite:///x.sqlite3" if name == "DATABASE_URL" else "x")
    value = f"sqlite:///{tmp_path / 'db.sqlite3'}" if name == "DATABASE_URL" else "y"
    line = start_with({name: value, f"{name}_FILE": str(secret)})
    assert f"{name} and {name}_FILE are both set" in line


@pytest.mark.parametrize("name", base.SECRET_FILE_VARIABLES)
def test_an_unreadable_secret_file_stops_start_up_naming_it(tmp_path, name):
    missing = tmp_path / "no-such-secret"
    line = start_with({f"{name}_FILE": str(missing)})
    assert f"{name}_FILE: {missing} cannot be read (No such file or directory)" in line


@pytest.mark.parametrize("name", base.SECRET_FILE_VARIABLES)
def test_an_empty_secret_file_stops_start_up_naming_it(tmp_path, name):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert f"{name}_FILE: {empty} is empty" in start_with({f"{name}_FILE": str(empty)})


def test_a_database_url_file_with_a_wrong_url_names_the_variable_not_the_url(tmp_path):
    secret = tmp_path / "database_url"
    secret.write_text("postgres://user:hunter2@db:notaport/x\n")
    line = start_with({"DATABASE_URL_FILE": str(secret)})
    assert "DATABASE_URL_FILE" in line
    assert "hunter2" not in line


# --- Sign-in through the proxy (REMOTE_USER_HEADER) --------------------------------

SIGN_IN = (
    "from django.conf import settings;"
    " print(settings.MIDDLEWARE.index('imagecache.admin.signin.ProxyUserMiddleware')"
    " - settings.MIDDLEWARE.index('django.contrib.auth.middleware.AuthenticationMiddleware'));"
    " print(' '.join(settings.AUTHENTICATION_BACKENDS))"
)


def test_proxy_sign_in_is_off_by_default():
    code = (
        "from django.conf import settings;"
        " print([m for m in settings.MIDDLEWARE if 'RemoteUser' in m or 'signin' in m],"
        " settings.AUTHENTICATION_BACKENDS)"
    )
    result = setup_and_run(
        "config.settings.local", code, {}, dropped=frozenset({"REMOTE_USER_HEADER"})
    )
    assert result.stdout.strip() == "[] ['django.contrib.auth.backends.ModelBackend']", (
        result.stderr
    )


def test_remote_user_header_turns_proxy_sign_in_on_after_django_s_authentication():
    result = setup_and_run(
        "config.settings.local", SIGN_IN, {"REMOTE_USER_HEADER": "X-Forwarded-User"}
    )
    assert result.stdout.split("\n")[:2] == [
        "1",
        "imagecache.admin.signin.ProxyUserBackend django.contrib.auth.backends.ModelBackend",
    ], result.stderr


@pytest.mark.parametrize("header", ["X_Forwarded_User", "X-Forwarded-User: x", "-", "Ä"])
def test_a_remote_user_header_that_is_no_header_name_stops_start_up(header):
    result = start("config.settings.local", REMOTE_USER_HEADER=header)
    assert result.returncode != 0
    assert "REMOTE_USER_HEADER must be a header name" in result.stderr.splitlines()[-1]


# --- HTTPS ended at the proxy (production) ------------------------------------------

# The production environment the docs give: a proxy that ends TLS and sets
# X-Forwarded-Proto, PostgreSQL and Redis, Kentik's credentials.
DOCUMENTED_PRODUCTION = {
    "SECRET_KEY": "k7#Qv2!mZp9@Lw4$Rt6^Yx8&Nb3*Hc5(Jd1)Fg0_Ts-e8Ua4%Wo2=Ki7+Xs9",
    "ALLOWED_HOSTS": "cache.example.com",
    "CACHE_PATH": "/tmp/imagecache-check-deploy",
    "DATABASE_URL": "postgres://imagecache:secret@db.example.com:5432/imagecache",
    "REDIS_URL": "redis://redis.example.com:6379/0",
    "KT_AUTH_EMAIL": "ops@example.com",
    "KT_AUTH_TOKEN": "a-token",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
    "CSRF_TRUSTED_ORIGINS": "https://cache.example.com",
}
TLS_VARIABLES = frozenset(
    {"SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS", "SECURE_SSL_REDIRECT"}
)


def test_check_deploy_finds_nothing_to_warn_of_in_the_documented_production_setup():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k not in TLS_VARIABLES | SECRET_FILES},
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            **DOCUMENTED_PRODUCTION,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout, result.stdout


@pytest.mark.parametrize(
    "variable, value",
    [
        ("SESSION_COOKIE_SECURE", "ture"),
        ("CSRF_COOKIE_SECURE", "maybe"),
        ("SECURE_HSTS_SECONDS", "a year"),
        ("SECURE_HSTS_SECONDS", "-1"),
        ("SECURE_SSL_REDIRECT", "yes please"),
    ],
)
def test_a_wrong_https_setting_stops_production_naming_it(variable, value):
    result = start("config.settings.production", **PRODUCTION, **{variable: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert variable in result.stderr.splitlines()[-1]


def production_answers(env: dict[str, str], tmp_path, *requests: str) -> list[list[str]]:
    """For each `method path [https]`, the production profile's status and
    Location and Strict-Transport-Security headers, through Django's whole stack."""
    code = (
        "import json; from django.core.management import call_command;"
        " from django.test import Client; call_command('migrate', verbosity=0); c = Client();"
        f" asked = {list(requests)!r};"
        " rs = [c.generic(m, p, HTTP_HOST='cache.example.com', **({'HTTP_X_FORWARDED_PROTO':"
        " 'https'} if s else {})) for m, p, *s in (r.split() for r in asked)];"
        " print(json.dumps([[str(r.status_code), r.get('Location', ''),"
        " r.get('Strict-Transport-Security', '')] for r in rs]))"
    )
    result = setup_and_run(
        "config.settings.production",
        code,
        {**DOCUMENTED_PRODUCTION, "CACHE_PATH": str(tmp_path), **env},
        dropped=TLS_VARIABLES | SECRET_FILES | {"DATABASE_URL", "REDIS_URL"},
    )
    assert result.returncode == 0, result.stderr
    answers: list[list[str]] = json.loads(result.stdout.splitlines()[-1])
    return answers


def test_probes_and_the_scrape_are_answered_over_plain_http_behind_the_redirect(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    answers = production_answers(
        env, tmp_path, "GET /healthz", "GET /metrics", "GET /info", "GET /info https"
    )
    assert [status for status, _, _ in answers] == ["200", "200", "301", "200"], answers
    assert answers[2][1] == "https://cache.example.com/info"
    assert answers[3][2] == "max-age=3600"


def test_without_the_proxy_s_header_production_does_not_redirect(tmp_path):
    # Every request would look like plain HTTP: a redirect would never end.
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "SECURE_PROXY_SSL_HEADER": ""}
    assert production_answers(env, tmp_path, "GET /info")[0][0] == "200"


def test_chart_url_keys_come_from_their_file_the_first_signing(tmp_path):
    code = "from django.conf import settings; print(settings.CHART_URL_KEYS)"
    printed = with_secret_file(
        tmp_path, "CHART_URL_KEYS", "new-key-0123456789, old-key-0123456789", code
    )
    assert printed.strip() == "[b'new-key-0123456789', b'old-key-0123456789']"
