"""Every error the API returns is JSON with a one-line cause.

``{"error": "photo.jpg: truncated or corrupt image data (...)", "status": 422}``

- a :class:`RetouchError` (bad image, bad plan, unknown variant, bad S3 URL...)
  is the client's to fix: 422, or 404 for an unknown job; the server's own
  model store or device failing is 503;
- FastAPI's validation errors (a missing file, a field of the wrong type) are
  422, with the fields named;
- anything else is a bug: logged with its traceback, answered 500 with a line
  that names no internals. A traceback never reaches the client.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from orchestration.jobs import UnknownJob
from worker.detect import ModelNotFoundError
from worker.device import DeviceError
from worker.errors import RetouchError
from worker.models.manifest import ManifestError
from worker.models.store import ModelStoreError

log = logging.getLogger(__name__)

# Failures of the server's own installation, not of the request.
_SERVER_SIDE = (ModelStoreError, ModelNotFoundError, ManifestError, DeviceError)


class ApiError(HTTPException):
    """An HTTP error with a one-line cause (raised by the API's own checks)."""

    def __init__(self, status: int, cause: str, headers: dict[str, str] | None = None):
        super().__init__(status_code=status, detail=" ".join(str(cause).split()), headers=headers)


def status_for(exc: RetouchError) -> int:
    if isinstance(exc, UnknownJob):
        return 404
    if isinstance(exc, _SERVER_SIDE):
        return 503
    return 422


def error_response(status: int, cause: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(cause).split()), "status": status}, status_code=status,
                        headers=headers)


def _validation_line(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "header", "path"))
        parts.append(f"{loc}: {e.get('msg', 'invalid')}" if loc else str(e.get("msg", "invalid")))
    return "invalid request: " + "; ".join(parts)


def install(app: FastAPI) -> None:
    """Register the JSON error handlers on ``app``."""

    @app.exception_handler(RetouchError)
    async def retouch_error(request: Request, exc: RetouchError):
        status = status_for(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc)
        return error_response(status, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return error_response(422, _validation_line(exc))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); the server log has the details")

