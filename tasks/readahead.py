"""Read-ahead: the next image's input is fetched while this one computes.

A worker process takes one message at a time (solo pool, prefetch 1, late
acknowledgement), so on its own it waits on S3 before every image with the
CPU or GPU idle. When a first-segment task starts, :class:`ReadAhead` looks at
the message its queue will hand out next (the tail of the Redis list kombu
pops from), and fetches that image's original in a background thread, one
image at a time, at most ``max_bytes``. If this process is the one that gets
that message, the task takes the bytes instead of a GET; if another worker
took it, the bytes are dropped at the next start (they are only a copy).

What is taken is what a GET would read: the object's ETag at fetch time
must equal the one listed with the job, else the task reads it again. Only
first-segment messages of ``retouch.stages`` (an image not begun yet) are
fetched; the rest of the queue, and anything unreadable, is left alone. The
messages are ours (JSON, zlib): nothing else is decoded.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import redis
from kombu import compression

from orchestration.storage import Storage

log = logging.getLogger(__name__)

WAIT_SECONDS = 60   # a fetch still running when its image's task starts: waited for this long at most


def next_image(client: redis.Redis, queue: str) -> tuple[str, str, str] | None:
    """``(bucket, key, etag)`` of the image whose first task ``queue`` hands
    out next, or None (empty, another task, a chain's later segment, unreadable)."""
    raw = client.lindex(queue, -1)
    if raw is None:
        return None
    try:
        envelope = json.loads(raw)
        headers = envelope.get("headers") or {}
        if headers.get("task") != "retouch.stages":
            return None
        body = envelope["body"]
        if (envelope.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        if headers.get("compression"):
            body = compression.decompress(body, headers["compression"])
        message = json.loads(body)[0][0]
        if message.get("begun") or not all(isinstance(message.get(k), str) for k in ("bucket", "key", "etag")):
            return None
        return message["bucket"], message["key"], message["etag"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        log.debug("read-ahead: %s: unreadable message left alone (%s)", queue, exc)
        return None


class ReadAhead:
    """One image's input fetched in the background (see the module)."""

    def __init__(self, storage: Storage, client: redis.Redis, max_bytes: int,
                 on_result: Callable[[str], None] | None = None):
        self.storage, self.client, self.max_bytes, self.on_result = storage, client, max_bytes, on_result
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="retouch-readahead")
        self._lock = threading.Lock()
        self._slot: tuple[tuple[str, str], Future] | None = None
        self.counts = {"hit": 0, "miss": 0, "changed": 0, "dropped": 0, "started": 0}

    def start(self, queue: str | None, current: tuple[str, str]) -> tuple[str, str, str] | None:
        """Fetch the input of the image ``queue`` hands out next (not ``current``,
        ``(bucket, key)``); returns what it started on, or None."""
        if not queue or self.max_bytes <= 0:
            return None
        try:
            nxt = next_image(self.client, queue)
        except redis.RedisError as exc:
            log.debug("read-ahead: %s: %s", queue, exc)
            return None
        if nxt is None or nxt[:2] == current:
            return None
        with self._lock:
            if self._slot is not None:
                if self._slot[0] == nxt[:2]:
                    return None
                self._count("dropped")      # another worker took it
            self._slot = (nxt[:2], self._pool.submit(self._fetch, nxt[0], nxt[1]))
            self.counts["started"] += 1
        return nxt

    def _count(self, result: str) -> None:
        self.counts[result] += 1
        if self.on_result is not None:
            self.on_result(result)

    def _fetch(self, bucket: str, key: str) -> tuple[bytes, str] | None:
        try:
            return self.storage.get_capped(bucket, key, self.max_bytes)
        except Exception as exc:   # a read-ahead never fails anything: the task reads it itself
            log.debug("read-ahead: s3://%s/%s: %s", bucket, key, exc)
            return None

    def take(self, bucket: str, key: str, etag: str) -> bytes | None:
        """The bytes fetched ahead for this object if they are its version
        ``etag``; None (read it yourself) otherwise."""
        with self._lock:
            slot = self._slot
            if slot is None or slot[0] != (bucket, key):
                self._count("miss")
                return None
            self._slot = None
        try:
            got = slot[1].result(timeout=WAIT_SECONDS)
        except Exception:  # noqa: BLE001 (a timeout: read it directly)
            got = None
        if got is None or got[0] is None:
            self._count("miss")
            return None
        if got[1] != etag:
            self._count("changed")
            return None
        self._count("hit")
        return got[0]
