"""Real servers for the monitoring tests: redis-server and Prometheus, each on a
free loopback port with its own temporary storage, stopped at the end."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from promlib import PROMETHEUS, REDIS, free_port, start_prometheus, stop, wait_for


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
        stop(proc)


@pytest.fixture
def prometheus(tmp_path):
    """Factory: ``start(config_text)`` runs Prometheus on a free loopback port with
    tmp storage; returns a ``promlib.Prometheus``. Stopped at teardown."""
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (make system-deps)")
    started = []

    def start(config: str):
        prom = start_prometheus(tmp_path / f"prometheus-{len(started)}", config)
        started.append(prom)
        return prom

    yield start
    for prom in started:
        stop(prom.proc)
