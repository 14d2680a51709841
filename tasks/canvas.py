"""Submitting a job: the tasks of each image, built from the stage graph.

``submit`` lists the input prefix page by page and enqueues the images in
chord batches (``batch_size`` images each), so millions of keys never sit in
memory. An image is one ``retouch.stages`` task per segment of
``worker.pipeline.graph`` (consecutive stages on the same queue), then
``retouch.finish``, chained: heavy segments go to the image's ``gpu.<i>``
queue, so the models loaded there are reused; light ones to ``cpu``. Finish
runs on ``cpu`` too, so where the last segment does, it is that task's last
step (with no GPU queue an image is one task). Messages carry the image job
(keys and a small JSON state), never pixels.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from celery import Celery, chain, chord, group

from orchestration.jobs import JobStore, artifact_prefix, list_images, output_key
from orchestration.storage import Storage, StorageError, overlaps, parse_url
from tasks.app import CPU_QUEUE
from worker.pipeline import graph
from worker.pipeline.job import ImageJob, JobSchemaError
from worker.pipeline.plan import Plan

log = logging.getLogger(__name__)


@dataclass
class Submitted:
    job: str
    images: int
    batches: int
    queues: list[str]


def image_chain(app: Celery, job: ImageJob):
    """The tasks of one image: a ``retouch.stages`` task per segment, then
    finish, which runs on the ``cpu`` queue. By the segments' rule (consecutive
    steps on one queue are one task) finish joins the last segment's task when
    that runs on ``cpu`` too (no GPU queue, or a light last stage): then an
    image is a single task, not a chain, which cuts what submit spends per
    image by a third (Celery clones and links every chain: 1,768 -> 2,711
    images/s at 100k) and saves a message and a task per image in the workers."""
    def queue(stage: graph.Stage) -> str:
        return job.queue if stage.heavy else CPU_QUEUE

    segments = graph.segments(graph.stages_for(job.plan), queue)
    sigs = [app.signature("retouch.stages", args=([s.name for s in segment],), queue=queue(segment[0]))
            for segment in segments]
    if queue(segments[-1][0]) == CPU_QUEUE:
        sigs[-1].kwargs = {"finish": True}
    else:
        sigs.append(app.signature("retouch.finish", queue=CPU_QUEUE))
    sigs[0].args = (compact_message(job),) + tuple(sigs[0].args)
    # the header Celery writes for monitors (a repr of the args, up to 1 KB) names the image instead
    sigs[0].set(argsrepr=repr(job.key), kwargsrepr="", compression="zlib")
    return sigs[0] if len(sigs) == 1 else chain(*sigs)


def compact_message(job: ImageJob) -> dict:
    """The image job as its first task carries it: the per-image state still at
    its defaults (status, artifacts, trace...) is left out, ``ImageJob.from_message``
    fills it in again. The plan, the same for every image of the job, is left
    out too: it is stored whole once with the job (``JobStore`` meta, defaults
    included, so a worker of another version never reads it with its own
    defaults) and the worker puts it back (``with_plan``), checked against the
    message's fingerprint. The schema version always goes."""
    state = job.model_dump(mode="json", exclude_defaults=True, exclude={"plan"})
    return {"schema_version": job.schema_version, **state}


def with_plan(message: dict, plan: dict | None, fingerprint: str | None) -> dict:
    """A first-task message with its job's stored ``plan`` put back (unchanged
    when it carries its own, or when the job's state is gone: ``plan`` None).
    Raises JobSchemaError when the stored plan is not the one the message was
    made with (its ``fingerprint`` differs)."""
    if not isinstance(message, dict) or "plan" in message or plan is None:
        return message
    if fingerprint != message.get("fingerprint"):
        raise JobSchemaError(f"s3://{message.get('bucket', '?')}/{message.get('key', '?')}: the task's plan "
                             f"fingerprint {message.get('fingerprint')} is not its job's ({fingerprint})")
    return {**message, "plan": plan}


def submit(app: Celery, storage: Storage, store: JobStore, src_url: str, out_url: str, plan: Plan, *,
           batch_size: int = 100, queues: list[str] | None = None, force: bool = False,
           max_pixels: int = 100_000_000, job: str | None = None,
           only: dict[str, str | None] | None = None, revise: bool = False) -> Submitted:
    """Enqueue every image under ``src_url`` (with ``only``, just those input
    keys, each mapped to its output's previous fingerprint; with ``revise``,
    an existing output gets a new version: ``tasks.reprocess``). Raises
    StorageError if the prefixes overlap (originals are never overwritten) or a URL is invalid."""
    src, out = parse_url(src_url), parse_url(out_url)
    if overlaps(src, out):
        raise StorageError(f"output {out} overlaps input {src}: originals are never overwritten; "
                           f"choose a separate output prefix")
    plan = plan.model_copy(update={"device": "auto"})  # each worker computes on its own device
    job = job or uuid.uuid4().hex[:12]
    fingerprint = plan.fingerprint()
    heavy = list(queues or []) or [CPU_QUEUE]
    store.create(job, {"created": time.time(), "input": str(src), "output": str(out), "plan": plan.model_dump(mode="json"),
                       "fingerprint": fingerprint, "sealed": False, "batches": 0, "queues": heavy,
                       "manifest": None, "finished_at": None})
    store.add_queued(job, 0)
    n = batches = 0
    pending: list[ImageJob] = []

    def flush():
        nonlocal batches, pending
        if not pending:
            return
        for image in pending:
            image.batch = batches
        header = group([image_chain(app, image) for image in pending])
        # the batch's keys go to Redis once, not into the callback: with the Redis
        # backend every header message carries the callback (batch_size² keys)
        store.set_batch_keys(job, batches, [image.key for image in pending])
        callback = app.signature("retouch.batch_done", args=(job, batches), queue=CPU_QUEUE)
        store.add_queued(job, len(pending))
        store.set_meta(job, batches=batches + 1)
        chord(header)(callback)
        batches += 1
        pending = []

    for obj in list_images(storage, src):
        if only is not None and obj["Key"] not in only:
            continue
        pending.append(ImageJob(
            job=job, bucket=src.bucket, key=obj["Key"], etag=obj["ETag"], out_bucket=out.bucket,
            out_key=output_key(src, out, obj["Key"], plan.format),
            artifact_prefix=artifact_prefix(out, job, src, obj["Key"]), plan=plan, fingerprint=fingerprint,
            force=force, max_pixels=max_pixels, queue=heavy[n % len(heavy)], revise=revise,
            previous=only.get(obj["Key"]) if only else None))
        n += 1
        if len(pending) >= batch_size:
            flush()
    flush()
    store.set_meta(job, sealed=True, batches=batches, images=n)
    if store.claim_finalize(job):  # nothing to do, or every batch already finished
        app.signature("retouch.finalize_job", args=(job,), queue=CPU_QUEUE).apply_async()
    log.info("job %s: %d images in %d batches over %s", job, n, batches, ", ".join(heavy))
    return Submitted(job, n, batches, heavy)
