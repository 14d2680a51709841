"""Request limits: body size, and how many images compute at once for how long.

:class:`BodyLimit` is ASGI middleware: a request whose ``Content-Length``
exceeds the limit is answered 413 before its body is read; a chunked body is
counted as it streams and stopped at the limit (413 as well).

:class:`Gate` runs synchronous computations (one image through the pipeline)
in its own thread pool, ``slots`` at a time, each request within
``timeout`` seconds from the moment it asks: waiting longer for a slot gives
503 (with ``Retry-After``), computing longer gives 504. A computation that
overruns cannot be interrupted (OpenCV and torch do not poll for
cancellation): it finishes in its thread and keeps its slot until then, so an
overloaded server refuses new work instead of piling it up.
"""

from __future__ import annotations

import asyncio
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestration.api.errors import ApiError, error_response

log = logging.getLogger(__name__)


class BodyTooLarge(ApiError):
    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than {_size(limit)} (the server's limit, "
                              "RETOUCH_API_MAX_BODY_MB)")


def _size(n: int) -> str:
    return f"{n / 2**20:.4g} MiB" if n >= 2**20 else f"{n} bytes"


class BodyLimit:
    """ASGI middleware: at most ``max_bytes`` of request body."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await error_response(413, BodyTooLarge(self.max_bytes).detail)(scope, receive, send)
            return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, watch)
        except BodyTooLarge as exc:  # raised where no handler turned it into a response
            if started:
                raise
            await error_response(413, exc.detail)(scope, receive, send)


class Gate:
    """At most ``slots`` computations at once, each answered within ``timeout`` s."""

    def __init__(self, slots: int, timeout: float):
        self.slots = slots
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="retouch-api")
        self._free: asyncio.Semaphore | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        if self._free is None:  # bound to the server's event loop on first use
            self._free = asyncio.Semaphore(self.slots)
        return self._free

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the pool. Raises ApiError 503 (no slot in time) or 504 (too slow)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        free = self._semaphore()
        try:
            await asyncio.wait_for(free.acquire(), self.timeout)
        except TimeoutError:
            raise ApiError(503, f"busy: {self.slots} image(s) already processing and none finished within "
                                f"{self.timeout:g}s; retry later",
                           headers={"Retry-After": str(max(1, math.ceil(self.timeout)))}) from None
        future = loop.run_in_executor(self._pool, fn, *args)

        def finished(done: asyncio.Future) -> None:
            # The slot is freed when the computation ends, not when the request gives up;
            # an overrun's outcome is read here so it is never left unretrieved.
            free.release()
            if not done.cancelled() and done.exception() is not None and loop.time() > deadline:
                log.warning("a request that timed out ended with %s", type(done.exception()).__name__)

        future.add_done_callback(finished)
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise ApiError(504, f"the request took longer than {self.timeout:g}s (RETOUCH_API_REQUEST_TIMEOUT); "
                                "send a smaller image, or submit it as a job") from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
