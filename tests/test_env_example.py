""".env.example lists every setting the service reads, in the groups of the
configuration table (docs/configuration.md), and the two agree."""

import re

from tests.harness.service import ROOT
from tests.harness.variables import variables_the_service_reads

ENV_EXAMPLE = ROOT / ".env.example"
CONFIGURATION = ROOT / "docs" / "configuration.md"
_WSGI = "a key of a request's WSGI environ, which the reader of variables cannot tell apart"
# Read by the code, on purpose in neither: each with why.
NOT_SETTINGS = {
    "CONTENT_LENGTH": _WSGI,
    "HTTP_HOST": _WSGI,
    "HTTP_TRANSFER_ENCODING": _WSGI,
    "HTTP_X_FORWARDED_HOST": _WSGI,
    "PATH_INFO": _WSGI,
    "QUERY_STRING": _WSGI,
    "REQUEST_METHOD": _WSGI,
    "SCRIPT_NAME": _WSGI,
    "SERVER_NAME": _WSGI,
    "SERVER_PORT": _WSGI,
    "DJANGO_SETTINGS_MODULE": "the profile, which 'The profiles' describes; not a setting of one",
    "DJANGO_DEV_SECRET_KEY": "the local profile's own key, for development only",
    "DJANGO_DB_POOL": "internal: gunicorn's raw_env turns the pool on for web workers",
    "IMAGECACHE_METRICS_DIR_PREPARED": (
        "internal: `manage.py serve` tells gunicorn it made the directory"
    ),
    "IMAGECACHE_SUPERVISOR_PID": "internal: `manage.py serve` tells its children its pid",
    "PROMETHEUS_MULTIPROC_DIR": "internal: the service makes the metrics directory itself",
    "PYTHONUNBUFFERED": "set by the image for Python, not read as a setting",
    "RUN_AS": "the image's entry point's, documented with the image (docs/development.md)",
    "SIMULATOR_DELAY": "the bundled Kentik simulator's, for tests and `make run`",
}


def env_example_groups() -> dict[str, list[str]]:
    """.env.example's variables by group (a `## Title` line starts one)."""
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.startswith("## "):
            current = groups.setdefault(line[3:].strip(), [])
        elif match := re.match(r"#?([A-Z][A-Z0-9_]*)=", line):
            assert current is not None, f"{match[1]} comes before any group"
            current.append(match[1])
    return groups


def configuration_groups() -> dict[str, list[str]]:
    """The configuration table's variables by group (a `### Title` in Settings)."""
    section = CONFIGURATION.read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    groups: dict[str, list[str]] = {}
    for part in section.split("\n### ")[1:]:
        title, body = part.split("\n", 1)
        groups[title.strip()] = [
            name
            for row in body.splitlines()
            if row.startswith("| `")
            for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row.split("|")[1])
        ]
    return groups


def test_env_example_and_the_configuration_table_list_the_same_settings_in_the_same_groups():
    assert env_example_groups() == configuration_groups()


def test_every_setting_the_service_reads_is_in_the_configuration_table():
    listed = {name for names in configuration_groups().values() for name in names}
    read = variables_the_service_reads() - NOT_SETTINGS.keys()
    assert sorted(read - listed) == [], "read by the service, missing from the docs"
    assert sorted(listed - read) == [], "in the docs, read by nothing"


def test_every_variable_left_out_is_one_the_service_reads():
    assert sorted(NOT_SETTINGS.keys() - variables_the_service_reads()) == []


def test_the_groups_parse_as_written(tmp_path, monkeypatch):
    env = tmp_path / ".env.example"
    env.write_text(
        "# intro\n\n## Kentik\n#KT_AUTH_TOKEN=x\nKENTIK_API_URL=y\n\n## Logs\n#LOG_LEVEL=\n"
    )
    monkeypatch.setitem(globals(), "ENV_EXAMPLE", env)
    assert env_example_groups() == {
        "Kentik": ["KT_AUTH_TOKEN", "KENTIK_API_URL"],
        "Logs": ["LOG_LEVEL"],
    }
