"""deploy/grafana: the dashboards are provisioned, and every panel query names a metric the code exports.

Exported names come from the metric definitions (`jivapay.utils.metrics`, with the suffixes Prometheus
adds) and the worker's scrape-time collector (`STATE_METRIC_NAMES`); the alert rules are held to the
same list.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from jivapay.utils import metrics
from jivapay.worker.metrics import STATE_METRIC_NAMES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
PROMETHEUS_OWN = {"up"}
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
_KEYWORDS |= {"bool", "offset", "inf", "nan"}


def exported_names() -> set[str]:
    names: set[str] = set(STATE_METRIC_NAMES) | PROMETHEUS_OWN
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            if family.type == "histogram":
                names |= {f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"}
            elif family.type == "counter":
                names.add(f"{family.name}_total")
            else:
                names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, ranges and groupings removed)."""
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    found = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        name = match.group(0)
        following = text[match.end() :].lstrip()
        if following.startswith("(") or name.lower() in _KEYWORDS:
            continue
        found.add(name)
    return found


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def test_the_three_dashboards_exist_and_are_provisioned() -> None:
    titles = {json.loads(p.read_text(encoding="utf-8"))["uid"] for p in DASHBOARDS}
    assert titles == {"jivapay-api", "jivapay-worker", "jivapay-money"}
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/dashboards.yml").read_text(encoding="utf-8")
    )
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if ":" in v)
    assert mounts["./grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


def test_metric_name_extraction() -> None:
    expr = 'sum by (server, le) (rate(http_request_duration_seconds_bucket{route!~"/ready"}[5m])) / on(x) up'
    assert metric_names(expr) == {"http_request_duration_seconds_bucket", "up"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_query_names_an_exported_metric(path: Path) -> None:
    exported = exported_names()
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    queries = 0
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: no metric in {target['expr']}"
            assert names <= exported, f"{panel['title']}: unknown {names - exported}"
            queries += 1
    for variable in dashboard["templating"]["list"]:
        match = re.search(r"label_values\((\w+)", variable.get("query", ""))
        assert match and match.group(1) in exported
    assert queries >= 8


def test_every_alert_expression_names_an_exported_metric() -> None:
    exported = exported_names()
    rules = yaml.safe_load((DEPLOY / "prometheus/rules/jivapay.yml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            assert names and names <= exported, f"{rule['alert']}: unknown {names - exported}"
