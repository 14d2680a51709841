"""The FastAPI application: routes, limits, error shape, metrics.

``create_app(settings)`` is all a server (``orchestration.api.server``) or a
test needs. OpenAPI is served at ``/docs`` (Swagger UI) and
``/openapi.json``.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monitoring.collectors import QueueDepthCollector
from orchestration.api import errors, health, images, jobs
from orchestration.api.limits import BodyLimit
from orchestration.api.state import ApiState
from orchestration.settings import Settings
from tasks.app import CPU_QUEUE, config
from worker import __version__

DESCRIPTION = """Restore images over HTTP: remove text and watermarks, inpaint, upscale.

Synchronous endpoints take one image (multipart) and return the result with its record;
the bytes are those `retouch run` writes with the same settings. `/v1/jobs` restores every
image under an S3 prefix on the Celery cluster. `/v1/*` needs `Authorization: Bearer <token>`
when the server has a token, and answers loopback clients only when it has none."""


class RequestMetrics:
    """ASGI middleware: count and time every request by route template."""

    def __init__(self, app: ASGIApp, state: ApiState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        http = self.state.http
        start, status = time.perf_counter(), 500
        http.in_progress.inc()

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            http.in_progress.dec()
            route = getattr(scope.get("route"), "path", None) or "other"
            http.observe(route, scope.get("method", ""), status, time.perf_counter() - start)


def metric_queues(settings: Settings) -> list[str]:
    """The queues whose depth ``/metrics`` reports: cpu and gpu.0 .. gpu.N-1."""
    n = max(1, settings.api_gpu_queues or 0, settings.gpu_queues)
    return [CPU_QUEUE] + [f"gpu.{i}" for i in range(n)]


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> FastAPI:
    state = ApiState.build(settings, registry)
    state.registry.register(QueueDepthCollector(settings.redis_url, metric_queues(settings),
                                                config(settings)["broker_transport_options"]))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        state.close()

    app = FastAPI(title="retouch", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url="/docs", openapi_url="/openapi.json", redoc_url=None)
    app.state.retouch = state
    errors.install(app)
    app.include_router(health.router)
    app.include_router(images.router)
    app.include_router(jobs.router)
    # the body limit refuses before anything reads the body; the metrics (added
    # last, so outside it) count those refusals too
    app.add_middleware(BodyLimit, max_bytes=int(settings.api_max_body_mb * 2**20))
    app.add_middleware(RequestMetrics, state=state)
    return app
