"""``retouch submit --watermark learned``: the job's learning step, a chord.

A sample of the input prefix (``worker.watermark.shares.sample``: up to 40
keys, the smallest sha256, so the same prefix gives the same sample) is read
by the header tasks (``retouch.learn_share``: one image each, decoded, its
share stored as ``.npz`` under ``<out>/_retouch/jobs/<job>/learn/``); the
body (``retouch.learn_solve``) solves the mark and its alpha from the shares
(``worker.watermark.shares.solve``) and stores the RGBA PNG and its JSON
under ``<out>/_retouch/watermarks/<sha256 of both>/``, then records the
result for the job (``retouch:job:<job>:learned``; submit copies it into the
job's meta and the summary names it). The template's key is content
addressed: the plan names it, and the plan's fingerprint decides whether a
re-submit may skip an output, so a re-submit that learns the same mark keeps
the fingerprint (a key per job would change it every time).

Order: ``submit`` waits (bounded, printing progress) for the chord before it
enqueues any image (:func:`learn_for_job`). Every image's message carries the
plan's fingerprint, and the plan is stored once with the job, so the plan
must name the learned template before the first image is enqueued; waiting
keeps the listing and enqueueing in one place (``tasks.canvas.submit``), lets
submit say in one line why a sample could not be learned from and go on
without the mark, and costs a few seconds (40 decodes spread over the
workers, one solve). Having the chord body start the enqueue instead would
move the whole listing into a worker task.

Every image's chain then fetches the template from S3 once per worker process
(:func:`prefetch`, into the process's ``ModelCache``), checked to be a PNG
under the job's own output bucket and ``_retouch/watermarks/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path, PurePosixPath

import redis
from celery import Celery, chord, group, shared_task

from orchestration.jobs import JobStore, job_prefix, list_images
from orchestration.storage import Storage, StorageError, is_transient, join, overlaps, parse_url, validate_key
from tasks.app import CPU_QUEUE
from tasks.runtime import Runtime, runtime
from worker.errors import RetouchError
from worker.io import decode
from worker.pipeline.job import ImageJob
from worker.pipeline.plan import LEARNED, Plan, is_remote
from worker.watermark import Template, WatermarkError, load_template
from worker.watermark.shares import SAMPLE, TEMPLATE, common_size, read_share, sample, share_bytes, solve

log = logging.getLogger(__name__)

WATERMARK_DIR = "_retouch/watermarks"
RESULT_TTL = 24 * 3600
TIMEOUT = 600.0   # seconds submit waits for the learning step (--learn-timeout)


def _result_key(job: str) -> str:
    return JobStore.k(job, "learned")


def _read_key(job: str) -> str:
    return JobStore.k(job, "learn_read")


# --- the chord ----------------------------------------------------------------

@shared_task(name="retouch.learn_share", bind=True, max_retries=None)
def learn_share(self, job: str, bucket: str, key: str, out_bucket: str, share_key: str, max_pixels: int) -> dict:
    """Header: read one sampled image, store its share. Never raises (a failed
    header would stop the chord): an unreadable image is left out, as ``run`` does."""
    rt = runtime()
    try:
        img = decode(rt.storage.get(bucket, key), f"s3://{bucket}/{key}", max_pixels)
        rt.storage.put(out_bucket, share_key, share_bytes(img.rgb), {"retouch-job": job},
                       "application/octet-stream", overwrite=True)
        result = {"key": key, "share": share_key, "size": list(img.size)}
    except Exception as exc:
        if _transient(exc) and self.request.retries < rt.settings.task_max_retries:
            raise self.retry(exc=exc, countdown=min(60, 2 ** self.request.retries))
        if not isinstance(exc, RetouchError):
            log.exception("job %s: learning share of %s failed", job, key)
        result = {"key": key, "error": str(exc) if isinstance(exc, RetouchError) else f"{type(exc).__name__}: {exc}"}
    _progress(rt, job)
    return result


@shared_task(name="retouch.learn_solve", bind=True, max_retries=None, ignore_result=True)
def learn_solve(self, shares: list, job: str, source: str, out_url: str) -> dict:
    """Body: solve the mark from the shares, store it, record the result for
    the job (``{"template": s3 url, ...}`` or ``{"error": one line}``)."""
    rt = runtime()
    out = parse_url(out_url)
    try:
        result = _solve(rt, shares, source, out)
    except Exception as exc:
        if _transient(exc) and self.request.retries < rt.settings.task_max_retries:
            raise self.retry(exc=exc, countdown=min(60, 2 ** self.request.retries))
        if not isinstance(exc, RetouchError):
            log.exception("job %s: learning the watermark failed", job)
        result = {"error": str(exc) if isinstance(exc, RetouchError) else f"{type(exc).__name__}: {exc}"}
    rt.redis.set(_result_key(job), json.dumps(result), ex=RESULT_TTL)
    try:
        rt.storage.delete(out.bucket, [s["share"] for s in shares if isinstance(s, dict) and s.get("share")])
    except Exception:   # the shares are transient; a leftover is only space
        log.warning("job %s: could not delete the learning shares", job, exc_info=True)
    return result


def _solve(rt: Runtime, shares: list, source: str, out) -> dict:
    read = sorted((s for s in shares if isinstance(s, dict) and s.get("share")), key=lambda s: s["key"])
    skipped = len(shares) - len(read)
    size = common_size([tuple(s["size"]) for s in read])
    used = [s for s in read if tuple(s["size"]) == size]   # learn() keeps the most common size anyway
    images = [read_share(rt.storage.get(out.bucket, s["share"]), s["share"]) for s in used]
    src = parse_url(source)
    png, info = solve([f"s3://{src.bucket}/{s['key']}" for s in used], images,
                      f"{source} (a sample of {len(read)} images{f', {skipped} unreadable' if skipped else ''})")
    blob = json.dumps(info).encode()
    digest = hashlib.sha256(png + blob).hexdigest()[:16]
    key = join(out.prefix, WATERMARK_DIR, digest, TEMPLATE)
    # content addressed: an object already there holds the same bytes
    rt.storage.put(out.bucket, key, png, {"retouch-watermark": digest}, "image/png")
    rt.storage.put(out.bucket, key[:-len(".png")] + ".json", blob, {"retouch-watermark": digest}, "application/json")
    box = info["box"]
    return {"template": f"s3://{out.bucket}/{key}", "json": f"s3://{out.bucket}/{key[:-len('.png')]}.json",
            "images": len(info["images"]), "sampled": len(shares), "alpha_max": info["alpha_max"],
            "size": info["size"], "box": box, "edge_strength": info["edge_strength"]}


def _progress(rt: Runtime, job: str) -> None:
    pipe = rt.redis.pipeline()
    pipe.incr(_read_key(job))
    pipe.expire(_read_key(job), RESULT_TTL)
    pipe.execute()


def _transient(exc: BaseException) -> bool:
    return is_transient(exc) or isinstance(exc, (redis.ConnectionError, redis.TimeoutError))


# --- submit's side ------------------------------------------------------------

def learn_for_job(app: Celery, storage: Storage, store: JobStore, src_url: str, out_url: str, plan: Plan, job: str,
                  *, max_pixels: int, timeout: float = TIMEOUT, size: int = SAMPLE, say=None) -> Plan:
    """``--watermark learned`` on a cluster job: learn the mark from a sample
    of ``src_url`` (the chord above), wait for it (at most ``timeout`` s,
    printing progress through ``say``) and return the plan naming the learned
    template in S3 instead of ``learned``. A sample too small or too varied
    gets one line and the plan goes on without it. Raises RetouchError when
    no result comes in time (no worker consumes the cpu queue?)."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    if LEARNED not in plan.watermarks:
        return plan
    src, out = parse_url(src_url), parse_url(out_url)
    if overlaps(src, out):   # refused by canvas.submit too; before any work here
        raise StorageError(f"output {out} overlaps input {src}: originals are never overwritten; "
                           f"choose a separate output prefix")
    keys = sample((obj["Key"] for obj in list_images(storage, src)), size)
    if not keys:
        say(f"--watermark learned: {src}: no images to learn a watermark from; going on without it")
        return _without(plan)
    learn_dir = join(job_prefix(out, job), "learn")
    header = group(app.signature("retouch.learn_share", queue=CPU_QUEUE, args=(
        job, src.bucket, key, out.bucket, join(learn_dir, f"{i:03d}.npz"), max_pixels)) for i, key in enumerate(keys))
    chord(header)(app.signature("retouch.learn_solve", args=(job, str(src), str(out)), queue=CPU_QUEUE))
    say(f"--watermark learned: learning the shared mark from {len(keys)} sampled images (job {job})")
    result = _wait(store, job, len(keys), timeout, say)
    if "error" in result:
        say(f"--watermark learned: {result['error']}; going on without it")
        return _without(plan)
    store.set_meta(job, watermark=result)   # the job's meta (merged by store.create) and its summary
    say(f"--watermark learned: learned from {result['images']} images -> {result['template']}")
    return plan.model_copy(update={"watermarks": [result["template"] if w == LEARNED else w
                                                  for w in plan.watermarks]})


