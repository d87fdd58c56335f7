"""What the tests of monitoring/ share: promtool (or a skip, and under CI a
failure), and the metric names the dashboard and the alerting rules read."""

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.service import ROOT

MONITORING = ROOT / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RULES = MONITORING / "alerts.yml"
RULE_TESTS = MONITORING / "alerts.test.yml"

METRIC_NAME = re.compile(r"\bimagecache_[a-z0-9_]+\b")
# Grafana's own variables, as Prometheus would see them once Grafana has
# filled them in.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": ".*"}
# A variable's `label_values(<series>, <label>)`: Grafana asks Prometheus for the series.
LABEL_VALUES = re.compile(r"^label_values\((.+),\s*\w+\)$")


def promtool() -> Path:
    """promtool's path; without it a skip, or under CI a failure."""
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is missing (apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run this test")
        pytest.skip(message)
    return Path(found)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL query of the dashboard: its panels' and its variables'."""
    queries = [target["expr"] for panel in panels(board) for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def as_prometheus_sees_it(query: str) -> str:
    query = LABEL_VALUES.sub(r"\1", query)
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    return query


def rule_queries() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def metric_names(queries: list[str]) -> set[str]:
    return {name for query in queries for name in METRIC_NAME.findall(query)}
