"""Faults on a running job: killed workers, a Redis restart, an S3 outage.

Starts its own redis-server (append-only file) and weed mini on loopback
ports, a versioned bucket, and ``--workers`` ``retouch worker --cpu``
processes, all with the default settings. It runs the job once without
faults (the fault-free time), then again into another prefix while it
SIGKILLs ``--kills`` worker process trees (the Celery child and anything
under it; its supervisor restarts it) at varied moments: in the middle of a
stage, right after a task ended (its acknowledgement may still be on its
way), and in the middle of a ``finish``; kills Redis (SIGKILL) and starts it
again on the same port and data folder; and stops S3 for ``--s3-outage``
seconds, starting it again on the same ports and data folder.

It prints the fault-free and faulted times, each kill's redelivery delay
(from the SIGKILL to the held task starting again on a worker, seen in its
delivery count), and checks, against ground truth: every image done exactly
once (``retouch status``, the manifest lines and summary.json agree: all ok),
each output has exactly one S3 version (the conditional writes' proof of
"written once"), outputs byte-identical to ``retouch run``, and the job
finished within 2x the fault-free time plus the outage. Then it restarts a
Redis that does NOT persist under a running job and shows how that is
reported (``retouch status`` and the worker's log), never silently. Exit
status 1 if any check fails.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from orchestration.bench.cluster import make_images
from orchestration.bench.pipeline import machine
from orchestration.cluster import Server, start_redis, start_s3, wait_for

log = logging.getLogger(__name__)

BUCKET = "chaos"
KINDS = ["mid-task", "task-end", "mid-task", "finish", "mid-task", "task-end", "mid-task", "finish", "mid-task",
         "task-end"]


def add_arguments(parser) -> None:
    parser.add_argument("--images", type=int, default=24, help="images (default 24)")
    parser.add_argument("--size", type=int, default=1024, help="image side in px (default 1024, ~1 MP)")
    parser.add_argument("--workers", type=int, default=2, help="`retouch worker --cpu` processes (default 2)")
    parser.add_argument("--kills", type=int, default=10, help="worker process trees SIGKILLed (default 10)")
    parser.add_argument("--s3-outage", type=float, default=15.0, help="seconds S3 is stopped (default 15)")
    parser.add_argument("--redis-down", type=float, default=1.0, help="seconds Redis stays dead (default 1)")
    parser.add_argument("--ops", default="remove-text", help="ops (default remove-text)")
    parser.add_argument("--inpaint", default="auto", help="inpaint variant (default auto)")
    parser.add_argument("--seed", type=int, default=0, help="images and fault timing (default 0)")
    parser.add_argument("--no-volatile-check", action="store_true",
                        help="skip the restart of a Redis without persistence")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")


# --- the cluster under test ------------------------------------------------

@dataclass
class Kill:
    n: int
    kind: str
    at: float                 # seconds since the faulted submit
    victim: str               # the worker process's Celery hostname
    doing: str                # what it was doing when killed
    held: dict[str, int]      # task id -> its delivery count at the kill
    killed_at: float = 0.0    # monotonic
    restored: list[str] = field(default_factory=list)   # ids its supervisor put back (from its log)
    redelivered_after: float | None = None


class Chaos:
    def __init__(self, root: Path, seed: int):
        self.root = root
        self.rng = random.Random(seed)
        self.access, self.secret = "chaos" + secrets.token_hex(4), secrets.token_urlsafe(18)
        self.redis_dir = root / "redis"
        self.redis_srv: Server = start_redis(self.redis_dir)
        self.redis_port = int(self.redis_srv.url.rsplit(":", 1)[1].split("/")[0])
        self.s3_srv: Server = start_s3(root / "s3", access_key=self.access, secret_key=self.secret)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RETOUCH_", "AWS_"))}
        self.env.update({"RETOUCH_REDIS_URL": self.redis_srv.url, "RETOUCH_S3_ENDPOINT_URL": self.s3_srv.url,
                         "AWS_ACCESS_KEY_ID": self.access, "AWS_SECRET_ACCESS_KEY": self.secret,
                         "RETOUCH_DEVICE": "cpu", "RETOUCH_SETTINGS_FILE": str(root / "none.env"),
                         "RETOUCH_STATE_DIR": str(root / "state")})
        if os.environ.get("RETOUCH_MODEL_DIR"):
            self.env["RETOUCH_MODEL_DIR"] = os.environ["RETOUCH_MODEL_DIR"]
        self.r = redis.Redis.from_url(self.redis_srv.url, socket_timeout=5, socket_connect_timeout=2)
        self.workers: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        import boto3
        from botocore.config import Config

        self.s3 = boto3.client("s3", endpoint_url=self.s3_srv.url, region_name="us-east-1",
                               aws_access_key_id=self.access, aws_secret_access_key=self.secret,
                               config=Config(s3={"addressing_style": "path"},
                                             request_checksum_calculation="when_required",
                                             response_checksum_validation="when_required",
                                             retries={"max_attempts": 10, "mode": "standard"}))

    # servers
    def notify(self) -> None:
        """Keyspace events for string keys (the drill's triggers; its own Redis only)."""
        self.r.config_set("notify-keyspace-events", "K$")

    def restart_redis(self, down: float) -> float:
        """SIGKILL Redis, wait ``down`` s, start it on the same port and folder; seconds unreachable."""
        start = time.monotonic()
        self.redis_srv.proc.send_signal(signal.SIGKILL)
        self.redis_srv.proc.wait(timeout=10)
        time.sleep(down)
        self.redis_srv = start_redis(self.redis_dir, self.redis_port)
        self.notify()
        return time.monotonic() - start

    def s3_outage(self, seconds: float) -> dict:
        """Stop weed mini, wait, start it on the same ports and folder."""
        start = time.monotonic()
        ports, data_dir = self.s3_srv.ports, self.s3_srv.log_file.parent
        self.s3_srv.stop(timeout=5)
        stopped = time.monotonic()
        time.sleep(max(0.0, seconds - (stopped - start)))
        self.s3_srv = start_s3(data_dir, access_key=self.access, secret_key=self.secret, ports=ports)
        wait_for(lambda: self.s3.head_bucket(Bucket=BUCKET) or True, 60, "S3 after the outage")
        return {"stopped_s": round(seconds, 1), "unreachable_s": round(time.monotonic() - start, 1)}

    # workers
    def start_workers(self, n: int) -> None:
        for i in range(n):
            path = self.root / f"worker-{i}.log"
            self.logs.append(path)
            self.workers.append(subprocess.Popen([sys.executable, "-m", "orchestration.cli", "--log-level", "INFO",
                                                  "worker", "--cpu", "--loglevel", "INFO"],
                                                 env=self.env, stdout=path.open("ab"), stderr=subprocess.STDOUT))
        wait_for(lambda: len(self.children()) == n, 120, "worker processes")

    def children(self) -> dict[str, tuple[int, object]]:
        """Celery hostname -> (supervisor index, live child process)."""
        import psutil

        found = {}
        for i, w in enumerate(self.workers):
            try:
                for c in psutil.Process(w.pid).children():
                    cmd = c.cmdline()
                    if "--hostname" in cmd and c.status() != psutil.STATUS_ZOMBIE:
                        found[cmd[cmd.index("--hostname") + 1]] = (i, c)
            except psutil.Error:
                continue
        return found

    def stop_workers(self) -> None:
        for w in self.workers:
            w.terminate()
        for w in self.workers:
            try:
                w.wait(timeout=60)
            except subprocess.TimeoutExpired:
                w.kill()

    def stop(self) -> None:
        self.stop_workers()
        for srv in (self.s3_srv, self.redis_srv):
            try:
                srv.stop()
            except Exception as exc:  # already gone
                log.info("stopping %s: %s", srv.name, exc)

    # jobs
    def cli(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "orchestration.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"retouch {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        return proc

    def submit(self, src: str, out: str, ops: str, inpaint: str) -> str:
        return self.cli("submit", f"s3://{BUCKET}/{src}", "--out", f"s3://{BUCKET}/{out}", "--ops", ops,
                        "--inpaint", inpaint).stdout.strip()

    def finished(self, job: str) -> bool:
        try:
            raw = self.r.hget(f"retouch:job:{job}:meta", "finished_at")
        except redis.RedisError:
            return False
        return raw is not None and json.loads(raw) is not None

    def wait(self, job: str, timeout: float) -> float:
        start = time.monotonic()
        while not self.finished(job):
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"job {job} not finished after {timeout:.0f}s")
            time.sleep(0.05)
        return time.monotonic() - start

    # what workers hold
    def current(self, host: str) -> dict | None:
        raw = self.r.get(f"retouch:worker:{host}:current")
        return json.loads(raw) if raw else None

    def last(self, host: str) -> str | None:
        raw = self.r.get(f"retouch:worker:{host}:last")
        return raw.decode() if raw else None

    def deliveries(self, task_id: str) -> int:
        return sum(int(self.r.get(k) or 0) for k in self.r.scan_iter(f"retouch:delivery:{task_id}:*"))

    def lost_at_least(self, times: int) -> set[str]:
        """Task ids whose worker died holding them ``times`` times or more
        (the supervisors' counter, ``lost_task_key``), waiting out a Redis restart."""
        for _ in range(3):
            try:
                return {k.decode().split(":")[2] for k in self.r.scan_iter("retouch:lost:*")
                        if int(self.r.get(k) or 0) >= times}
            except redis.RedisError:
                wait_for(lambda: self.r.ping(), 60, "Redis to read the lost counters")
        raise RuntimeError("Redis kept failing while reading the lost counters")


# --- the faults --------------------------------------------------------------

def _kill_tree(proc) -> bool:
    """SIGKILL ``proc`` and its descendants; False when it was already gone
    (it exited between being chosen and the kill)."""
    import psutil

    try:
        victims = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return False
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    return True


def _victim(chaos: Chaos, n: int, min_age: float = 10.0, timeout: float = 30.0):
    """The worker child to kill next: alternating supervisors, one at least
    ``min_age`` s old (a child killed younger restarts with a growing backoff)."""
    deadline = time.monotonic() + timeout
    while True:
        kids = chaos.children()
        ordered = sorted(kids.items(), key=lambda kv: (kv[1][0] - n) % max(1, len(chaos.workers)))
        for host, (_, proc) in ordered:
            if time.time() - proc.create_time() >= min_age or time.monotonic() > deadline:
                return host, proc
        time.sleep(0.1)


def _await_event(chaos: Chaos, pattern: str, until: float, accept) -> str | None:
    """The worker host of the first keyspace event on ``pattern`` that
    ``accept(host)`` takes, before ``until`` (monotonic); None if none came."""
    pubsub = chaos.r.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.psubscribe(f"__keyspace@0__:{pattern}")
        while time.monotonic() < until:
            msg = pubsub.get_message(timeout=min(0.2, max(0.0, until - time.monotonic())))
            if msg and msg.get("data") in (b"set", "set"):
                channel = msg["channel"].decode() if isinstance(msg["channel"], bytes) else msg["channel"]
                host = channel.split(":")[3]
                if accept(host):
                    return host
        return None
    finally:
        pubsub.close()


def _kill(chaos: Chaos, n: int, kind: str, t0: float, rng: random.Random, window: float) -> Kill:
    """Wait (up to ``window`` s) for the moment ``kind`` names, then SIGKILL
    the worker's tree: ``mid-task`` somewhere inside a stage; ``task-end``
    as a task marks itself done (its acknowledgement still to come);
    ``finish`` inside a finish task. A task whose worker was already lost
    twice is spared: a third loss fails its image by design (max_deliveries
    3). The counters are read at each decision, not when the wait starts: the
    supervisor counts a loss a moment after the previous kill."""
    # while Redis restarts nothing can be seen: wait for it (bounded)
    wait_for(lambda: chaos.r.ping(), 60, "Redis before a kill")
    host, proc = _victim(chaos, n, min_age=5.0)
    until = time.monotonic() + window
    twice = chaos.lost_at_least(2)
    doing = "idle"
    try:
        if kind == "mid-task":
            while time.monotonic() < until:
                cur = chaos.current(host)
                if cur and cur["task"] not in ("finish", "batch_done", "finalize_job") and cur["id"] not in twice:
                    time.sleep(rng.uniform(0.1, 1.5))   # somewhere inside the stage
                    break
                time.sleep(0.01)
        elif kind == "task-end":   # the moment the task wrote "last": before its ack
            _await_event(chaos, f"retouch:worker:{host}:last", until, lambda h: True)
        elif kind == "finish":     # whichever worker starts a finish
            kids = chaos.children()
            seen = _await_event(chaos, "retouch:worker:*:current", until,
                                lambda h: h in kids and (chaos.current(h) or {}).get("task") == "finish")
            if seen:
                host, proc = seen, kids[seen][1]
        def holds(h: str) -> set[str]:   # the task running and the message just taken
            taken = chaos.r.get(f"retouch:worker:{h}:received")
            return {(chaos.current(h) or {}).get("id"), taken.decode() if taken else None} - {None}

        twice = chaos.lost_at_least(2)
        if holds(host) & twice:   # spare it: kill the other worker, or wait for another task
            spare_until = time.monotonic() + 30
            while time.monotonic() < spare_until:
                others = [(h, p) for h, (_, p) in chaos.children().items() if not holds(h) & twice]
                if others:
                    host, proc = others[0]
                    break
                time.sleep(0.05)
        cur, last = chaos.current(host), chaos.last(host)
        received = chaos.r.get(f"retouch:worker:{host}:received")
        held = {}
        for task_id in [c for c in ((cur or {}).get("id"), last, received and received.decode()) if c]:
            held[task_id] = chaos.deliveries(task_id)
        doing = (f"{cur['task']} {cur.get('image') or ''}".strip() if cur else
                 f"between tasks (last {last[:8]})" if last else "idle")
    except redis.RedisError:   # Redis went down meanwhile: kill only a worker not running a spared task
        held = {}
        wait_for(lambda: chaos.r.ping(), 60, "Redis before a kill")
        taken = chaos.r.get(f"retouch:worker:{host}:received")
        if {(chaos.current(host) or {}).get("id"), taken.decode() if taken else None} & chaos.lost_at_least(2):
            return _kill(chaos, n, "mid-task", t0, rng, window)
    if not _kill_tree(proc):   # it exited meanwhile: choose again
        return _kill(chaos, n, kind, t0, rng, window)
    return Kill(n, kind, round(time.monotonic() - t0, 1), host, doing, held, killed_at=time.monotonic())


_RESTORED = re.compile(r"worker (\S+) died holding task ([0-9a-f-]{36})")


def _restored_ids(logs: list[Path]) -> dict[str, list[str]]:
    """host -> task ids its supervisor put back (from the workers' logs)."""
    found: dict[str, list[str]] = {}
    for path in logs:
        for m in _RESTORED.finditer(path.read_text(errors="replace")):
            found.setdefault(m.group(1), []).append(m.group(2))
    return found


def _watch_redeliveries(chaos: Chaos, kills: list[Kill], stop: threading.Event) -> None:
    """For every kill, the first moment a task it held is delivered again."""
    while not stop.is_set():
        for k in kills:
            if k.redelivered_after is not None:
                continue
            try:
                for task_id, before in k.held.items():
                    if chaos.deliveries(task_id) > before:
                        k.redelivered_after = round(time.monotonic() - k.killed_at, 2)
                        break
            except redis.RedisError:
                break
        time.sleep(0.05)


def faulted_run(chaos: Chaos, args, fault_free: float, ops: str) -> dict:
    """Submit and inject the faults while the job runs: the kills spread over
    the first 70% of the fault-free time, the Redis restart at 30% and the
    S3 outage from 45% (each on its own thread, on time); wait for the job.
    Returns the fault log and the faulted time."""
    rng = random.Random(args.seed)
    kinds = [KINDS[i % len(KINDS)] for i in range(args.kills)]
    span = max(10.0, 0.7 * fault_free)
    spacing = span / max(1, args.kills)
    kill_at = [spacing * i + 0.1 * spacing for i in range(args.kills)]
    kills: list[Kill] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_redeliveries, args=(chaos, kills, stop), daemon=True)
    outage: dict = {}
    redis_fault: dict = {}

    def at(seconds: float, fault) -> threading.Thread:
        def run():
            while time.monotonic() - t0 < seconds:
                time.sleep(0.05)
            fault()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    chaos.notify()
    t0 = time.monotonic()
    job = chaos.submit("in", "out", ops, args.inpaint)
    watcher.start()
    faults = [
        at(0.3 * fault_free, lambda: redis_fault.update(at=round(time.monotonic() - t0, 1), unreachable_s=round(
            chaos.restart_redis(args.redis_down), 1))),
        at(0.45 * fault_free, lambda: outage.update(at=round(time.monotonic() - t0, 1),
                                                    **chaos.s3_outage(args.s3_outage))),
    ]
    for n, (when, kind) in enumerate(zip(kill_at, kinds), 1):
        while time.monotonic() - t0 < when:
            time.sleep(0.05)
        if chaos.finished(job):
            break
        # tasks whose worker was already lost twice (the counter the delivery
        # cap reads) are spared: a third loss fails the image by design
        kills.append(_kill(chaos, n, kind, t0, rng, window=max(3.0, 0.9 * spacing)))
    timeout = max(240.0, 3 * fault_free + 60)
    while not chaos.finished(job):
        if time.monotonic() - t0 > timeout:
            break
        time.sleep(0.05)
    faulted = time.monotonic() - t0
    for thread in faults:
        thread.join(timeout=120)
    time.sleep(1.0)
    stop.set()
    watcher.join(timeout=5)
    restored = _restored_ids(chaos.logs)
    for k in kills:
        k.restored = sorted({t for t in restored.get(k.victim, []) if t in k.held})
    return {"job": job, "faulted_s": round(faulted, 1), "finished": chaos.finished(job), "kills": kills,
            "redis": redis_fault, "s3": outage}


# --- the checks ------------------------------------------------------------

def check_job(chaos: Chaos, job: str, names: list[str], out: str, reference: Path) -> dict:
    """Ground truth for one job: status, manifest, summary, versions, bytes."""
    st = json.loads(chaos.cli("status", job, "--json").stdout)
    url = st["manifest"]
    key = url[len(f"s3://{BUCKET}/"):]
    lines = [json.loads(x) for x in chaos.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().splitlines()
             if x.strip()]
    summary = json.loads(chaos.s3.get_object(Bucket=BUCKET, Key=key.rsplit("/", 1)[0] + "/summary.json")["Body"]
                         .read())
    by_key = {x["key"]: x for x in lines}
    expected = {f"in/{n}" for n in names}
    versions: dict[str, int] = {}
    for page in chaos.s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET, Prefix=f"{out}/"):
        for v in page.get("Versions", []):
            versions[v["Key"]] = versions.get(v["Key"], 0) + 1
    identical = sum(bool(versions.get(f"{out}/{n}")) and
                    chaos.s3.get_object(Bucket=BUCKET, Key=f"{out}/{n}")["Body"].read()
                    == (reference / n).read_bytes() for n in names)
    failed = [f"{x['key']}: {x['error']}" for x in lines if x["status"] != "ok"]
    finishes = {k.decode(): int(v) for k, v in chaos.r.hgetall(f"retouch:job:{job}:finishes").items()}
    once = (len(lines) == len(by_key) == len(names) and set(by_key) == expected
            and all(x["status"] == "ok" for x in lines)
            and (st["done"], st["failed"], st["skipped"]) == (len(names), 0, 0)
            and (summary["ok"], summary["failed"], summary["skipped"]) == (len(names), 0, 0))
    return {"status": {k: st[k] for k in ("done", "failed", "skipped", "queued", "running")},
            "manifest": {s: sum(x["status"] == s for x in lines) for s in ("ok", "failed", "skipped")},
            "summary": {s: summary[s] for s in ("ok", "failed", "skipped")},
            "done_exactly_once": once,
            "one_version_each": all(versions.get(f"{out}/{n}") == 1 for n in names),
            "records": sum(versions.get(f"{out}/{n}.json", 0) >= 1 for n in names),
            "byte_identical": identical, "images": len(names),
            "chains_run_again": sum(v > 1 for v in finishes.values()), "not_ok": failed}


