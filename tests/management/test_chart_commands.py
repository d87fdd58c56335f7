"""manage.py charts_load, charts_dump and chart_url: files in YAML and JSON,
a bad file refused whole, --prune, a dump that loads back as a no-op, and
printed URLs that verify (signed) or say they are not."""

import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import time_machine
import yaml
from django.core.management import CommandError, call_command

from imagecache import signing
from imagecache.errors import SignatureRefused
from imagecache.management.commands.chart_url import expires_parse
from imagecache.models import Chart
from imagecache.services import chart_definitions
from tests.harness.data import NOW

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("frozen")]

KEYS = [b"the newest key, sixteen+", b"the older key, sixteen++"]
QUERY = {"queries": [{"query": {"metric": "bytes", "device_name": "{{device}}"}}]}
PARAMS = [{"name": "device", "kind": "string", "pattern": "[a-z0-9]+", "default": "edge01"}]
YAML = """\
charts:
  - slug: edge-traffic
    title: "Edge traffic: <b>bytes</b>"
    max_age: 120
    query:
      queries:
        - query: {metric: bytes, device_name: "{{device}}"}
    params:
      - {name: device, kind: string, pattern: "[a-z0-9]+", default: edge01}
"""


@pytest.fixture
def frozen() -> Any:
    with time_machine.travel(NOW, tick=False):
        yield


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def charts_json(*slugs: str) -> str:
    return json.dumps(
        {"charts": [{"slug": s, "title": s.title(), "query": {"q": 1}} for s in slugs]}
    )


def test_load_reads_yaml_and_json_and_loading_twice_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "edge.yaml").write_text(YAML)
    (tmp_path / "more.json").write_text(charts_json("core", "site-a"))
    files = [str(tmp_path / "edge.yaml"), str(tmp_path / "more.json")]
    out, _ = run("charts_load", *files)
    assert out == "Loaded 2 files: 3 created, 0 updated, 0 unchanged, 0 deleted\n"
    edge = Chart.objects.get(slug="edge-traffic")
    assert (edge.title, edge.max_age, edge.query, edge.params) == (
        "Edge traffic: <b>bytes</b>",
        120,
        QUERY,
        PARAMS,
    )
    out, _ = run("charts_load", *files)
    assert out == "Loaded 2 files: 0 created, 0 updated, 3 unchanged, 0 deleted\n"


def test_a_file_without_extension_is_read_by_its_content(tmp_path: Path) -> None:
    (tmp_path / "charts").write_text(charts_json("core"))
    (tmp_path / "more").write_text(YAML)
    run("charts_load", str(tmp_path / "charts"), str(tmp_path / "more"))
    assert list(Chart.objects.values_list("slug", flat=True)) == ["core", "edge-traffic"]


