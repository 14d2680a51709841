"""deploy/monitoring: promtool accepts the scrape config and the rules, the
rule unit tests pass (each alert fires on its failure and stays quiet when
healthy), and every metric the dashboard and rules name is one we export."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from monitoring.metrics import Metrics
from promlib import DEPLOY, PROMTOOL

pytestmark = pytest.mark.prometheus

# Series that the live collectors (monitoring.collectors) add at scrape time.
COLLECTOR_SERIES = {"retouch_queue_depth", "retouch_broker_up", "retouch_worker_up", "retouch_worker_processes",
                    "retouch_jobs_active", "retouch_job_images", "retouch_schedule_period_seconds",
                    "retouch_schedule_created_timestamp_seconds", "retouch_schedule_last_run_timestamp_seconds",
                    "retouch_schedule_last_run_result", "retouch_stale_outputs"}
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}


def promtool(*args: str) -> subprocess.CompletedProcess:
    if not Path(PROMTOOL).exists():
        pytest.skip("promtool is not installed (make system-deps)")
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=DEPLOY)


def test_promtool_checks_config_and_rules():
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert "SUCCESS" in config.stdout
    rules = promtool("check", "rules", "rules.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_promtool_rejects_a_broken_rule(tmp_path):
    """Control: the check above is not vacuous."""
    broken = yaml.safe_load((DEPLOY / "rules.yml").read_text())
    broken["groups"][0]["rules"][0]["expr"] = "sum by (queue (retouch_queue_depth)"
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(broken))
    assert promtool("check", "rules", str(path)).returncode != 0


def test_alert_rules_fire_on_failures_and_not_when_healthy():
    result = promtool("test", "rules", "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "rules_test.yml").read_text()))
    alerts = {r["alert"] for g in yaml.safe_load((DEPLOY / "rules.yml").read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    assert alerts <= tested, f"alerts without a unit test: {alerts - tested}"


def exported_series() -> set[str]:
    names = set(COLLECTOR_SERIES)
    for fam in Metrics(CollectorRegistry()).registry.collect():
        names.update(fam.name + s for s in SUFFIXES.get(fam.type, [""]))
    return names


def referenced(expr: str) -> set[str]:
    return set(re.findall(r"\b(retouch_[a-z0-9_]+|retouch:[a-z0-9_:]+)", expr))


def test_dashboard_and_rules_name_only_exported_series():
    rules = [r for g in yaml.safe_load((DEPLOY / "rules.yml").read_text())["groups"] for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    exprs = [r["expr"] for r in rules]
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p["targets"]]
    known = exported_series() | recorded
    unknown = {name for e in exprs for name in referenced(e)} - known
    assert not unknown, f"dashboard/rules name series nobody exports: {sorted(unknown)}"
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for needed in ["confidence", "coverage", "p50", "p95", "selections", "throughput", "failures", "queue depth",
                   "gpu memory", "stale outputs by cause", "schedules: last run"]:
        assert needed in titles, needed
