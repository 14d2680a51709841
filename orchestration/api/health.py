"""Liveness, readiness and metrics (open endpoints: probes and scrapes carry no token).

- ``GET /healthz``: 200 while the process serves requests (liveness).
- ``GET /readyz``: 200 when the broker (Redis ``PING``) and the storage (S3
  ``ListBuckets`` with the server's credentials) answer, else 503 naming what
  failed; each probe has a short timeout and no retries.
- ``GET /metrics``: Prometheus text: the pipeline metrics of the synchronous
  requests (stage durations, model selections, mask histograms...), the HTTP
  request counts and latencies, and the queue depth (ready and unacked) read
  from Redis at scrape time, so an autoscaler sees the backlog even while no
  worker runs.
"""

from __future__ import annotations

import anyio
import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orchestration.storage import make_client

router = APIRouter(tags=["health"])

PROBE_TIMEOUT = 2.0


@router.get("/healthz", summary="Liveness")
async def healthz():
    return {"status": "ok"}


def _probe_broker(url: str) -> str:
    client = redis.Redis.from_url(url, socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"unreachable ({type(exc).__name__})"
    finally:
        client.close()
    return "ok"


def _probe_storage(settings) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    client = make_client(settings.model_copy(update={"s3_max_attempts": 1}))
    try:
        client.list_buckets()
    except ClientError as exc:
        return f"error ({exc.response.get('Error', {}).get('Code', 'ClientError')})"
    except BotoCoreError as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok"


@router.get("/readyz", summary="Readiness: the broker and the storage answer",
            responses={503: {"description": "not ready; the JSON names what failed"}})
async def readyz(request: Request):
    settings = request.app.state.retouch.settings
    checks = {}

    async def run(name, fn, *args):
        checks[name] = await anyio.to_thread.run_sync(lambda: fn(*args))

    async with anyio.create_task_group() as group:
        group.start_soon(run, "broker", _probe_broker, settings.redis_url)
        group.start_soon(run, "storage", _probe_storage, settings)
    failed = [f"{name} {result}" for name, result in sorted(checks.items()) if result != "ok"]
    if failed:
        return JSONResponse({"error": "not ready: " + "; ".join(failed), "status": 503, "checks": checks},
                            status_code=503)
    return {"status": "ready", "checks": checks}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request):
    registry = request.app.state.retouch.registry
    body = await anyio.to_thread.run_sync(lambda: generate_latest(registry))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
