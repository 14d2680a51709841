"""Asynchronous jobs over an S3 prefix: what ``retouch submit`` does, over HTTP.

- ``POST /v1/jobs`` ``{"input": "s3://b/raw", "output": "s3://b/restored",
  "plan": {...Plan fields...}}`` checks the request (plan, URLs, the input
  bucket reachable), answers ``202`` with ``Location: /v1/jobs/<id>`` at once,
  and enqueues the images in the background (``tasks.canvas.submit``: the
  same chains, batches and manifest as the CLI). An ``Idempotency-Key``
  header makes a retried POST return the job the first one made (24 h by
  default); the same key with another body is refused (422).
- ``GET /v1/jobs/<id>``: state (submitting, queued, running, finished,
  cancelling, cancelled, failed), counts, progress, throughput and, once
  finished, the manifest (``s3://`` URL and ``/v1/jobs/<id>/manifest``).
- ``DELETE /v1/jobs/<id>``: cancel. The job is marked cancelled in Redis; each
  of its tasks still queued is consumed and drops its image at once ("job
  ... was cancelled") instead of computing, and a task already computing
  finishes its image. The job drains, writes its manifest and ends
  ``cancelled``. (Celery's revoke would leave the batch chords waiting forever
  and the job without a manifest.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid

import anyio
import redis
from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from orchestration.api.access import require_access
from orchestration.api.errors import ApiError
from orchestration.api.state import ApiState
from orchestration.jobs import FINISHED_JOB_TTL, JobStatus, UnknownJob, gpu_queues, status
from orchestration.storage import StorageError, overlaps, parse_url
from tasks.canvas import submit
from worker.errors import PlanError, RetouchError
from worker.pipeline.plan import Plan, make_plan

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", dependencies=[Depends(require_access)], tags=["jobs"])

SUBMISSION = "retouch:api:submission:"     # + job id -> JSON {state, error, created}
IDEMPOTENCY = "retouch:api:idempotency:"   # + sha256(key) -> JSON {job, request}
JOB_ID = r"^[A-Za-z0-9_-]{1,64}$"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


class JobRequest(BaseModel):
    """A job: every image under ``input``, restored under ``output``."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(description="s3://bucket/prefix of the originals", examples=["s3://archive/raw"])
    output: str = Field(description="s3://bucket/prefix for the outputs (separate from input)",
                        examples=["s3://archive/restored"])
    plan: dict = Field(default_factory=dict, description="Plan fields, as `retouch submit`'s flags: ops, scale, "
                                                         "mask_type, mask_sigma, seed, inpaint, upscale, ...",
                       examples=[{"ops": ["remove-text"], "mask_type": "soft", "mask_sigma": 4, "seed": 4412}])
    force: bool = Field(False, description="redo (and overwrite) outputs that already exist")
    batch_size: int | None = Field(None, ge=1, le=10_000, description="images per chord batch")
    gpu_queues: int | None = Field(None, ge=0, le=256, description="spread heavy stages over gpu.0..gpu.N-1")
    max_pixels: int | None = Field(None, ge=1, description="refuse larger images")


def _state(request: Request) -> ApiState:
    return request.app.state.retouch


def _plan(st: ApiState, fields: dict) -> Plan:
    unknown = sorted(set(fields) - set(Plan.model_fields) - {"device"})
    if unknown:
        raise PlanError(f"plan: unknown field(s) {', '.join(unknown)}; known: {', '.join(Plan.model_fields)}")
    return make_plan(st.settings.model_dir, **{k: v for k, v in fields.items() if k != "device"})


def _check_input(st: ApiState, url: str) -> None:
    """One listing request: the bucket exists and the credentials work (422 /
    503 now, rather than a job that fails later)."""
    from botocore.exceptions import BotoCoreError, ClientError

    src = parse_url(url)
    try:
        st.storage.client.list_objects_v2(Bucket=src.bucket, Prefix=src.prefix, MaxKeys=1)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404"):
            raise StorageError(f"{url}: no such bucket {src.bucket!r}") from None
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            raise StorageError(f"{url}: access denied ({code}); check the server's S3 credentials") from None
        raise ApiError(503, f"storage error listing {url}: {code or exc}") from None
    except BotoCoreError as exc:
        raise ApiError(503, f"storage unreachable ({type(exc).__name__}); try again later") from None