def _without(plan: Plan) -> Plan:
    return plan.model_copy(update={"watermarks": [w for w in plan.watermarks if w != LEARNED]})


def _wait(store: JobStore, job: str, total: int, timeout: float, say) -> dict:
    deadline = time.monotonic() + timeout
    shown = -1
    while True:
        raw = store.redis.get(_result_key(job))
        if raw is not None:
            return json.loads(raw)
        read = int(store.redis.get(_read_key(job)) or 0)
        if read != shown:
            shown = read
            say(f"--watermark learned: {read}/{total} images read" + (", solving" if read >= total else ""))
        if time.monotonic() > deadline:
            raise WatermarkError(f"--watermark learned: no learned watermark after {timeout:g}s ({shown}/{total} "
                                 f"sampled images read): are workers consuming the {CPU_QUEUE} queue?")
        time.sleep(0.2)


# --- every image's chain ------------------------------------------------------

def prefetch(rt: Runtime, job: ImageJob) -> None:
    """Fetch the plan's learned templates from S3 into this process's cache
    (once per process and template), for the watermark stage."""
    for url in job.plan.watermarks:
        if is_remote(url):
            _check(url, job)
            rt.cache.get("watermark", "learned", lambda url=url: fetch_template(rt.storage, url), key=(url,))


def _check(url: str, job: ImageJob) -> None:
    target = parse_url(url)
    validate_key(target.prefix)
    if target.bucket != job.out_bucket or f"/{WATERMARK_DIR}/" not in "/" + target.prefix:
        raise WatermarkError(f"{url}: a learned watermark must lie in the job's output bucket under "
                             f"{WATERMARK_DIR}/")


def fetch_template(storage: Storage, url: str) -> Template:
    """The template at ``url`` (its JSON next to it gives the learned position), named by its URL."""
    target = parse_url(url)
    png = storage.get(target.bucket, target.prefix)
    name = PurePosixPath(target.prefix).name
    with tempfile.TemporaryDirectory(prefix="retouch-watermark-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(png)
        if storage.head(target.bucket, target.prefix[:-len(".png")] + ".json") is not None:
            path.with_suffix(".json").write_bytes(storage.get(target.bucket, target.prefix[:-len(".png")] + ".json"))
        template = load_template(path)
    return replace(template, name=url)
