"""The Grafana dashboard (monitoring/grafana-dashboard.json) is one Grafana
imports: a Prometheus data source asked for at import, panels that each have
a place and queries, and queries that Prometheus parses (promtool reads them
as rules). tests/e2e/test_monitoring.py checks its metric names against the
real service."""

import subprocess

import pytest
import yaml

from tests.harness.monitoring import (
    as_prometheus_sees_it,
    dashboard,
    dashboard_queries,
    metric_names,
    panels,
    promtool,
)


def test_the_dashboard_asks_for_its_prometheus_data_source_at_import():
    board = dashboard()
    assert board["__inputs"] == [
        {
            "name": "DS_PROMETHEUS",
            "label": "Prometheus",
            "description": "",
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }
    ]
    assert board["uid"] == "kentik-image-cache"
    assert "id" not in board  # Grafana gives one at import
    for panel in panels(board):
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"], panel["title"]


def test_every_panel_has_an_id_a_place_and_queries():
    board = dashboard()
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    places = set()
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        places.add((grid["x"], grid["y"]))
        if panel["type"] != "row":
            assert panel["title"] and panel["description"], panel
            refs = [target["refId"] for target in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), panel["title"]
    assert len(places) == len(ids), "two panels in one place"


@pytest.mark.parametrize(
    "shown",
    [
        "imagecache_http_requests_total",
        "imagecache_cache_hits_total",
        "imagecache_cache_misses_total",
        "imagecache_shared_fetches_total",
        "imagecache_kentik_calls_total",
        "imagecache_kentik_attempts_total",
        "imagecache_kentik_budget_calls",
        "imagecache_kentik_budget_limit",
        "imagecache_kentik_pauses_total",
        "imagecache_kentik_paused_until_seconds",
        "imagecache_fetch_duration_seconds_bucket",
        "imagecache_waiters",
        "imagecache_stale_answers_total",
        "imagecache_refreshes_started_total",
        "imagecache_refreshes_used_total",
        "imagecache_negative_hits_total",
        "imagecache_stored_bytes",
    ],
)
def test_the_dashboard_shows(shown):
    assert shown in metric_names(dashboard_queries(dashboard()))


def test_every_query_of_the_dashboard_parses(tmp_path):
    tool = promtool()
    queries = [as_prometheus_sees_it(query) for query in dashboard_queries(dashboard())]
    assert not [query for query in queries if "$" in query], "a Grafana variable left"
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": query}
                    for i, query in enumerate(queries)
                ],
            }
        ]
    }
    rules_file = tmp_path / "dashboard-rules.yml"
    rules_file.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [str(tool), "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout
