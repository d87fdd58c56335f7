"""The dashboard and the alerting rules read only metrics the real service
exports: `manage.py serve` against the simulator, scraped once a fetch has
run (labelled series appear only once counted)."""

from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.data import unique_query
from tests.harness.monitoring import dashboard, dashboard_queries, metric_names, rule_queries
from tests.harness.service import Service, wait_for

pytestmark = pytest.mark.e2e

# Counted by the queue worker once its fetch is done, maybe after the GET was answered.
COUNTED_BY_THE_FETCH = {"imagecache_kentik_calls_total", "imagecache_fetch_duration_seconds_bucket"}


def exported(service: Service) -> set[str]:
    """The names /metrics has samples of: each sample's (`..._total`,
    `..._bucket`) and its family's."""
    response = requests.get(f"{service.url}/metrics", timeout=10)
    assert response.status_code == 200
    names: set[str] = set()
    for family in text_string_to_metric_families(response.text):
        if family.samples:
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture(scope="module")
def after_a_fetch(service: Service) -> set[str]:
    entry_id = service.post(unique_query("monitoring"), ttl=600)
    assert service.get_image(entry_id).status_code == 200
    names: set[str] = wait_for(
        lambda: (names := exported(service)) >= COUNTED_BY_THE_FETCH and names, timeout=30
    )
    return names


def test_the_dashboard_names_only_metrics_the_service_exports(after_a_fetch: Any) -> None:
    names = metric_names(dashboard_queries(dashboard()))
    assert len(names) > 20
    gone = sorted(names - after_a_fetch)
    assert not gone, f"the dashboard names metrics /metrics does not have: {gone}"


def test_the_alerting_rules_name_only_metrics_the_service_exports(after_a_fetch: Any) -> None:
    names = metric_names(rule_queries())
    assert len(names) >= 5
    gone = sorted(names - after_a_fetch)
    assert not gone, f"the alerting rules name metrics /metrics does not have: {gone}"
