"""Jobs: a prefix of images restored by the cluster, with its state and manifest.

The key layout of outputs, artifacts and manifests in S3; the job's state in
Redis (:class:`JobStore`); its status; the manifest written from the batches'
parts; and which queues the running workers serve. Enqueueing the images is
``tasks.canvas.submit``.

Job state lives in Redis under ``retouch:job:<id>:*`` (counts, per-image final
status set once, timestamps). When every batch is done, the job writes its JSON
Lines manifest (one line per image) and a summary next to it in S3:
``<out prefix>/_retouch/jobs/<id>/manifest.jsonl``.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterator

from orchestration.storage import S3Url, Storage, join, parse_url
from worker.errors import RetouchError
from worker.io import EXTENSIONS, SUFFIX, format_name

log = logging.getLogger(__name__)

JOB_DIR = "_retouch/jobs"
STATUSES = ("ok", "failed", "skipped")
ACTIVE = "retouch:jobs:active"
FINISHED_JOB_TTL = 7 * 24 * 3600  # job state in Redis after the manifest is written (it stays in S3)


# --- key layout -----------------------------------------------------------

def job_prefix(out: S3Url, job: str) -> str:
    return join(out.prefix, JOB_DIR, job)


def manifest_key(out: S3Url, job: str) -> str:
    return join(job_prefix(out, job), "manifest.jsonl")


def output_key(src: S3Url, out: S3Url, key: str, fmt: str | None) -> str:
    """The output mirrors the input layout under the output prefix; with a
    ``--format``, the suffix follows the format."""
    rel = PurePosixPath(key[len(src.prefix) + 1:] if src.prefix else key)
    if fmt:
        rel = rel.with_suffix(SUFFIX.get(format_name(fmt), ".png"))
    return join(out.prefix, str(rel))


def artifact_prefix(out: S3Url, job: str, src: S3Url, key: str) -> str:
    rel = key[len(src.prefix) + 1:] if src.prefix else key
    return join(job_prefix(out, job), "artifacts", rel)


# --- job state in Redis ----------------------------------------------------

class JobStore:
    """Counters and per-image outcomes of jobs, in Redis. Every update is
    idempotent per image, so a redelivered task never counts twice."""

    def __init__(self, redis):
        self.redis = redis

    @staticmethod
    def k(job: str, what: str) -> str:
        return f"retouch:job:{job}:{what}"

    def create(self, job: str, meta: dict) -> None:
        self.redis.hset(self.k(job, "meta"), mapping={k: json.dumps(v) for k, v in meta.items()})
        self.redis.sadd(ACTIVE, job)

    def active(self) -> dict[str, dict[str, int]]:
        """``{job: {queued, running, ok, failed, skipped}}`` for jobs not finished yet."""
        result = {}
        for raw in self.redis.smembers(ACTIVE):
            job = raw.decode()
            try:
                st = status(self, job)
            except UnknownJob:
                self.redis.srem(ACTIVE, job)
                continue
            result[job] = {"queued": st.queued, "running": st.running, "ok": st.done, "failed": st.failed,
                           "skipped": st.skipped}
        return result

    def known(self, job: str) -> bool:
        """Whether Redis holds this job's state."""
        return bool(self.redis.exists(self.k(job, "meta")))

    def meta(self, job: str) -> dict:
        raw = self.redis.hgetall(self.k(job, "meta"))
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def plan(self, job: str) -> tuple[dict | None, str | None]:
        """The job's stored plan and its fingerprint; (None, None) when the job's state is gone."""
        plan, fingerprint = self.redis.hmget(self.k(job, "meta"), ["plan", "fingerprint"])
        return (json.loads(plan) if plan else None), (json.loads(fingerprint) if fingerprint else None)

    def set_meta(self, job: str, **values) -> None:
        self.redis.hset(self.k(job, "meta"), mapping={k: json.dumps(v) for k, v in values.items()})

    def add_queued(self, job: str, n: int) -> None:
        self.redis.hincrby(self.k(job, "counts"), "total", n)

    def started(self, job: str, image: str) -> None:
        """First delivery of an image's first task: queued -> running (once)."""
        if self.redis.hsetnx(self.k(job, "started"), image, int(time.time())):
            pipe = self.redis.pipeline()
            pipe.hincrby(self.k(job, "counts"), "running", 1)
            pipe.hsetnx(self.k(job, "meta"), "first_start", json.dumps(time.time()))
            pipe.execute()

    def finished(self, job: str, image: str, status: str) -> bool:
        """Record an image's final status once. Returns True the first time
        (the caller then counts it in metrics), False for a repeat."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES} but is {status!r}")
        self.redis.hincrby(self.k(job, "finishes"), image, 1)
        if not self.redis.hsetnx(self.k(job, "status"), image, status):
            return False
        pipe = self.redis.pipeline()
        pipe.hincrby(self.k(job, "counts"), status, 1)
        if self.redis.hexists(self.k(job, "started"), image):
            pipe.hincrby(self.k(job, "counts"), "running", -1)
        pipe.hset(self.k(job, "meta"), "last_finish", json.dumps(time.time()))
        pipe.execute()
        return True

    def status_of(self, job: str, image: str) -> str | None:
        """The final status that counted for ``image`` (the first finish's), or None."""
        value = self.redis.hget(self.k(job, "status"), image)
        return value.decode() if value is not None else None

    def add_line(self, job: str, batch: int, line: dict, replace: bool = True) -> None:
        """An image's manifest line, kept until its batch's part is written.
        ``replace=False`` stores it only where the image has no line yet: a
        repeated finish (a redelivered chain that found its own output and
        says "skipped") must not overwrite the line of the finish that counted."""
        pipe = self.redis.pipeline()
        store = pipe.hset if replace else pipe.hsetnx
        store(self.k(job, f"lines:{batch}"), line["key"], json.dumps(line, sort_keys=True))
        pipe.expire(self.k(job, f"lines:{batch}"), 30 * 24 * 3600)
        pipe.execute()

    def batch_lines(self, job: str, batch: int) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.redis.hgetall(self.k(job, f"lines:{batch}")).items()}

    def set_batch_keys(self, job: str, batch: int, keys: list[str]) -> None:
        """The image keys of one chord batch (read by its callback; they
        expire with the job's other keys)."""
        self.redis.rpush(self.k(job, f"keys:{batch}"), *keys)

    def batch_keys(self, job: str, batch: int) -> list[str]:
        return [k.decode() for k in self.redis.lrange(self.k(job, f"keys:{batch}"), 0, -1)]

    def drop_lines(self, job: str, batch: int) -> None:
        self.redis.delete(self.k(job, f"lines:{batch}"))

    def counts(self, job: str) -> dict[str, int]:
        raw = self.redis.hgetall(self.k(job, "counts"))
        return {k.decode(): int(v) for k, v in raw.items()}

    def batch_done(self, job: str, batch: int) -> None:
        # a set, not a counter: a redelivered chord callback counts once
        self.redis.sadd(self.k(job, "batches_done"), batch)

    def batches_done(self, job: str) -> int:
        return int(self.redis.scard(self.k(job, "batches_done")))

    def claim_finalize(self, job: str) -> bool:
        """True for exactly one caller once the job is sealed and all its batches are done."""
        meta = self.meta(job)
        if not meta.get("sealed") or self.batches_done(job) < int(meta.get("batches", 0)):
            return False
        return bool(self.redis.set(self.k(job, "finalize"), 1, nx=True))

    def expire(self, job: str, seconds: int) -> None:
        """Let every Redis key of a finished job expire."""
        pipe = self.redis.pipeline()
        for key in self.redis.scan_iter(f"retouch:job:{job}:*"):
            pipe.expire(key, seconds)
        pipe.execute()

    def cancel(self, job: str) -> bool:
        """Mark a job cancelled; True the first time. Its tasks that have not
        run yet then fail their image at once (``job ... was cancelled``)
        instead of computing, so the job drains quickly and still ends with
        its manifest."""
        return bool(self.redis.hsetnx(self.k(job, "meta"), "cancelled_at", json.dumps(time.time())))

    def cancelled(self, job: str) -> bool:
        return bool(self.redis.hexists(self.k(job, "meta"), "cancelled_at"))

    def per_image(self, job: str, what: str) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.redis.hgetall(self.k(job, what)).items()}