def _request_hash(body: JobRequest, plan: Plan) -> str:
    canonical = {**body.model_dump(exclude={"plan"}), "plan": plan.model_dump(exclude={"device"})}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def _claim_key(st: ApiState, key: str, job: str, digest: str) -> str | None:
    """Bind the Idempotency-Key to ``job``; returns the job it was already bound
    to (same request), or None if it is new. 422 if bound to another request."""
    if not _KEY.match(key):
        raise ApiError(422, "Idempotency-Key must be 1-255 visible ASCII characters")
    name = IDEMPOTENCY + hashlib.sha256(key.encode()).hexdigest()
    value = json.dumps({"job": job, "request": digest})
    for _ in range(2):  # the key may expire between the two calls: then claim it again
        if st.redis.set(name, value, nx=True, ex=st.settings.api_idempotency_ttl):
            return None
        raw = st.redis.get(name)
        if raw is None:
            continue
        previous = json.loads(raw)
        if previous["request"] != digest:
            raise ApiError(422, f"Idempotency-Key already used for another request (job {previous['job']}); "
                                "use a new key for a new job")
        return previous["job"]
    raise ApiError(503, "could not claim the Idempotency-Key; try again")


def _set_submission(st: ApiState, job: str, **values) -> None:
    key = SUBMISSION + job
    current = json.loads(st.redis.get(key) or "{}")
    st.redis.set(key, json.dumps({**current, **values}), ex=FINISHED_JOB_TTL)


def _submission(st: ApiState, job: str) -> dict | None:
    raw = st.redis.get(SUBMISSION + job)
    return json.loads(raw) if raw else None


def _submit(st: ApiState, body: JobRequest, plan: Plan, job: str) -> None:
    """Enqueue the job's images (background thread); its outcome goes to Redis."""
    settings = st.settings
    try:
        queues = ([f"gpu.{i}" for i in range(body.gpu_queues)] if body.gpu_queues is not None
                  else [f"gpu.{i}" for i in range(settings.api_gpu_queues)] if settings.api_gpu_queues is not None
                  else gpu_queues(st.redis, settings.gpu_queues))
        done = submit(st.celery, st.storage, st.store, body.input, body.output, plan,
                      batch_size=body.batch_size or settings.batch_size, queues=queues, force=body.force,
                      max_pixels=body.max_pixels or settings.max_pixels, job=job)
        _set_submission(st, job, state="submitted", images=done.images, batches=done.batches, queues=done.queues)
        log.info("job %s submitted over HTTP: %d images", job, done.images)
    except RetouchError as exc:
        _set_submission(st, job, state="failed", error=str(exc))
    except Exception as exc:  # a bug, or the broker gone mid-submit: the job says so
        log.exception("job %s: submission failed", job)
        _set_submission(st, job, state="failed", error=f"submission failed: {type(exc).__name__}: {exc}")


def _view(st: ApiState, job: str) -> dict:
    """The job as GET /v1/jobs/<id> shows it. Raises UnknownJob."""
    sub = _submission(st, job)
    try:
        s: JobStatus | None = status(st.store, job)
    except UnknownJob:
        if sub is None:
            raise
        s = None
    meta = st.store.meta(job) if s is not None else {}
    if sub and sub.get("state") == "failed":
        state = "failed"
    elif s is None or not s.sealed:
        state = "submitting"
    elif s.cancelled:
        state = "cancelled" if s.finished else "cancelling"
    elif s.finished:
        state = "finished"
    else:
        state = "running" if (s.running or s.completed) else "queued"
    total, completed = (s.total, s.completed) if s else (0, 0)
    progress = {"total": total, "queued": s.queued if s else 0, "running": s.running if s else 0,
                "ok": s.done if s else 0, "failed": s.failed if s else 0, "skipped": s.skipped if s else 0,
                "completed": completed,
                "fraction": round(completed / total, 4) if total else (1.0 if s and s.finished else 0.0)}
    links = {"self": f"/v1/jobs/{job}"}
    if s is not None and s.manifest:
        links["manifest"] = f"/v1/jobs/{job}/manifest"
    return {"id": job, "state": state, "input": meta.get("input") or (sub or {}).get("input"),
            "output": meta.get("output") or (sub or {}).get("output"), "fingerprint": meta.get("fingerprint"),
            "progress": progress, "images_per_minute": round(s.throughput * 60, 2) if s else 0.0,
            "elapsed_seconds": round(s.elapsed, 3) if s else 0.0, "manifest": s.manifest if s else None,
            "error": (sub or {}).get("error"), "links": links}


