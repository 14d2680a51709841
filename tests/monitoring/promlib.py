"""Running a real Prometheus against retouch endpoints and checking every
dashboard query and rule through its HTTP API (shared by tests/monitoring and
tests/cluster/test_prometheus.py)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "monitoring"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"

# Grafana macros in the dashboard, replaced by fixed windows long enough to
# cover a whole test run (a run takes well under 5 minutes).
MACROS = {"$__rate_interval": "5m", "$__interval": "5m", "$__range": "10m"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns a truthy value; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last})" if last else ""))


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def scrape_config(targets: dict[str, str], interval: str = "1s") -> str:
    """deploy/monitoring/prometheus.yml with its rules, pointed at ``targets``
    ({job_name: "host:port"}) and scraping/evaluating every ``interval``. Jobs
    not in ``targets`` are dropped; an unknown job name is an error."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=interval, evaluation_interval=interval, scrape_timeout=interval)
    config["rule_files"] = [str(DEPLOY / f) for f in config["rule_files"]]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    unknown = set(targets) - set(jobs)
    if unknown:
        raise KeyError(f"deploy/monitoring/prometheus.yml has no scrape job {sorted(unknown)}")
    config["scrape_configs"] = []
    for name, target in targets.items():
        job = jobs[name]
        job["static_configs"] = [{"targets": [target]}]
        config["scrape_configs"].append(job)
    return yaml.safe_dump(config)


class Prometheus:
    """A running Prometheus and its HTTP API."""

    def __init__(self, url: str, proc: subprocess.Popen, log: Path):
        self.url, self.proc, self.log = url, proc, log

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else ""),
                                        timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"Prometheus {path} {params}: {exc.read().decode()}") from None
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list:
        """Instant query (at unix time ``at``, default now): the result vector.
        Raises AssertionError with Prometheus' message on a PromQL error."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        return self.api("query", **params)["result"]

    def value(self, expr: str, at: float | None = None) -> float | None:
        result = self.query(expr, at)
        return float(result[0]["value"][1]) if result else None

    def targets_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)


def start_prometheus(workdir: Path, config: str) -> Prometheus:
    """Prometheus on a free loopback port, storage under ``workdir``; caller stops ``.proc``."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "prometheus.yml"
    cfg.write_text(config)
    log = workdir / "prometheus.log"
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=workdir)
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_for(lambda: urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2).status == 200, 30,
                 "Prometheus ready")
    except TimeoutError:
        stop(proc)
        raise AssertionError(f"Prometheus did not start: {log.read_text()[-2000:]}") from None
    return prom


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana macros replaced) for every dashboard target."""
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for macro, window in MACROS.items():
                expr = expr.replace(macro, window)
            assert "$" not in expr, f"panel {panel['title']!r}: unknown Grafana variable in {expr!r}"
            out.append((panel["title"], expr))
    return out


def rules() -> list[dict]:
    return [r for g in yaml.safe_load((DEPLOY / "rules.yml").read_text())["groups"] for r in g["rules"]]


def series_in(expr: str) -> set[str]:
    """Metric names (exported or recorded) an expression reads."""
    return set(re.findall(r"\b(retouch_[a-z0-9_]+|retouch:[a-z0-9_:]+|up)\b(?!\s*\()", expr))


def check_everything(prom: Prometheus, at: float, may_be_empty: dict[str, str]) -> dict[str, list]:
    """Run every dashboard query and every rule expression at time ``at``.

    Every query must be valid PromQL (Prometheus answers success). Every
    dashboard query and every recording rule must return data, unless it reads
    a series named in ``may_be_empty`` ({series: why it cannot exist here}).
    Alert expressions compare a recorded signal with a threshold and are
    normally empty when healthy: they must be valid, and the signals they
    compare are checked as recording rules above. Every rule must have been
    evaluated by Prometheus without error. Returns {expr: result} for further
    assertions; raises AssertionError listing every problem at once."""
    problems, results = [], {}
    checks = [(f"panel {title!r}", expr, True) for title, expr in dashboard_queries()]
    for rule in rules():
        if "record" in rule:
            checks.append((f"recording rule {rule['record']}", rule["expr"], True))
            checks.append((f"recorded series {rule['record']}", rule["record"], True))
        else:
            checks.append((f"alert {rule['alert']}", rule["expr"], False))
    for what, expr, needs_data in checks:
        try:
            result = prom.query(expr, at)
        except AssertionError as exc:
            problems.append(f"{what}: {exc}")
            continue
        results[expr] = result
        excused = series_in(expr) & set(may_be_empty)
        if needs_data and not result and not excused:
            problems.append(f"{what}: no data for {expr!r}")
    for group in prom.api("rules")["groups"]:
        for rule in group["rules"]:
            if rule.get("health") != "ok" or rule.get("lastError"):
                problems.append(f"rule {rule.get('name')}: health {rule.get('health')} {rule.get('lastError', '')}")
    assert not problems, "\n".join(problems)
    return results
