"""Putting a dead worker's messages back on their queues at once.

With late acknowledgement a task's message stays in kombu's ``unacked`` hash
until the task ends; if its worker process dies, Redis only hands it out again
after the visibility timeout (two hours by default) — a crashed GPU worker
would stall its images that long. The supervisor (``retouch worker``) sees a
child die at once, and the child left in Redis the id of the task it was
running (``current``) and of the last one it ran (``last``, whose
acknowledgement may not have been sent yet). :func:`requeue_held` finds those
messages among the unacknowledged ones and restores them with kombu's own
restore (the message is flagged ``redelivered`` and goes to the end of its
queue that is consumed next); one already acknowledged is simply not there. While Redis is down
(restarting), the restore waits for it, up to ``patience`` seconds.
"""

from __future__ import annotations

import json
import logging
import time

from celery import Celery

from orchestration.jobs import LOST_TTL, current_task_key, last_task_key, lost_task_key, received_task_key

log = logging.getLogger(__name__)


def _worker_keys(client, hostname: str) -> tuple[str | None, str | None, str | None]:
    """(the task it was running, the last it finished, the last message it
    took) of a worker process, read in one round trip; None where unset."""
    current, last, received = client.mget([current_task_key(hostname), last_task_key(hostname),
                                           received_task_key(hostname)])
    try:
        running = json.loads(current)["id"] if current else None
    except (ValueError, KeyError, TypeError):
        running = None
    return running, last.decode() if last else None, received.decode() if received else None


def _running_ids(keys: tuple[str | None, str | None, str | None]) -> set[str]:
    """Of a dead worker's ``_worker_keys``, the tasks it died *during*: the one
    it was running, and the message it had just taken unless that is the task
    it had finished."""
    running, last, received = keys
    ids = {running} - {None}
    if received and received != last:
        ids.add(received)
    return ids


def held_keys(hostname: str) -> list[str]:
    """The keys naming what a worker process holds: cleared once it is dead
    and its messages are back (its restarted successor reuses the name)."""
    return [current_task_key(hostname), last_task_key(hostname), received_task_key(hostname)]



def requeue_held(app: Celery, hostname: str, patience: float = 60.0) -> list[str]:
    """Restore to their queues the unacknowledged messages of the tasks the
    dead worker process ``hostname`` held; returns their task ids. While
    Redis is unreachable, tries again (backoff up to 2 s) for ``patience``
    seconds, then raises the connection error."""
    deadline, wait, warned = time.monotonic() + patience, 0.1, False
    while True:
        try:
            return _requeue_held(app, hostname)
        except Exception as exc:
            if not _connection_error(exc) or time.monotonic() + wait > deadline:
                raise
            if not warned:
                log.warning("worker %s died while Redis is unreachable (%s); restoring its messages once "
                            "Redis is back (up to %.0fs)", hostname, exc, patience)
                warned = True
            time.sleep(wait)
            wait = min(2.0, wait * 2)


def _connection_error(exc: Exception) -> bool:
    import redis
    from kombu.exceptions import OperationalError

    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OperationalError, ConnectionError,
                            TimeoutError))


def _requeue_held(app: Celery, hostname: str) -> list[str]:
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        client = channel.client
        keys = _worker_keys(client, hostname)
        ids = set(keys) - {None}
        if not ids:
            return []
        running = _running_ids(keys)
        tags = {}
        for tag, raw in client.hscan_iter(channel.unacked_key):
            try:
                message = json.loads(raw)[0]
                task_id = message["headers"]["id"]
            except (ValueError, KeyError, IndexError, TypeError):
                continue
            if task_id in ids:
                tags[tag.decode() if isinstance(tag, bytes) else tag] = (task_id, message["headers"].get("retries") or 0)
        for tag, (task_id, retries) in tags.items():
            if task_id in running:
                # a death while the task ran or was about to (counted before the
                # restore: the delivery cap reads it when the message runs again);
                # the task that had finished, its acknowledgement still on its
                # way, did not take its worker down
                pipe = client.pipeline()
                pipe.incr(lost_task_key(task_id, retries))
                pipe.expire(lost_task_key(task_id, retries), LOST_TTL)
                pipe.execute()
            # kombu publishes with LPUSH and consumes with BRPOP: the right end
            # is the next to be consumed (leftmost=True would put it last)
            channel.qos.restore_by_tag(tag, leftmost=False)
            log.warning("worker %s died holding task %s: put back on its queue now", hostname, task_id)
        restored = {task_id for task_id, _ in tags.values()}
        for task_id in sorted(ids - restored):
            log.info("worker %s died after task %s was acknowledged: nothing to put back", hostname, task_id)
        return sorted(restored)
