#!/usr/bin/env python3
"""Writes base/prometheusrule.yaml, the Prometheus Operator's PrometheusRule,
from monitoring/alerts.yml: the same groups, so that the rules Kubernetes
loads are the ones promtool tests. tests/test_kubernetes.py fails when the
two differ.

Usage: .venv/bin/python deploy/kubernetes/prometheus_rule.py
"""

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
ALERTS = ROOT / "monitoring" / "alerts.yml"
PROMETHEUS_RULE = ROOT / "deploy" / "kubernetes" / "base" / "prometheusrule.yaml"
HEADER = (
    "# Generated from monitoring/alerts.yml by deploy/kubernetes/prometheus_rule.py:\n"
    "# edit alerts.yml (and its tests in alerts.test.yml), then run that script.\n"
)


def prometheus_rule() -> dict[str, Any]:
    """The PrometheusRule whose spec is alerts.yml."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "kentik-image-cache"},
        "spec": yaml.safe_load(ALERTS.read_text()),
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the longer expressions) as blocks, as alerts.yml has them."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def main() -> None:
    text = yaml.dump(prometheus_rule(), Dumper=_Dumper, sort_keys=False, width=100)
    PROMETHEUS_RULE.write_text(HEADER + text)


if __name__ == "__main__":
    main()