def _accepted(job: str, view: dict, replayed: bool = False) -> JSONResponse:
    headers = {"Location": f"/v1/jobs/{job}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(view, status_code=202, headers=headers)


@router.post("", status_code=202, summary="Submit a job: every image under an S3 prefix",
             responses={202: {"description": "accepted; Location names the job"},
                        422: {"description": "bad plan or URL, no such bucket, or a reused Idempotency-Key"},
                        503: {"description": "broker or storage unreachable"}})
async def create_job(request: Request, body: JobRequest,
                     idempotency_key: str | None = Header(None, alias="Idempotency-Key")):
    st = _state(request)

    def work():
        plan = _plan(st, body.plan)
        src, out = parse_url(body.input), parse_url(body.output)
        if overlaps(src, out):
            raise StorageError(f"output {out} overlaps input {src}: originals are never overwritten; "
                               f"choose a separate output prefix")
        job = uuid.uuid4().hex[:12]
        _check_input(st, body.input)
        if idempotency_key is not None:
            previous = _claim_key(st, idempotency_key, job, _request_hash(body, plan))
            if previous is not None:
                return previous, True
        _set_submission(st, job, state="submitting", created=time.time(), input=str(src), output=str(out))
        st.submitters.submit(_submit, st, body, plan, job)
        return job, False

    job, replayed = await _blocking(st, work)
    return _accepted(job, await _blocking(st, _view, st, job), replayed)


@router.get("/{job_id}", summary="A job's state, progress and manifest")
async def get_job(request: Request, job_id: str = Path(pattern=JOB_ID)):
    st = _state(request)
    return await _blocking(st, _view, st, job_id)


@router.delete("/{job_id}", status_code=202, summary="Cancel a job: its queued images are dropped")
async def cancel_job(request: Request, job_id: str = Path(pattern=JOB_ID)):
    st = _state(request)

    def work():
        view = _view(st, job_id)
        if view["state"] in ("finished", "failed"):
            raise ApiError(409, f"job {job_id} is already {view['state']}; nothing to cancel")
        if view["state"] == "submitting" and not st.store.meta(job_id):
            st.store.set_meta(job_id, created=time.time())  # the submitter's create() keeps the mark
        st.store.cancel(job_id)
        return _view(st, job_id)

    return JSONResponse(await _blocking(st, work), status_code=202)


@router.get("/{job_id}/manifest", summary="The finished job's manifest (JSON Lines, one line per image)",
            response_class=Response, responses={200: {"content": {"application/x-ndjson": {}}},
                                                409: {"description": "not finished yet"}})
async def get_manifest(request: Request, job_id: str = Path(pattern=JOB_ID)):
    st = _state(request)

    def work() -> bytes:
        view = _view(st, job_id)
        if not view["manifest"]:
            raise ApiError(409, f"job {job_id} is {view['state']}: its manifest is written when it finishes")
        url = parse_url(view["manifest"])
        return st.storage.get(url.bucket, url.prefix)

    return Response(await _blocking(st, work), media_type="application/x-ndjson")


async def _blocking(st: ApiState, fn, *args):
    """Redis and S3 calls off the event loop (they block), with broker trouble as 503."""
    try:
        return await anyio.to_thread.run_sync(lambda: fn(*args))
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise ApiError(503, f"broker unreachable ({type(exc).__name__}); try again later") from None

