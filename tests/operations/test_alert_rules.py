"""The Prometheus alert rules (deploy/prometheus/alerts.yml): valid to Prometheus's own promtool,
firing and staying quiet where tests/operations/prometheus/alerts_test.yml says, saying how
long, how bad and where to read, and naming only figures the service's /metrics exposes.

promtool comes with Debian's `prometheus` package (.ci/run installs it): in CI a missing
promtool fails these tests; elsewhere they skip."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from service.config import PROJECT_ROOT

RULES = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = Path(__file__).parent / "prometheus" / "alerts_test.yml"
ALERTS = {
    "AnjeonAlertsOverdue",
    "AnjeonNotifierCircuitOpen",
    "AnjeonNoDispatcherAlive",
    "AnjeonDatabaseUnreachable",
    "AnjeonRateLimitStorageDown",
    "AnjeonCodesHeldForEveryone",
    "AnjeonStaffKeysExpiring",
    "AnjeonFeedFailing",
    "AnjeonFeedStale",
    "AnjeonFeedItemsRejected",
    "AnjeonFeedAdvisoriesUnlisted",
    "AnjeonAlertsUnreadable",
    "AnjeonAlertsUnprepared",
}
# The operator's pages in docs/faults.md, and what each alert sends the operator to.
RUNBOOK = {
    "AnjeonAlertsOverdue": {"#circuit-breaker", "#dispatcher-heartbeat"},
    "AnjeonNotifierCircuitOpen": {"#circuit-breaker"},
    "AnjeonNoDispatcherAlive": {"#dispatcher-heartbeat"},
    "AnjeonDatabaseUnreachable": {"#database-outage"},
    "AnjeonRateLimitStorageDown": {"#rate-limit-storage-down"},
    "AnjeonCodesHeldForEveryone": set(),  # an abuse or a crowd: docs/alerting.md says what to do
    "AnjeonStaffKeysExpiring": set(),  # not a fault: docs/alerting.md says what to do
    "AnjeonFeedFailing": set(),  # the upstream's: docs/alerting.md says what to do
    "AnjeonFeedStale": set(),  # the upstream's too
    "AnjeonFeedItemsRejected": set(),  # staff's: docs/alerting.md says what to do
    "AnjeonFeedAdvisoriesUnlisted": set(),  # staff's too
    "AnjeonAlertsUnreadable": set(),  # the operator's keys: docs/alerting.md says what to do
    "AnjeonAlertsUnprepared": set(),  # a fault in the service: docs/alerting.md says what to do
}
_METRIC = re.compile(r"\banjeon_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("promtool not found: CI must install Debian's prometheus package (.ci/run)")
    pytest.skip("promtool not found (apt-get install prometheus); CI runs these tests")


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT
    )


def rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_rules(promtool):
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_the_rules_fire_and_stay_quiet_as_their_unit_tests_say(promtool):
    result = run(promtool, "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_each_alert_is_tested_firing_and_quiet():
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert firing == ALERTS
    assert quiet == ALERTS


def test_each_alert_says_how_long_how_bad_and_where_to_read():
    assert {rule["alert"] for rule in rules()} == ALERTS
    for rule in rules():
        name = rule["alert"]
        assert re.fullmatch(r"[1-9][0-9]*[ms]", rule["for"]), name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        anchors = set(re.findall(r"docs/faults\.md(#[a-z-]+)", annotations["description"]))
        assert anchors == RUNBOOK[name], name
        assert "docs/alerting.md" in annotations["description"], name


def exposed(body: str) -> set[str]:
    """Metric names in a Prometheus text exposition: declared families and sample names."""
    names = set()
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_every_metric_in_the_rules_is_one_the_service_exposes(client):
    used = {
        metric
        for rule in rules()
        for text in (rule["expr"], *rule["annotations"].values())
        for metric in _METRIC.findall(text)
    }
    assert {"anjeon_alert_overdue_seconds", "anjeon_dispatchers_alive"} <= used
    response = client.get("/metrics")
    assert response.status_code == 200
    missing = used - exposed(response.text)
    assert not missing, f"alerts.yml names figures /metrics does not expose: {sorted(missing)}"