def volatile_restart(chaos: Chaos, ops: str, inpaint: str) -> dict:
    """A Redis WITHOUT persistence restarted under a running job: what says so."""
    srv = start_redis(chaos.root / "volatile", persist=False)
    port = int(srv.url.rsplit(":", 1)[1].split("/")[0])
    env = {**chaos.env, "RETOUCH_REDIS_URL": srv.url}
    path = chaos.root / "worker-volatile.log"
    worker = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "worker", "--cpu"], env=env,
                              stdout=path.open("ab"), stderr=subprocess.STDOUT)
    r = redis.Redis.from_url(srv.url, socket_timeout=5)
    try:
        job = subprocess.run([sys.executable, "-m", "orchestration.cli", "submit", f"s3://{BUCKET}/in",
                              "--out", f"s3://{BUCKET}/volatile-out", "--ops", ops, "--inpaint", inpaint],
                             env=env, capture_output=True, text=True, timeout=120, check=True).stdout.strip()
        wait_for(lambda: any(r.scan_iter("retouch:worker:*:current")), 120, "a task on the volatile Redis")
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(timeout=10)
        srv = start_redis(chaos.root / "volatile", port, persist=False)
        said = ""
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not said:
            said = next((json.loads(line).get("msg", "") for line in path.read_text(errors="replace").splitlines()
                         if line.startswith("{") and "Redis restarted without persistence" in line), "")
            time.sleep(0.5)
        status = subprocess.run([sys.executable, "-m", "orchestration.cli", "status", job], env=env,
                                capture_output=True, text=True, timeout=60)
        vanished = next((json.loads(line).get("msg", "") for line in path.read_text(errors="replace").splitlines()
                         if line.startswith("{") and "state is gone from Redis" in line), "")
        startup = next((json.loads(line).get("msg", "") for line in path.read_text(errors="replace").splitlines()
                        if line.startswith("{") and "does not persist" in line), "")
        return {"job": job, "status_exit": status.returncode, "status_says": status.stderr.strip(),
                "worker_says_at_start": startup, "worker_says_on_restart": said, "task_says": vanished,
                "reported": bool(status.returncode != 0 and "lost its data" in status.stderr and said)}
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
        srv.stop()


