"""Redis clients that ride out a Redis restart.

Redis is the broker, the result backend and the job state. When it restarts
(a crash, a failover, a deploy), a worker in the middle of a task must not
turn the finished work into an error: every Redis command a worker sends
outside its consume loop (its bookkeeping, the next task of a chain, the
acknowledgement, the chord's count, the restore of unacknowledged messages)
is retried on connection errors with a bounded exponential backoff, for
``redis_outage_seconds`` in all, and goes on once Redis answers again. Past
that bound the error is raised as before. The consume loop itself (BRPOP)
reconnects through Celery's ``broker_connection_retry``.

- :func:`outage_retry`: the redis-py ``Retry`` for that bound;
- :func:`redis_client`: a bookkeeping client with it;
- :class:`Transport`: kombu's Redis transport whose synchronous pool (publish,
  ack, restore) carries it (``broker_transport`` in ``tasks.app``).
"""

from __future__ import annotations

import redis
from kombu.transport import redis as kombu_redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from orchestration.jobs import received_task_key

RETRY_ERRORS = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)
BACKOFF_BASE = 0.05    # first wait 0.1 s, doubling
BACKOFF_CAP = 1.0      # then once a second


def _attempts(seconds: float) -> int:
    """Retries whose backoff waits add up to at least ``seconds``."""
    backoff, total, n = ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), 0.0, 0
    while total < seconds:
        n += 1
        total += backoff.compute(n)
    return n


def outage_retry(seconds: float) -> Retry:
    """A redis-py ``Retry`` that keeps trying a command for ~``seconds``
    (backoff 0.1 s doubling to 1 s) while Redis refuses connections or times out."""
    return Retry(ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), _attempts(seconds),
                 supported_errors=RETRY_ERRORS)


def retry_params(seconds: float) -> dict:
    """Connection keyword arguments of redis-py for :func:`outage_retry`."""
    if seconds <= 0:
        return {}
    return {"retry": outage_retry(seconds), "retry_on_error": list(RETRY_ERRORS)}


def redis_client(url: str, outage_seconds: float, **kwargs) -> redis.Redis:
    """A Redis client for worker bookkeeping that waits out a Redis restart."""
    kwargs.setdefault("socket_connect_timeout", 5)
    kwargs.setdefault("socket_timeout", 30)
    return redis.Redis.from_url(url, **retry_params(outage_seconds), **kwargs)


class QoS(kombu_redis.QoS):
    """kombu's unacknowledged-message bookkeeping, plus, in a worker process
    (``holder``: its Celery hostname), the id of each task message it takes,
    written the moment kombu records the message as unacknowledged: before
    Celery even parses it, so a process killed at any point after taking a
    message has it put back by its supervisor (``tasks.requeue``)."""

    def append(self, message, delivery_tag):
        super().append(message, delivery_tag)
        holder = getattr(self.channel, "holder", None)
        task_id = (getattr(message, "headers", None) or {}).get("id")
        if holder and task_id:
            with self.channel.conn_or_acquire() as client:
                client.set(received_task_key(holder), task_id, ex=int(self.channel.visibility_timeout))


class Channel(kombu_redis.Channel):
    """kombu's Redis channel; its synchronous pool retries through an outage.
    The asynchronous pool (the consume loop's BRPOP) is left as it is: a lost
    connection there restarts the consumer, which Celery retries."""

    QoS = QoS
    outage_seconds = 0
    holder = None
    from_transport_options = kombu_redis.Channel.from_transport_options + ("outage_seconds", "holder")

    def _connparams(self, asynchronous=False):
        params = super()._connparams(asynchronous=asynchronous)
        if not asynchronous:
            params.update(retry_params(self.outage_seconds))
        return params


class Transport(kombu_redis.Transport):
    Channel = Channel


def persists(client: redis.Redis) -> bool | None:
    """Whether this Redis keeps its data across a restart (an append-only
    file, or RDB save points); None where it will not say (CONFIG disabled)."""
    try:
        aof = int(client.info("persistence").get("aof_enabled", 0))
        save = client.config_get("save").get("save", "")
    except redis.ResponseError:
        return None
    return bool(aof or save.strip())


class RestartWatch:
    """Notices a Redis restart (its ``run_id`` changes) and says what it
    means: nothing with persistence, every job's state and queued task gone
    without. ``check()`` returns the message of a restart, else None."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self.run_id: str | None = None

    def check(self) -> str | None:
        run_id = self.client.info("server").get("run_id")
        before, self.run_id = self.run_id, run_id
        if before is None or before == run_id:
            return None
        if persists(self.client) is False:
            return ("Redis restarted without persistence: every job's state and queued task is gone (their "
                    "outputs stay in S3); resubmit them, and run Redis with appendonly yes")
        return "Redis restarted; it persists, so the jobs go on"
