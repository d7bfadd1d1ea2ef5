"""The Grafana dashboard asks only for metrics fleetwatch serves; the dataflow graph in
docs/operations.md is the one bytewax.visualize draws from the alerts flow as built."""

from __future__ import annotations

import json
import re

from bytewax.testing import TestingSink, TestingSource
from bytewax.visualize import to_mermaid
from prometheus_client import REGISTRY

import runtime.metrics  # noqa: F401  (registers the metrics)
from dataflows.alerts import build_flow
from domain.rules import RuleConfig
from runtime.settings import Topics
from tests.kube import K8S, ROOT


def served_names() -> set[str]:
    """Series names as exposed: counters get ``_total``, gauges keep their name."""
    return {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in REGISTRY.collect()
        if family.name.startswith("fleetwatch_")
    }


def test_every_dashboard_query_uses_served_metrics() -> None:
    dashboard = json.loads((K8S / "grafana" / "fleetwatch-dashboard.json").read_text())
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"fleetwatch_[a-z_]+", target["expr"])
    }
    assert len(asked) >= 7
    assert asked <= served_names()


def test_the_operations_page_shows_the_alerts_graph_as_bytewax_draws_it() -> None:
    topics = Topics()
    flow = build_flow(TestingSource([]), TestingSink([]), topics, RuleConfig())
    assert to_mermaid(flow).strip() in (ROOT / "docs" / "operations.md").read_text()