# --- the command -------------------------------------------------------------

def run(args) -> int:
    if args.workers < 1 or args.images < 1 or args.kills < 0:
        raise SystemExit("retouch bench chaos: --workers and --images must be >= 1, --kills >= 0")
    ops = ",".join(op.strip() for op in args.ops.split(",") if op.strip())
    root = Path(tempfile.mkdtemp(prefix="retouch-chaos-"))
    images = make_images(args.images, args.size, seed=args.seed)
    names = sorted(images)
    chaos = Chaos(root, args.seed)
    try:
        chaos.s3.create_bucket(Bucket=BUCKET)
        chaos.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        for name, data in images.items():
            chaos.s3.put_object(Bucket=BUCKET, Key=f"in/{name}", Body=data)
        for name, data in make_images(2 * args.workers, args.size, seed=args.seed + 99).items():
            chaos.s3.put_object(Bucket=BUCKET, Key=f"warm/{name}", Body=data)
        chaos.start_workers(args.workers)
        print(f"retouch bench chaos: {args.images} images of {args.size}x{args.size}, {args.workers} workers "
              f"(retouch worker --cpu), ops {ops}, inpaint {args.inpaint}, default settings; work dir {root}",
              flush=True)
        chaos.wait(chaos.submit("warm", "warm-out", ops, args.inpaint), 900)   # models loaded in the workers
        t = time.monotonic()
        clean_job = chaos.submit("in", "clean", ops, args.inpaint)
        chaos.wait(clean_job, 1800)
        fault_free = time.monotonic() - t
        print(f"  fault-free  {fault_free:.1f} s", flush=True)

        faulted = faulted_run(chaos, args, fault_free, ops)
        outage = faulted["s3"].get("unreachable_s", 0.0)
        bound = 2 * fault_free + outage

        reference = root / "run-out"
        local_in = root / "run-in"
        local_in.mkdir()
        for name, data in images.items():
            (local_in / name).write_bytes(data)
        chaos.cli("run", str(local_in), "--out", str(reference), "--ops", ops, "--inpaint", args.inpaint,
                  "--no-progress", timeout=3600)
        clean = check_job(chaos, clean_job, names, "clean", reference)
        checked = check_job(chaos, faulted["job"], names, "out", reference) if faulted["finished"] else {}
        volatile = None if args.no_volatile_check else volatile_restart(chaos, ops, args.inpaint)
    finally:
        chaos.stop()

    kills: list[Kill] = faulted["kills"]
    delays = [k.redelivered_after for k in kills if k.restored]
    figures = {
        "images": args.images, "size": f"{args.size}x{args.size}", "workers": args.workers, "ops": ops,
        "inpaint": args.inpaint, "fault_free_s": round(fault_free, 1), "faulted_s": faulted["faulted_s"],
        "bound_s": round(bound, 1), "within_bound": faulted["finished"] and faulted["faulted_s"] <= bound,
        "redis_restart": faulted["redis"], "s3_outage": faulted["s3"],
        "kills": [{"n": k.n, "kind": k.kind, "at_s": k.at, "victim": k.victim, "doing": k.doing,
                   "held": sorted(k.held), "restored": k.restored, "redelivered_after_s": k.redelivered_after}
                  for k in kills],
        "max_redelivery_s": max((d for d in delays if d is not None), default=None),
        "all_redelivered_within_15s": all(d is not None and d <= 15 for d in delays),
        "fault_free_job": clean, "faulted_job": checked, "volatile_redis": volatile,
        "machine": machine("cpu"),
    }
    _print(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    ok = (figures["within_bound"] and figures["all_redelivered_within_15s"] and checked
          and checked["done_exactly_once"] and checked["one_version_each"]
          and checked["byte_identical"] == args.images and clean["byte_identical"] == args.images
          and (volatile is None or volatile["reported"]))
    print("  result      " + ("every check holds" if ok else "SOME CHECK FAILED (see above)"))
    return 0 if ok else 1


def _print(f: dict) -> None:
    c = f["faulted_job"] or {}
    print(f"  faulted     {f['faulted_s']:.1f} s  (bound 2 x {f['fault_free_s']:.1f} + {f['s3_outage'].get('unreachable_s', 0)}"
          f" s outage = {f['bound_s']:.1f} s: {'within' if f['within_bound'] else 'NOT within'})")
    print(f"  redis       SIGKILLed at {f['redis_restart'].get('at')} s, back after "
          f"{f['redis_restart'].get('unreachable_s')} s (same port, same append-only file)")
    print(f"  s3          stopped at {f['s3_outage'].get('at')} s for {f['s3_outage'].get('stopped_s')} s, "
          f"unreachable {f['s3_outage'].get('unreachable_s')} s (same ports and data)")
    print("  kills       #  at(s)  kind      doing                               held  put back  redelivered")
    for k in f["kills"]:
        after = "-" if not k["restored"] else (f"{k['redelivered_after_s']:.2f} s" if k["redelivered_after_s"]
                                                is not None else "NEVER")
        print(f"             {k['n']:<2} {k['at_s']:>5}  {k['kind']:<9} {k['doing'][:35]:<35} {len(k['held']):>4}"
              f"  {len(k['restored']):>8}  {after}")
    print(f"  redelivery  max {f['max_redelivery_s']} s after the SIGKILL "
          f"({'all within 15 s' if f['all_redelivered_within_15s'] else 'NOT all within 15 s'}; '-' = nothing "
          "held: the finished task was acknowledged)")
    if c:
        print(f"  images      status {c['status']}, manifest {c['manifest']}, summary {c['summary']}: "
              f"{'every image done exactly once' if c['done_exactly_once'] else 'NOT done exactly once'}; "
              f"{c['chains_run_again']} chains ran again (found their own output)")
        for line in c["not_ok"]:
            print(f"              not ok: {line[:150]}")
        print(f"  outputs     one S3 version each: {'yes' if c['one_version_each'] else 'NO'}; records {c['records']}"
              f"/{c['images']}; byte-identical to retouch run: {c['byte_identical']}/{c['images']} "
              f"(fault-free job {f['fault_free_job']['byte_identical']}/{c['images']})")
    else:
        print("  images      the faulted job did NOT finish")
    v = f["volatile_redis"]
    if v:
        print(f"  no-AOF      Redis without persistence restarted under job {v['job']}: "
              f"{'reported' if v['reported'] else 'NOT reported'}")
        print(f"              worker at start: {v['worker_says_at_start'][:110]}")
        print(f"              worker on restart: {v['worker_says_on_restart'][:110]}")
        print(f"              retouch status (exit {v['status_exit']}): {v['status_says'][:110]}")
    m = f["machine"]
    print(f"  machine     {m.get('cpu', '')}; {m.get('cores', '')} cores; load {m.get('load_average_1m', '')}")
