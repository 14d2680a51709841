"""Start a real ``retouch serve`` on 127.0.0.1 (a subprocess, as a user
starts it) and wait until it answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from orchestration.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ApiServer:
    url: str
    proc: subprocess.Popen
    log: Path

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 300), **kwargs)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def server_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETOUCH_", "AWS_"))}
    env.update({"RETOUCH_SETTINGS_FILE": "/nonexistent/retouch.env", "RETOUCH_DEVICE": "cpu",
                "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                # no broker or storage unless a test gives them: nothing may wait on them
                "RETOUCH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                "RETOUCH_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})
    env.update(extra or {})
    return env


def launch(log_dir: Path, *args: str, env: dict | None = None, timeout: float = 90) -> ApiServer:
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "serve", "--port", str(port), *args],
                            env=server_env(env), cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    server = ApiServer(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"retouch serve exited {proc.returncode}:\n{server.output()[-3000:]}")
        try:
            if httpx.get(server.url + "/healthz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise AssertionError(f"retouch serve did not answer /healthz in {timeout}s:\n{server.output()[-3000:]}")
