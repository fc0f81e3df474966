"""deploy/prometheus: promtool validates the scrape config and the rules, and the rules' unit tests
(deploy/prometheus/tests/) show every alert firing on a bad series and staying quiet on a healthy one.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian: apt-get install prometheus; .ci/run installs it)",
)


def _promtool(*args: str) -> str:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@needs_promtool
def test_scrape_config_is_valid() -> None:
    assert "SUCCESS" in _promtool("check", "config", "prometheus.yml")


@needs_promtool
def test_rules_are_valid() -> None:
    out = _promtool(
        "check", "rules", *sorted(f"rules/{p.name}" for p in (PROMETHEUS / "rules").glob("*.yml"))
    )
    assert "SUCCESS" in out


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    assert "SUCCESS" in _promtool("test", "rules", "tests/jivapay_test.yml")


def _alerts() -> set[str]:
    rules = yaml.safe_load((PROMETHEUS / "rules" / "jivapay.yml").read_text(encoding="utf-8"))
    return {
        rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule
    }


def test_every_alert_the_issue_asks_for_exists_and_is_unit_tested() -> None:
    alerts = _alerts()
    wanted = {
        "JivaPayHigh5xxRatio",
        "JivaPayHighP99Latency",
        "JivaPayNotReady",
        "JivaPayBeatHeartbeatStale",
        "JivaPayQueueBacklog",
        "JivaPayCallbackFailureRate",
        "JivaPayReconciliationDiscrepancy",
        "JivaPayRateLimitStorageErrors",
        "JivaPayExchangeRatesStale",
        "JivaPayOrdersStuckInNew",
    }
    assert wanted <= alerts
    tests = yaml.safe_load((PROMETHEUS / "tests" / "jivapay_test.yml").read_text(encoding="utf-8"))
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts == fired, f"alerts without a firing unit test: {alerts - fired}"


def test_scrape_jobs_cover_servers_and_workers() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api_names = {name for sd in jobs["api"]["dns_sd_configs"] for name in sd["names"]}
    assert api_names == {"gateway", "merchant", "trader", "admin", "support", "teamlead"}
    assert jobs["worker"]["dns_sd_configs"][0]["port"] == 9100