# --- status -------------------------------------------------------------

@dataclass
class JobStatus:
    job: str
    total: int
    sealed: bool
    queued: int
    running: int
    done: int
    failed: int
    skipped: int
    elapsed: float
    throughput: float      # finished images per second since the first one started
    finished: bool
    manifest: str | None
    cancelled: bool = False

    @property
    def completed(self) -> int:
        return self.done + self.failed + self.skipped

    def line(self) -> str:
        state = "finished" if self.finished else ("running" if self.sealed else "submitting")
        if self.cancelled:
            state = "cancelled" if self.finished else "cancelling"
        return (f"job {self.job}: {state}; {self.total} images: {self.queued} queued, {self.running} running, "
                f"{self.done} done, {self.failed} failed, {self.skipped} skipped; "
                f"{self.throughput * 60:.1f} images/min over {self.elapsed:.1f}s"
                + (f"; manifest {self.manifest}" if self.manifest else ""))


class UnknownJob(RetouchError):
    """No job of that id in Redis (never submitted, or expired)."""


def status(store: JobStore, job: str) -> JobStatus:
    """Raises UnknownJob if the job is unknown."""
    meta = store.meta(job)
    if not meta:
        raise UnknownJob(f"unknown job {job!r}: Redis holds no state for it (a wrong id, a job finished over "
                         "7 days ago, or a Redis that lost its data on a restart: run Redis with persistence)")
    c = store.counts(job)
    total, running = c.get("total", 0), max(0, c.get("running", 0))
    done, failed, skipped = c.get("ok", 0), c.get("failed", 0), c.get("skipped", 0)
    start = meta.get("first_start") or meta.get("created")
    end = meta.get("finished_at") or time.time()
    elapsed = max(0.0, end - start) if start else 0.0
    finished_n = done + failed + skipped
    return JobStatus(job, total, bool(meta.get("sealed")), max(0, total - finished_n - running), running, done,
                     failed, skipped, elapsed, finished_n / elapsed if elapsed > 0 else 0.0,
                     bool(meta.get("finished_at")), meta.get("manifest"), bool(meta.get("cancelled_at")))


