"""Real servers for the monitoring tests: redis-server and Prometheus, each on a
free loopback port with its own temporary storage, stopped at the end."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"


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


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def redis_url(tmp_path):
    """A fresh redis-server (no persistence) on a free loopback port."""
    if not Path(REDIS).exists():
        pytest.skip("redis-server is not installed (make system-deps)")
    import redis

    port = free_port()
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: redis.Redis.from_url(url).ping(), 10, "redis-server")
        yield url
    finally:
        _stop(proc)


class Prometheus:
    """A running Prometheus and its HTTP API."""

    def __init__(self, url: str, proc: subprocess.Popen, log: Path):
        self.url, self.proc, self.log = url, proc, log

    def api(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else ""),
                                    timeout=10) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list:
        """Instant query; the result vector (raises on a PromQL error, naming it)."""
        try:
            return self.api("query", query=expr)["result"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"PromQL error in {expr!r}: {exc.read().decode()}") from None

    def targets_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)


@pytest.fixture
def prometheus(tmp_path):
    """Factory: ``start(config_text)`` runs Prometheus on a free loopback port with
    tmp storage; returns a :class:`Prometheus`. Stopped at teardown."""
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (make system-deps)")
    procs = []

    def start(config: str) -> Prometheus:
        port = free_port()
        cfg = tmp_path / f"prometheus-{port}.yml"
        cfg.write_text(config)
        log = tmp_path / f"prometheus-{port}.log"
        proc = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / f'tsdb-{port}'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=tmp_path)
        procs.append(proc)
        prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
        try:
            wait_for(lambda: urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2).status == 200, 30,
                     "Prometheus ready")
        except TimeoutError:
            raise AssertionError(f"Prometheus did not start: {log.read_text()[-2000:]}") from None
        return prom

    yield start
    for proc in procs:
        _stop(proc)
