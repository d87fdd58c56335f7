"""The alerting rules (monitoring/alerts.yml) under promtool: they load, and
each rule's unit tests (monitoring/alerts.test.yml) pass. Without promtool
(Debian's `prometheus` package) the tests are skipped; under CI they fail."""

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import monitoring
from tests.harness.monitoring import MONITORING, RULE_TESTS, RULES


@pytest.fixture(scope="module")
def promtool() -> Path:
    return monitoring.promtool()


def run(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], cwd=MONITORING, capture_output=True, text=True, timeout=120
    )


def alert_names(groups: list[dict[str, Any]]) -> set[str]:
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def test_the_alerting_rules_load(promtool):
    result = run(promtool, "check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_every_alerting_rule_passes_its_unit_tests(promtool):
    result = run(promtool, "test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_has_a_test_that_fires_it_and_one_that_does_not():
    rules = alert_names(yaml.safe_load(RULES.read_text())["groups"])
    assert rules == {
        "ImageCacheNoWorker",
        "ImageCacheKentikErrors",
        "ImageCacheKentikPaused",
        "ImageCacheStoreNearlyFull",
        "ImageCacheFetchStuck",
    }
    fired: set[str] = set()
    quiet: set[str] = set()
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    assert (fired, quiet) == (rules, rules)