# --- submit ----------------------------------------------------------------

def list_images(storage: Storage, src: S3Url) -> Iterator[dict]:
    """Image objects under ``src`` (known extensions, no hidden segments),
    page by page."""
    for obj in storage.list_objects(src):
        rel = obj["Key"][len(src.prefix) + 1:] if src.prefix else obj["Key"]
        if PurePosixPath(rel).suffix.lower() not in EXTENSIONS:
            continue
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        yield obj


def current_task_key(hostname: str) -> str:
    """What a worker process is doing now (JSON: task, id, image, job, since);
    written by the task, deleted when it ends or when the process dies."""
    return f"retouch:worker:{hostname}:current"


def last_task_key(hostname: str) -> str:
    """The id of the last task a worker process finished (its acknowledgement
    may still be on its way when the process dies)."""
    return f"retouch:worker:{hostname}:last"


def lost_task_key(task_id: str, retries: int = 0) -> str:
    """How many times a task message was put back because its worker process
    died holding it (counted by the supervisor's requeue): what the delivery
    cap counts, so redeliveries with another cause (a consumer reconnecting
    after a Redis restart) do not fail an image."""
    return f"retouch:lost:{task_id}:{retries}"


LOST_TTL = 7 * 24 * 3600  # past any redelivery of the message


