"""The tasks: one generic task runs any segment of the stage graph.

``retouch.stages(message, names)`` gets an image job (``ImageJob`` as JSON),
runs the named stages of ``worker.pipeline.graph`` on it and returns it
updated; ``tasks.canvas`` chains one per segment of the plan's stages, then
``retouch.finish`` (or the last segment's task finishes the image itself,
``finish=True``, when both run on the ``cpu`` queue). Pixels never travel through the broker: a task reads the
original and the artifacts earlier segments stored (``tasks.artifacts``) and
stores what later segments need; the segment holding the last stage writes
the output and its JSON record.

A bad image never raises out of its chain: the job turns ``failed`` with a
one-line error (a :class:`RetouchError`'s own text; any other exception is a
bug, logged with its traceback), later segments pass it through, and
``finish`` records it, so the batch's chord completes and the manifest has the
line. Transient storage/broker errors are retried with backoff; a task
delivered more than ``max_deliveries`` times (its worker died each time)
fails its image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

import redis
from celery import shared_task
from celery.exceptions import Retry, SoftTimeLimitExceeded

from orchestration.jobs import JobStore, current_task_key, last_task_key, lost_task_key, write_manifest, write_part
from orchestration.storage import is_transient, parse_url, validate_key
from tasks import artifacts, learning, limits
from tasks.canvas import with_plan
from tasks.runtime import Runtime, runtime
from worker import __version__
from worker.detect import TextDetector, shipped_model_path
from worker.errors import RetouchError
from worker.io import MIME, Image, decode, encode, format_name
from worker.pipeline import graph
from worker.pipeline.artifacts import ARTIFACTS, IMAGE, PIXELS, Pixels
from worker.pipeline.job import ImageJob, JobSchemaError
from worker.pipeline.lineage import BUILTIN, file_digest, lineage, weights_digest
from worker.pipeline.record import Context, build_record
from worker.strokes import WEIGHTS as STROKE_WEIGHTS
from worker.strokes import StrokeSegmenter

log = logging.getLogger(__name__)


def _transient(exc: BaseException) -> bool:
    return is_transient(exc) or isinstance(exc, (redis.ConnectionError, redis.TimeoutError))


def _marker_ttl(rt: Runtime) -> int:
    """How long delivery counts and timeout marks live: past any redelivery."""
    return rt.settings.visibility_timeout * (rt.settings.max_deliveries + 2)


def _count_delivery(rt: Runtime, task, name: str) -> int:
    """Deliveries of this task message (a retry is a new message); counted in Redis."""
    key = f"retouch:delivery:{task.request.id}:{task.request.retries}"
    pipe = rt.redis.pipeline()
    pipe.incr(key)
    pipe.expire(key, _marker_ttl(rt))
    n = int(pipe.execute()[0])
    delivery = getattr(task.request, "delivery_info", None) or {}
    if n > 1 and not delivery.get("redelivered"):
        # kombu flags restored messages and monitoring.celery_signals counts those;
        # count here only the redeliveries kombu did not flag
        rt.metrics.task_redelivered(name)
    return n


def _mark_current(rt: Runtime, task, stage: str | None, job: ImageJob | None = None, *, image: str | None = None,
                  job_id: str | None = None) -> None:
    """What each worker is doing now (``retouch:worker:<host>:current``), for
    status, tests and its supervisor (which puts a dead worker's tasks back)."""
    if task.request.id is None:   # called in process, not from a worker
        return
    key = current_task_key(task.request.hostname)
    if stage is None:
        pipe = rt.redis.pipeline()
        pipe.delete(key)
        # until acknowledged, a finished task's message is still held: if this
        # process dies now, its supervisor puts it back (tasks.requeue)
        pipe.set(last_task_key(task.request.hostname), task.request.id, ex=_marker_ttl(rt))
        pipe.execute()
    else:
        rt.redis.set(key, json.dumps({"task": stage, "id": task.request.id, "image": job.key if job else image,
                                      "job": job.job if job else job_id, "since": time.time()}),
                     ex=rt.settings.task_time_limit + 60)


def _vanished(store: JobStore, job: str, what: str) -> bool:
    """A job whose state is gone from Redis (a Redis restarted without
    persistence, or state expired): said loudly, never processed silently."""
    if store.known(job):
        return False
    log.error("job %s: its state is gone from Redis (did Redis restart without persistence? run it with "
              "appendonly yes); %s dropped, resubmit the job", job, what)
    return True


_PLANS: dict[str, tuple[dict, str]] = {}   # job -> its stored plan and fingerprint, in this process


def _job_plan(rt: Runtime, message: dict) -> tuple[dict | None, str | None]:
    """The plan a first-task message left out (``tasks.canvas.compact_message``):
    its job's, read from Redis once per job and process (a job's plan never changes)."""
    if not isinstance(message, dict) or "plan" in message or not isinstance(message.get("job"), str):
        return None, None
    job = message["job"]
    if job not in _PLANS:
        plan, fingerprint = JobStore(rt.redis).plan(job)
        if plan is None:
            return None, None
        if len(_PLANS) >= 256:   # bounded: long-lived workers see many jobs
            _PLANS.clear()
        _PLANS[job] = (plan, fingerprint)
    return _PLANS[job]


@shared_task(name="retouch.stages", bind=True, max_retries=None, ignore_result=True)
def run_stages(self, message: dict, names: list[str], finish: bool = False) -> dict:
    """Run the stages ``names`` (one segment of the graph) on one image job.
    The next task gets the returned job through the chain's message (storing
    it in the result backend too would cost Redis memory per image). With
    ``finish`` (the last segment runs on finish's queue: ``tasks.canvas``),
    the image is finished in this task too and the chord gets finish's result
    (a chord counts its members' results whether they are stored or not)."""
    rt = runtime()
    out = _stages(rt, self, message, names)
    return _end(rt, self, out, counted=True) if finish else out


def _stages(rt: Runtime, task, message: dict, names: list[str]) -> dict:
    """:func:`run_stages`' work: the job after the segment, as a message."""
    try:
        job = ImageJob.from_message(with_plan(message, *_job_plan(rt, message)))
    except JobSchemaError as exc:
        error = str(exc)
        if isinstance(message, dict) and "plan" not in message and _vanished(
                JobStore(rt.redis), str(message.get("job")), f"{message.get('key')} {'+'.join(names)}"):
            # the plan it left out went with the job's state (reported by _vanished)
            error = f"s3://{message.get('bucket')}/{message.get('key')}: job {message.get('job')}: its state is gone"
        else:
            log.error("%s", error)
        return {**message, "status": "failed", "error": error}
    if job.done:
        return job.to_message()
    if _vanished(JobStore(rt.redis), job.job, f"{job.key} {'+'.join(names)}"):
        return job.fail(f"job {job.job}: its state is gone from Redis").to_message()
    if JobStore(rt.redis).cancelled(job.job):  # DELETE /v1/jobs/<id>: drain without computing
        return job.fail(f"job {job.job} was cancelled").to_message()
    label = "+".join(names)
    deliveries = _count_delivery(rt, task, label)
    # a loss is counted before the message goes back: a first delivery has none
    lost = int(rt.redis.get(lost_task_key(task.request.id, task.request.retries)) or 0) if deliveries > 1 else 0
    if deliveries > 1:
        log.warning("%s: %s delivered %d times (its worker lost %d times)", job.key, label, deliveries, lost)
    timed_out = f"retouch:timedout:{task.request.id}:{task.request.retries}"
    if deliveries > 1 and rt.redis.exists(timed_out):
        return job.fail(f"{label} exceeded the hard time limit ({rt.settings.task_time_limit}s)").to_message()
    # the cap counts the deaths of the worker holding the task (a task that
    # kills its worker every time must not loop); the total is a last resort
    # for hosts that vanished with their supervisor (visibility timeout)
    if lost >= rt.settings.max_deliveries or deliveries > 2 * rt.settings.max_deliveries + 1:
        return job.fail(f"{label} delivered {deliveries} times, its worker lost {lost} times; "
                        "giving up").to_message()
    # work on a copy: a retry re-sends the message's own arguments, which must
    # not carry this attempt's half-made trace
    work = job.model_copy(deep=True)
    start = time.perf_counter()
    try:
        with limits.enforced(rt.settings.task_soft_time_limit, rt.settings.task_time_limit,
                             f"{job.key} {label}", enabled=rt.options.enforce_limits,
                             before_kill=lambda: rt.redis.set(timed_out, 1, ex=_marker_ttl(rt))):
            _run_segment(rt, task, work, [graph.get(n) for n in names])
    except Retry:
        raise
    except SoftTimeLimitExceeded:
        work.fail(f"{label} exceeded the soft time limit ({rt.settings.task_soft_time_limit}s)")
    except Exception as exc:
        if _transient(exc) and task.request.retries < rt.settings.task_max_retries:
            log.warning("%s: %s: transient error, retrying: %s", job.key, label, exc)
            raise task.retry(exc=exc, countdown=min(60, 2 ** task.request.retries))
        if isinstance(exc, RetouchError):
            work.fail(str(exc))
        else:
            log.exception("%s: %s failed", job.key, label)
            work.fail(f"{type(exc).__name__}: {exc}")
    finally:
        _mark_current(rt, task, None)
    work.task_seconds[label] = round(time.perf_counter() - start, 4)
    return work.to_message()


def _run_segment(rt: Runtime, task, job: ImageJob, segment: list[graph.Stage]) -> None:
    first = not job.begun   # the task that reads the image first: the one the read-ahead fetched for
    if first:
        _begin(rt, job)
        if job.done:
            return
    consumed = {a for stage in segment for a in stage.consumes} | {PIXELS}
    fetched = artifacts.fetch_all(rt.storage, job, consumed)   # in flight while the input comes
    img, data = _input(rt, job, ahead=first)
    if rt.readahead is not None:   # the next image's input comes in while this one computes
        rt.readahead.start((task.request.delivery_info or {}).get("routing_key"), (job.bucket, job.key))
    base = img.rgb
    arts = {IMAGE: img}
    for name in consumed:
        raw = fetched[name].result() if name in fetched else None
        arts[name] = artifacts.load(rt.storage, job, name, base, raw)
    arts[PIXELS] = arts[PIXELS] or Pixels(img.rgb, img.alpha)
    ctx = Context(image=job.key, job=job.job, metrics=rt.metrics, trace=job.trace)
    if any(stage.name == "watermark" for stage in segment):
        learning.prefetch(rt, job)   # a template learned by the job (--watermark learned), from S3
    made: dict[str, str] = {}   # artifact -> the stage that made it last
    for stage in segment:
        _mark_current(rt, task, stage.name, job)
        for name in graph.run_stage(stage, arts, job.plan, rt.cache, ctx):
            made[name] = stage.name
        job.workers[stage.name] = task.request.hostname
    stages = graph.stages_for(job.plan)
    last = stages.index(segment[-1])
    if last == len(stages) - 1:
        made.pop(PIXELS, None)
        _write_output(rt, job, img, data, arts[PIXELS])
    needed = graph.needed_after(stages, last)
    artifacts.save_all(rt.storage, job, {name: stage for name, stage in made.items()
                                         if name in needed or ARTIFACTS[name].kept}, arts, base)


def _input(rt: Runtime, job: ImageJob, ahead: bool = False) -> tuple[Image, bytes]:
    """The original, decoded, and its bytes; with ``ahead`` (a first task),
    the read-ahead's copy where it fetched this image."""
    data = rt.readahead.take(job.bucket, job.key, job.etag) if ahead and rt.readahead is not None else None
    if data is None:
        data = rt.storage.get(job.bucket, job.key)
    return decode(data, job.url, job.max_pixels), data


def _begin(rt: Runtime, job: ImageJob) -> None:
    """First task of a chain: validate keys, count the image as running, and
    skip it if its output exists with the same fingerprint and input."""
    for key in (job.key, job.out_key, job.artifact_prefix):
        validate_key(key)
    JobStore(rt.redis).started(job.job, job.key)
    job.begun = True
    if job.force or job.revise:  # a revision replaces the output with a new version (_write_output)
        return
    meta = rt.storage.head(job.out_bucket, job.out_key)
    if meta is None:
        return
    if meta.get("retouch-fingerprint") == job.fingerprint and meta.get("retouch-input-etag") == job.etag:
        if meta.get("retouch-job") == job.job:
            # this job wrote it: a chain that ran again (a message restored after a
            # lost worker or a Redis restart) finds its own work. The image is
            # "ok", not "skipped", once its record is there too (else it is
            # computed again, and the conditional writes keep the first output)
            if rt.storage.head(job.out_bucket, job.out_key + ".json") is not None:
                job.status, job.output, job.record_key = "ok", job.out_url, job.out_key + ".json"
            return
        job.status, job.output = "skipped", job.out_url
        return
    job.fail(f"output {job.out_url} exists from other settings or another input (fingerprint "
             f"{meta.get('retouch-fingerprint')}); pass --force or choose another --out")


def _metadata(job: ImageJob, record: dict) -> dict[str, str]:
    """Small S3 metadata on each output (well inside the 2 KB limit); the
    details are in the per-image JSON record next to it."""
    models = [f"{stage}={variant}" for stage, variant in sorted(record.get("variants", {}).items())]
    if "remove-text" in job.plan.ops:
        models.insert(0, f"detect={TextDetector.name}")
    return {"retouch-fingerprint": job.fingerprint, "retouch-version": __version__,
            "retouch-seed": str(job.plan.seed), "retouch-ops": ",".join(job.plan.ops),
            "retouch-models": ";".join(models)[:512], "retouch-input-etag": job.etag, "retouch-job": job.job,
            "retouch-revision": record["lineage"]["fingerprint"], "retouch-input-sha256": record["lineage"]["input"]}


def _lineage(rt: Runtime, job: ImageJob, record: dict, input_sha256: str) -> dict:
    """The parts this output is made from (worker.pipeline.lineage): the models
    the stages chose, with their weights' sha256 in this worker's store."""
    models = {name: weights_digest(name, rt.settings.model_dir) or BUILTIN
              for name in set(record.get("variants", {}).values())}
    if "remove-text" in job.plan.ops:
        models[TextDetector.name] = file_digest(shipped_model_path())
        models[StrokeSegmenter.name] = file_digest(STROKE_WEIGHTS)
    return lineage(input_sha256, job.fingerprint, models, graph.code_versions(job.plan))


def _write_output(rt: Runtime, job: ImageJob, original: Image, data: bytes, pixels: Pixels) -> None:
    plan = job.plan
    result = original.with_pixels(pixels.rgb, pixels.alpha)
    out_bytes = encode(result, plan.format, plan.quality)
    fmt = format_name(plan.format or original.format)
    record = build_record(original, plan, job.trace)
    record["input"].update({"url": job.url, "etag": job.etag, "sha256": hashlib.sha256(data).hexdigest()})
    record["output"] = {"url": job.out_url, "sha256": hashlib.sha256(out_bytes).hexdigest(),
                        "width": result.size[0], "height": result.size[1], "format": fmt}
    record["job"] = job.job
    record["lineage"] = _lineage(rt, job, record, record["input"]["sha256"])
    job.revision = record["lineage"]["fingerprint"]
    mime = MIME.get(fmt, "application/octet-stream")
    # the conditional writes are the proof of "written once" (a count kept next
    # to them in Redis could not be exact: a worker can die between the two)
    if job.revise and not job.force:
        # a new version on a versioned bucket, written once per (output, fingerprint): a redelivered
        # task finds its revision already on top and writes nothing
        rt.storage.put_revision(job.out_bucket, job.out_key, out_bytes, _metadata(job, record), mime, job.revision)
        rt.storage.put_revision(job.out_bucket, job.out_key + ".json", rt.storage.json_bytes(record),
                                {"retouch-fingerprint": job.fingerprint, "retouch-revision": job.revision},
                                "application/json", job.revision)
        job.status, job.output, job.record_key = "ok", job.out_url, job.out_key + ".json"
        return
    if not rt.storage.put(job.out_bucket, job.out_key, out_bytes, _metadata(job, record), mime, overwrite=job.force):
        # already there: a redelivered task wrote it, or another writer did
        meta = rt.storage.head(job.out_bucket, job.out_key) or {}
        if meta.get("retouch-fingerprint") != job.fingerprint or meta.get("retouch-input-etag") != job.etag:
            raise RetouchError(f"output {job.out_url} was written meanwhile with other settings")
    rt.storage.put_json(job.out_bucket, job.out_key + ".json", record,
                        {"retouch-fingerprint": job.fingerprint, "retouch-revision": job.revision},
                        overwrite=job.force)
    job.status, job.output, job.record_key = "ok", job.out_url, job.out_key + ".json"


@shared_task(name="retouch.finish", bind=True, max_retries=None)
def finish(self, message: dict) -> dict:
    """End of an image's chain: record its final status once (job counts and
    metrics), drop the transient artifacts, store its manifest line for the batch."""
    return _end(runtime(), self, message)


def _end(rt: Runtime, task, message: dict, counted: bool = False) -> dict:
    """:func:`finish`'s work, in its own task or (``counted``: this delivery
    is counted already) at the end of the last segment's."""
    try:
        job = ImageJob.from_message(message)
    except JobSchemaError as exc:
        return _finish_unreadable(rt, message, str(exc))
    if job.status == "pending":
        job.fail("chain ended without an output")
    store = JobStore(rt.redis)
    if _vanished(store, job.job, f"the result of {job.key} ({job.status})"):
        return {"key": job.key, "status": job.status}
    # held until acknowledged: if this process dies, its supervisor puts it back
    _mark_current(rt, task, "finish", job)
    if not counted:
        _count_delivery(rt, task, "finish")
    try:
        line = _finish(rt, task, store, job)
    finally:
        _mark_current(rt, task, None)
    return line


def _finish(rt: Runtime, task, store: JobStore, job: ImageJob) -> dict:
    try:
        first = store.finished(job.job, job.key, job.status)
        if first:
            rt.metrics.image_finished(job.status)
        elif store.status_of(job.job, job.key) == "ok" and job.status == "skipped":
            # a completed chain that ran again (its acknowledgement was lost with a
            # killed worker) found its own output: the image is done, as first counted
            job.status, job.record_key = "ok", job.out_key + ".json"
        transient = artifacts.transient(job)
        if transient:
            rt.storage.delete(job.out_bucket, transient)
    except Exception as exc:
        if _transient(exc) and task.request.retries < rt.settings.task_max_retries:
            raise task.retry(exc=exc, countdown=min(60, 2 ** task.request.retries))
        raise
    out = lambda key: f"s3://{job.out_bucket}/{key}"  # noqa: E731
    line = {
        "key": job.key, "input": job.url, "status": job.status, "output": job.output,
        "record": out(job.record_key) if job.record_key else None,
        "variants": job.trace.variants(), "timings": job.trace.timings, "task_seconds": job.task_seconds,
        "queue": job.queue, "workers": job.workers, "error": job.error,
        "artifacts": {name: out(key) for name, key in artifacts.kept(job).items()},
    }
    if job.revise:  # a reprocess: which revision this image had, and which it has now
        line.update(previous_fingerprint=job.previous, fingerprint=job.revision)
    # the batch's part is written from these stored lines, not from the chord's
    # results: a finish delivered twice can make the chord fire one image early.
    # The line agrees with the status that counted: a repeat (an image whose
    # completed chain ran again after a lost acknowledgement, finding its own
    # output: "skipped") never replaces the first finish's line ("ok").
    store.add_line(job.job, job.batch, line, replace=first)
    return {"key": job.key, "status": job.status}  # the chord's result; the line itself is in Redis


def _finish_unreadable(rt: Runtime, message: dict, error: str) -> dict:
    """A message this worker cannot read: fail its image if it names one."""
    log.error("%s", error)
    if not all(isinstance(message.get(k), str) for k in ("job", "key", "bucket")):
        return {"status": "failed", "error": error}
    store = JobStore(rt.redis)
    if store.finished(message["job"], message["key"], "failed"):
        rt.metrics.image_finished("failed")
    store.add_line(message["job"], int(message.get("batch") or 0), {
        "key": message["key"], "input": f"s3://{message['bucket']}/{message['key']}", "status": "failed",
        "output": None, "error": error})
    return {"key": message["key"], "status": "failed"}


@shared_task(name="retouch.batch_done", bind=True, max_retries=None, ignore_result=True)
def batch_done(self, results: list, job: str, batch: int, keys: list[str] | None = None) -> dict:
    """Chord callback of one batch: write its manifest part once every image
    of the batch has its line (if the chord fired early, wait; an image still
    missing after every possible redelivery is recorded as lost, so the job
    still ends); the last batch of a sealed job writes the manifest and summary."""
    rt = runtime()
    _mark_current(rt, self, "batch_done", job_id=job)
    try:
        return _batch_done(rt, self, job, batch, keys)
    finally:
        _mark_current(rt, self, None)


def _batch_done(rt: Runtime, task, job: str, batch: int, keys: list[str]) -> dict:
    store = JobStore(rt.redis)
    if keys is None:  # submitted by a version that stores the batch's keys in Redis
        keys = store.batch_keys(job, batch)
    lines = store.batch_lines(job, batch)
    missing = [k for k in keys if k not in lines]
    patience = rt.settings.visibility_timeout * (rt.settings.max_deliveries + 1)
    if missing and task.request.retries * 2 < patience:
        log.warning("job %s batch %d: %d images not finished yet; waiting", job, batch, len(missing))
        raise task.retry(countdown=2)
    meta = store.meta(job)
    src, out = parse_url(meta["input"]), parse_url(meta["output"])
    for key in missing:
        log.error("job %s: %s never finished; recorded as lost", job, key)
        if store.finished(job, key, "failed"):
            rt.metrics.image_finished("failed")
        lines[key] = json.dumps({"key": key, "input": f"s3://{src.bucket}/{key}", "status": "failed",
                                 "output": None,
                                 "error": f"s3://{src.bucket}/{key}: lost (no result after {patience}s)"},
                                sort_keys=True)
    write_part(rt.storage, out, job, batch, lines)
    store.batch_done(job, batch)
    store.drop_lines(job, batch)
    if store.claim_finalize(job):
        return write_manifest(rt.storage, store, job)
    return {"job": job, "batch": batch, "images": len(lines)}


@shared_task(name="retouch.finalize_job", bind=True, max_retries=None, ignore_result=True)
def finalize_job(self, job: str) -> dict:
    """The job summary: manifest and summary.json (when submit sealed the job last)."""
    rt = runtime()
    _mark_current(rt, self, "finalize_job", job_id=job)
    try:
        return write_manifest(rt.storage, JobStore(rt.redis), job)
    finally:
        _mark_current(rt, self, None)


__all__ = ["run_stages", "finish", "batch_done", "finalize_job"]
