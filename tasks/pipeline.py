"""The stage tasks: thin wrappers over ``orchestration.steps``.

Every task takes and returns one JSON state dict for one image (keys, plan,
record fragments, status; built by ``orchestration.jobs.submit``). Pixels never
travel through the broker: each task reads the original and the previous
stage's arrays from S3 and writes its own arrays under the job's artifact
prefix (``confidence.npz``, ``mask.npz``, ``region.npz``: the HxW map as
``array``; ``fill.npz``, ``restored.npz``: the pixels that differ from the
input, as ``index``/``values``; all exact, read back with
``allow_pickle=False``), so the distributed output equals the embedded one
byte for byte.

A bad image never raises out of its chain: the state turns ``failed`` with a
one-line error, the later stages pass it through, and ``finish`` records it,
so the batch's chord completes and the manifest has the line. Transient
storage/broker errors are retried with backoff; a task delivered more than
``max_deliveries`` times (its worker died each time) fails its image.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import time

import numpy as np
from celery.exceptions import Retry, SoftTimeLimitExceeded

from orchestration import steps
from orchestration.jobs import JobStore, write_manifest, write_part
from orchestration.local import build_record
from orchestration.plan import Plan
from orchestration.storage import is_transient, parse_url, validate_key
from tasks import limits
from tasks.app import app
from tasks.runtime import runtime
from worker import __version__
from worker.io import Image, decode, encode
from worker.stages import Detection

log = logging.getLogger(__name__)

CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "TIFF": "image/tiff", "WEBP": "image/webp",
                 "BMP": "image/bmp"}
TRANSIENT_ARTIFACTS = ("fill", "restored")


def _redis_transient(exc: BaseException) -> bool:
    import redis

    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError))


def _url(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def _fail(state: dict, cause: str) -> dict:
    where = _url(state.get("bucket", "?"), state.get("key", "?"))
    line = " ".join(str(cause).split())
    state["status"], state["error"] = "failed", line if line.startswith(where) else f"{where}: {line}"
    return state


def _marker_ttl(rt) -> int:
    """How long delivery counts and timeout marks live: past any redelivery."""
    return rt.settings.visibility_timeout * (rt.settings.max_deliveries + 2)


def _count_delivery(rt, task, name: str) -> int:
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


def _mark_current(rt, task, name: str, state: dict | None) -> None:
    """What each worker is doing now (``retouch:worker:<host>:current``), for status and tests."""
    key = f"retouch:worker:{task.request.hostname}:current"
    if state is None:
        rt.redis.delete(key)
    else:
        rt.redis.set(key, json.dumps({"task": name, "id": task.request.id, "image": state.get("key"),
                                      "job": state.get("job"), "since": time.time()}),
                     ex=rt.settings.task_time_limit + 60)


def _run(task, name: str, body, state: dict) -> dict:
    rt = runtime()
    if state.get("status") in ("failed", "skipped"):
        return state
    # work on a copy: a retry re-sends the message's own arguments, which must
    # not carry this attempt's half-made record
    state = copy.deepcopy(state)
    deliveries = _count_delivery(rt, task, name)
    if deliveries > 1:
        log.warning("%s: %s delivered %d times (a worker was lost)", state.get("key"), name, deliveries)
    timed_out = f"retouch:timedout:{task.request.id}:{task.request.retries}"
    if deliveries > 1 and rt.redis.exists(timed_out):
        return _fail(state, f"{name} exceeded the hard time limit ({rt.settings.task_time_limit}s)")
    if deliveries > rt.settings.max_deliveries:
        return _fail(state, f"{name} delivered {deliveries} times, each time its worker was lost; giving up")
    ctx = steps.Context(image=state["key"], job=state["job"], metrics=rt.metrics, record=state["record"])
    start = time.perf_counter()
    _mark_current(rt, task, name, state)
    try:
        with limits.enforced(rt.settings.task_soft_time_limit, rt.settings.task_time_limit,
                             f"{state['key']} {name}", enabled=rt.options.enforce_limits,
                             before_kill=lambda: rt.redis.set(timed_out, 1, ex=_marker_ttl(rt))):
            state = body(state, rt, ctx)
    except Retry:
        raise
    except SoftTimeLimitExceeded:
        state = _fail(state, f"{name} exceeded the soft time limit ({rt.settings.task_soft_time_limit}s)")
    except Exception as exc:
        if (is_transient(exc) or _redis_transient(exc)) and task.request.retries < rt.settings.task_max_retries:
            log.warning("%s: %s: transient error, retrying: %s", state["key"], name, exc)
            raise task.retry(exc=exc, countdown=min(60, 2 ** task.request.retries))
        if not isinstance(exc, ValueError):
            log.exception("%s: %s failed", state["key"], name)
        state = _fail(state, f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc))
    finally:
        _mark_current(rt, task, name, None)
    state["task_seconds"][name] = round(time.perf_counter() - start, 4)
    state.setdefault("workers", {})[name] = task.request.hostname
    return state


def stage(name: str):
    """Register ``body(state, runtime, ctx) -> state`` as task ``retouch.<name>``."""
    def wrap(body):
        # the next stage gets the return value through the chain's message;
        # storing it in the result backend too would cost Redis memory per image
        @app.task(name=f"retouch.{name}", bind=True, max_retries=None, ignore_result=True)
        def task(self, state: dict) -> dict:
            return _run(self, name, body, state)
        task.body = body
        return task
    return wrap


# --- array artifacts -------------------------------------------------------

def _put_arrays(rt, state: dict, name: str, compress: bool, **arrays) -> None:
    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **{k: v for k, v in arrays.items() if v is not None})
    key = f"{state['artifacts']}/{name}.npz"
    rt.storage.put(state["out_bucket"], key, buf.getvalue(), {"retouch-job": state["job"]},
                   "application/octet-stream", overwrite=state["force"])
    state["files"][name] = key


def _save_map(rt, state: dict, name: str, array: np.ndarray) -> None:
    """A confidence map or mask (HxW, exact; zero outside the text, so it compresses fast)."""
    _put_arrays(rt, state, name, True, array=array)


def _save_pixels(rt, state: dict, name: str, base: np.ndarray, rgb: np.ndarray, alpha: np.ndarray | None) -> None:
    """``rgb`` as the pixels that differ from ``base`` (the decoded input): a
    fill touches a few percent of the image, so this is exact and small."""
    if rgb.shape != base.shape:
        _put_arrays(rt, state, name, False, rgb=rgb, alpha=alpha)
        return
    index = np.flatnonzero((rgb != base).any(axis=-1))
    _put_arrays(rt, state, name, False, index=index, values=rgb.reshape(-1, rgb.shape[-1])[index], alpha=alpha)


def _load(rt, state: dict, name: str) -> dict[str, np.ndarray]:
    data = rt.storage.get(state["out_bucket"], state["files"][name])
    with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
        return {k: loaded[k] for k in loaded.files}


def _load_map(rt, state: dict, name: str) -> np.ndarray:
    return _load(rt, state, name)["array"]


def _load_pixels(rt, state: dict, name: str, base: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    arrays = _load(rt, state, name)
    if "rgb" in arrays:
        return arrays["rgb"], arrays.get("alpha")
    rgb = base.copy()
    rgb.reshape(-1, rgb.shape[-1])[arrays["index"]] = arrays["values"]
    return rgb, arrays.get("alpha")


def _input(rt, state: dict) -> tuple[Image, bytes]:
    data = rt.storage.get(state["bucket"], state["key"])
    return decode(data, _url(state["bucket"], state["key"]), state["max_pixels"]), data


def _begin(rt, state: dict) -> dict:
    """First stage of a chain: validate keys, count the image as running, and
    skip it if its output exists with the same fingerprint and input."""
    for key in (state["key"], state["out_key"], state["artifacts"]):
        validate_key(key)
    JobStore(rt.redis).started(state["job"], state["key"])
    if state["force"]:
        return state
    meta = rt.storage.head(state["out_bucket"], state["out_key"])
    if meta is None:
        return state
    if meta.get("retouch-fingerprint") == state["fingerprint"] and meta.get("retouch-input-etag") == state["etag"]:
        state["status"] = "skipped"
        state["output"] = _url(state["out_bucket"], state["out_key"])
        return state
    return _fail(state, f"output {_url(state['out_bucket'], state['out_key'])} exists from other settings or "
                        f"another input (fingerprint {meta.get('retouch-fingerprint')}); pass --force or "
                        f"choose another --out")


def _metadata(state: dict, record: dict) -> dict[str, str]:
    """Small S3 metadata on each output (well inside the 2 KB limit); the
    details are in the per-image JSON record next to it."""
    plan = state["plan"]
    models = [f"{stage}={variant}" for stage, variant in sorted(record.get("variants", {}).items())]
    if "remove-text" in plan["ops"]:
        from worker.detect import TextDetector

        models.insert(0, f"detect={TextDetector.name}")
    return {"retouch-fingerprint": state["fingerprint"], "retouch-version": __version__,
            "retouch-seed": str(plan["seed"]), "retouch-ops": ",".join(plan["ops"]),
            "retouch-models": ";".join(models)[:512], "retouch-input-etag": state["etag"],
            "retouch-job": state["job"]}


def _write_output(rt, state: dict, original: Image, data: bytes, result: Image, ctx) -> dict:
    plan = Plan(**state["plan"])
    out_bytes = encode(result, plan.format, plan.quality)
    fmt = (plan.format or original.format).upper()
    fmt = {"JPG": "JPEG", "TIF": "TIFF"}.get(fmt, fmt)
    record = build_record(original, plan, ctx.record)
    record["input"].update({"url": _url(state["bucket"], state["key"]), "etag": state["etag"],
                            "sha256": hashlib.sha256(data).hexdigest()})
    out_url = _url(state["out_bucket"], state["out_key"])
    record["output"] = {"url": out_url, "sha256": hashlib.sha256(out_bytes).hexdigest(),
                        "width": result.size[0], "height": result.size[1], "format": fmt}
    record["job"] = state["job"]
    metadata = _metadata(state, record)
    store = JobStore(rt.redis)
    if rt.storage.put(state["out_bucket"], state["out_key"], out_bytes, metadata,
                      CONTENT_TYPES.get(fmt, "application/octet-stream"), overwrite=state["force"]):
        store.wrote_output(state["job"], state["key"])
    else:  # already there: a redelivered task wrote it, or another writer did
        meta = rt.storage.head(state["out_bucket"], state["out_key"]) or {}
        if meta.get("retouch-fingerprint") != state["fingerprint"] or meta.get("retouch-input-etag") != state["etag"]:
            raise ValueError(f"output {out_url} was written meanwhile with other settings")
    rt.storage.put_json(state["out_bucket"], state["out_key"] + ".json", record,
                        {"retouch-fingerprint": state["fingerprint"]}, overwrite=state["force"])
    state["status"], state["output"] = "ok", out_url
    state["record_key"] = state["out_key"] + ".json"
    return state


# --- stages ----------------------------------------------------------------

@stage("detect")
def detect(state: dict, rt, ctx) -> dict:
    state = _begin(rt, state)
    if state["status"] != "pending":
        return state
    img, _ = _input(rt, state)
    detection = steps.detect(img.rgb, Plan(**state["plan"]), rt.cache, ctx)
    _save_map(rt, state, "confidence", detection.confidence)
    _save_map(rt, state, "mask", detection.soft)
    _save_map(rt, state, "region", detection.binary)
    return state


@stage("inpaint")
def inpaint(state: dict, rt, ctx) -> dict:
    img, _ = _input(rt, state)
    region = _load_map(rt, state, "region")
    detection = Detection(None, None, region, region, ctx.record["mask"])
    filled, alpha, decision = steps.inpaint(img.rgb, img.alpha, detection, Plan(**state["plan"]), ctx)
    if decision.variant != "none":
        _save_pixels(rt, state, "fill", img.rgb, filled, alpha)
    return state


@stage("postprocess")
def postprocess(state: dict, rt, ctx) -> dict:
    img, data = _input(rt, state)
    plan = Plan(**state["plan"])
    rgb, alpha = img.rgb, img.alpha
    if "fill" in state["files"]:
        filled, alpha = _load_pixels(rt, state, "fill", img.rgb)
        region = _load_map(rt, state, "region")
        detection = Detection(None, _load_map(rt, state, "mask"), region, region, ctx.record["mask"])
        rgb = steps.postprocess(img.rgb, filled, detection, ctx)
        if "upscale" in plan.ops:
            _save_pixels(rt, state, "restored", img.rgb, rgb, alpha)
    if "upscale" in plan.ops:
        return state
    return _write_output(rt, state, img, data, img.with_pixels(rgb, alpha), ctx)


@stage("upscale")
def upscale(state: dict, rt, ctx) -> dict:
    plan = Plan(**state["plan"])
    if "remove-text" not in plan.ops:
        state = _begin(rt, state)
        if state["status"] != "pending":
            return state
    img, data = _input(rt, state)
    rgb, alpha = img.rgb, img.alpha
    if "restored" in state["files"]:
        rgb, alpha = _load_pixels(rt, state, "restored", img.rgb)
    rgb, alpha, _ = steps.upscale(rgb, alpha, plan, rt.cache, ctx)
    return _write_output(rt, state, img, data, img.with_pixels(rgb, alpha), ctx)


@app.task(name="retouch.finish", bind=True, max_retries=None)
def finish(self, state: dict) -> dict:
    """End of an image's chain: record its final status once (job counts and
    metrics), drop the transient arrays, store its manifest line for the batch."""
    rt = runtime()
    status = state.get("status", "failed")
    if status == "pending":
        state = _fail(state, "chain ended without an output")
        status = "failed"
    try:
        if JobStore(rt.redis).finished(state["job"], state["key"], status):
            rt.metrics.image_finished(status)
        transient = [state["files"][n] for n in TRANSIENT_ARTIFACTS if n in state.get("files", {})]
        if transient:
            rt.storage.delete(state["out_bucket"], transient)
    except Exception as exc:
        if (is_transient(exc) or _redis_transient(exc)) and self.request.retries < rt.settings.task_max_retries:
            raise self.retry(exc=exc, countdown=min(60, 2 ** self.request.retries))
        raise
    record = state.get("record", {})
    line = {
        "key": state["key"], "input": _url(state["bucket"], state["key"]), "status": status,
        "output": state.get("output"),
        "record": _url(state["out_bucket"], state["record_key"]) if state.get("record_key") else None,
        "variants": {d["stage"]: d["variant"] for d in record.get("decisions", [])},
        "timings": record.get("timings", {}), "task_seconds": state.get("task_seconds", {}),
        "queue": state.get("queue"), "workers": state.get("workers", {}), "error": state.get("error"),
        "artifacts": {k: _url(state["out_bucket"], v) for k, v in state.get("files", {}).items()
                      if k not in TRANSIENT_ARTIFACTS},
    }
    # the batch's part is written from these stored lines, not from the chord's
    # results: a finish delivered twice can make the chord fire one image early
    JobStore(rt.redis).add_line(state["job"], state.get("batch", 0), line)
    return {"key": line["key"], "status": status}  # the chord's result; the line itself is in Redis


@app.task(name="retouch.batch_done", bind=True, max_retries=None, ignore_result=True)
def batch_done(self, results: list, job: str, batch: int, keys: list[str]) -> dict:
    """Chord callback of one batch: write its manifest part once every image
    of the batch has its line (if the chord fired early, wait; an image still
    missing after every possible redelivery is recorded as lost, so the job
    still ends); the last batch of a sealed job writes the manifest and summary."""
    rt = runtime()
    store = JobStore(rt.redis)
    lines = store.batch_lines(job, batch)
    missing = [k for k in keys if k not in lines]
    patience = rt.settings.visibility_timeout * (rt.settings.max_deliveries + 1)
    if missing and self.request.retries * 2 < patience:
        log.warning("job %s batch %d: %d images not finished yet; waiting", job, batch, len(missing))
        raise self.retry(countdown=2)
    meta = store.meta(job)
    src, out = parse_url(meta["input"]), parse_url(meta["output"])
    for key in missing:
        log.error("job %s: %s never finished; recorded as lost", job, key)
        if store.finished(job, key, "failed"):
            rt.metrics.image_finished("failed")
        lines[key] = json.dumps({"key": key, "input": _url(src.bucket, key), "status": "failed", "output": None,
                                 "error": f"{_url(src.bucket, key)}: lost (no result after {patience}s)"},
                                sort_keys=True)
    write_part(rt.storage, out, job, batch, lines)
    store.batch_done(job, batch)
    store.drop_lines(job, batch)
    if store.claim_finalize(job):
        return write_manifest(rt.storage, store, job)
    return {"job": job, "batch": batch, "images": len(lines)}


@app.task(name="retouch.finalize_job", bind=True, max_retries=None, ignore_result=True)
def finalize_job(self, job: str) -> dict:
    """The job summary: manifest and summary.json (when submit sealed the job last)."""
    rt = runtime()
    return write_manifest(rt.storage, JobStore(rt.redis), job)


__all__ = ["detect", "inpaint", "postprocess", "upscale", "finish", "batch_done", "finalize_job"]