def test_prune_deletes_what_no_file_names(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(charts_json("core", "old"))
    run("charts_load", str(tmp_path / "a.json"))
    (tmp_path / "a.json").write_text(charts_json("core"))
    out, _ = run("charts_load", "--prune", str(tmp_path / "a.json"))
    assert out == "Loaded 1 files: 0 created, 0 updated, 1 unchanged, 1 deleted\n"
    assert list(Chart.objects.values_list("slug", flat=True)) == ["core"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (YAML.replace("pattern: ", "patern: "), "bad.yaml, chart edge-traffic, params[0].patern:"),
        (YAML.replace("max_age: 120", "max_age: soon"), "bad.yaml, chart edge-traffic, max_age:"),
        (YAML.replace("slug: edge-traffic", "slug: Edge Traffic"), "bad.yaml, chart #1, slug:"),
        ("charts: [unclosed", "bad.yaml: is not YAML"),
        (
            YAML.replace("metric: bytes", "metric: 2024-01-01"),
            "bad.yaml, chart edge-traffic, query:",
        ),
    ],
)
def test_a_bad_file_is_refused_whole_and_nothing_is_loaded(
    tmp_path: Path, text: str, expected: str
) -> None:
    (tmp_path / "good.json").write_text(charts_json("core"))
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(CommandError) as refused:
        run("charts_load", "--prune", str(tmp_path / "good.json"), str(tmp_path / "bad.yaml"))
    assert expected in str(refused.value)
    assert str(refused.value).endswith("nothing loaded")
    assert not Chart.objects.exists()


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"missing\.yaml: cannot be read"):
        run("charts_load", str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize("form", ["yaml", "json"])
def test_a_dump_loads_back_as_a_no_op(tmp_path: Path, form: str) -> None:
    (tmp_path / "edge.yaml").write_text(YAML)
    (tmp_path / "more.json").write_text(charts_json("core"))
    run("charts_load", str(tmp_path / "edge.yaml"), str(tmp_path / "more.json"))
    out, err = run("charts_dump", "--format", form)
    assert err == "Dumped 2 charts\n"
    dumped = json.loads(out) if form == "json" else yaml.safe_load(out)
    assert dumped == chart_definitions.charts_dump()
    (tmp_path / f"dump.{form}").write_text(out)
    out, _ = run("charts_load", "--prune", str(tmp_path / f"dump.{form}"))
    assert out == "Loaded 1 files: 0 created, 0 updated, 2 unchanged, 0 deleted\n"


@pytest.fixture
def edge() -> Chart:
    chart, _ = chart_definitions.chart_save(
        slug="edge-traffic", title="Edge", query=QUERY, params=PARAMS
    )
    return chart


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def test_chart_url_prints_a_signed_url_that_verifies_until_it_expires(
    settings: Any, edge: Chart
) -> None:
    settings.CHART_URL_KEYS = KEYS
    settings.PUBLIC_URL = "https://charts.example.com/cache"
    out, err = run(
        "chart_url",
        "edge-traffic",
        "--param",
        "device=core7",
        "--format",
        "svg",
        "--expires",
        "10m",
    )
    url = out.strip()
    assert err == ""
    assert url.startswith("https://charts.example.com/cache/charts/edge-traffic.svg?")
    params = query_of(url)
    assert params["device"] == "core7"
    assert params["exp"] == str(int(NOW.timestamp()) + 600)
    path = urlsplit(url).path.removeprefix("/cache")
    signing.url_verify(keys=KEYS[1:] + KEYS[:1], path=path, params=params, now=NOW.timestamp())
    with pytest.raises(SignatureRefused, match="expired"):
        signing.url_verify(keys=KEYS, path=path, params=params, now=NOW.timestamp() + 600)
    with pytest.raises(SignatureRefused, match="does not match"):
        signing.url_verify(
            keys=KEYS, path=path, params={**params, "device": "core8"}, now=NOW.timestamp()
        )


def test_chart_url_without_keys_is_unsigned_and_says_so(settings: Any, edge: Chart) -> None:
    settings.CHART_URL_KEYS = []
    settings.PUBLIC_URL = "http://cache.example.com"
    out, err = run("chart_url", "edge-traffic")
    assert out == "http://cache.example.com/charts/edge-traffic.png\n"
    assert "not signed" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nothing-here"], "No such chart"),
        (["edge-traffic", "--param", "device=EDGE 1"], "device: does not match"),
        (["edge-traffic", "--param", "site=x"], "site: is not a parameter"),
        (["edge-traffic", "--param", "device"], "NAME=VALUE"),
        (["edge-traffic", "--expires", "1w"], "not a duration"),
    ],
)
def test_chart_url_refuses_what_would_not_work(edge: Chart, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("chart_url", *args)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("10m", 600), ("12h", 43200), ("7d", 604800)]
)
def test_expires_reads_seconds_minutes_hours_and_days(text: str, seconds: int) -> None:
    assert expires_parse(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "10", "m", "-5m", "1.5h", "10 m"])
def test_expires_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        expires_parse(text)