def received_task_key(hostname: str) -> str:
    """The id of the last task message a worker process received (set before
    the task runs: a process killed between receiving a message and marking
    its task current still has it put back)."""
    return f"retouch:worker:{hostname}:received"


QUEUES_KEY = "retouch:queues:"   # + supervisor id -> JSON list of the queues its workers consume
QUEUES_TTL = 30


def announce_queues(redis, supervisor: str, queues: list[str]) -> None:
    """Called every few seconds by ``retouch worker`` (the supervisor, never
    busy with a task, unlike a solo worker that could not answer a control
    message): these queues have consumers for the next ``QUEUES_TTL`` s."""
    redis.set(QUEUES_KEY + supervisor, json.dumps(sorted(queues)), ex=QUEUES_TTL)


def gpu_queues(redis, fallback: int) -> list[str]:
    """The ``gpu.<i>`` queues announced by running workers; ``fallback``
    queues if none is announced; [] means heavy stages go to cpu."""
    names: set[str] = set()
    for key in redis.scan_iter(QUEUES_KEY + "*"):
        raw = redis.get(key)
        if raw:
            names.update(json.loads(raw))
    gpus = sorted((n for n in names if n.startswith("gpu.")), key=lambda n: int(n.split(".")[1]))
    if not names:  # no worker announced yet: route by settings
        return [f"gpu.{i}" for i in range(fallback)]
    return gpus


# --- manifest --------------------------------------------------------------

def part_key(out: S3Url, job: str, batch: int) -> str:
    return join(job_prefix(out, job), "parts", f"part-{batch:06d}.jsonl")


def write_part(storage: Storage, out: S3Url, job: str, batch: int, lines: dict[str, str]) -> None:
    """One batch's manifest lines ({image key: JSON line}), sorted by key."""
    body = "".join(lines[k] + "\n" for k in sorted(lines)).encode()
    storage.put(out.bucket, part_key(out, job, batch), body, {"job": job}, "application/x-ndjson")


def write_manifest(storage: Storage, store: JobStore, job: str) -> dict:
    """Concatenate the batch parts into ``manifest.jsonl`` (streamed through a
    spooled file, multipart when large) and write ``summary.json``."""
    meta = store.meta(job)
    out = parse_url(meta["output"])
    totals = {s: 0 for s in STATUSES}
    with tempfile.SpooledTemporaryFile(max_size=64 * 2**20) as spool:
        for batch in range(int(meta.get("batches", 0))):
            data = storage.get(out.bucket, part_key(out, job, batch))
            for raw in data.splitlines():
                if raw.strip():
                    totals[json.loads(raw)["status"]] += 1
            spool.write(data)
        spool.seek(0)
        key = manifest_key(out, job)
        storage.put(out.bucket, key, spool, {"job": job, "fingerprint": meta["fingerprint"]},
                    "application/x-ndjson")
    summary = {"job": job, "input": meta["input"], "output": meta["output"], "fingerprint": meta["fingerprint"],
               "plan": meta["plan"], "images": sum(totals.values()), **totals,
               "manifest": f"s3://{out.bucket}/{key}", "created": meta.get("created"),
               "first_start": meta.get("first_start"), "finished_at": time.time()}
    if meta.get("watermark"):   # the template the job learned (tasks.learning)
        summary["watermark"] = meta["watermark"]
    storage.put_json(out.bucket, join(job_prefix(out, job), "summary.json"), summary, {"job": job})
    store.set_meta(job, manifest=summary["manifest"], finished_at=summary["finished_at"], totals=totals)
    store.redis.srem(ACTIVE, job)
    store.expire(job, FINISHED_JOB_TTL)
    return summary


def read_manifest(storage: Storage, manifest_url: str) -> list[dict]:
    url = parse_url(manifest_url)
    return [json.loads(line) for line in storage.get(url.bucket, url.prefix).splitlines() if line.strip()]
