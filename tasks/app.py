"""The Celery app of retouch and its configuration, built from settings by
whoever needs it (the worker entry point, ``retouch submit``), never at import.

JSON is the only serializer (no pickle anywhere); Redis is the broker and the
result backend. Tasks are acknowledged late and rejected when their worker is
lost, so a killed worker's task is redelivered (after the Redis visibility
timeout, which must exceed the longest task) and the delivery cap in
``tasks.pipeline`` stops poison messages. Heavy stages are routed per image to
a ``gpu.<i>`` queue when the job is submitted (``orchestration.jobs``); every
other task goes to the ``cpu`` queue.
"""

from __future__ import annotations

import logging

from celery import Celery
from celery.backends.redis import RedisBackend

from monitoring import celery_signals
from orchestration.settings import Settings
from tasks import broker

log = logging.getLogger(__name__)

CPU_QUEUE = "cpu"
# shared tasks: they bind to the app that loads them
TASK_MODULES = ["tasks.pipeline", "tasks.schedules", "tasks.learning"]


class JobResultBackend(RedisBackend):
    """The Redis result backend, minus the client-side subscription to every
    sent task's result: nothing in retouch waits on task results (jobs are
    followed through their Redis counters), and a submit of a million images
    must not hold a million pub/sub subscriptions. Its commands (a chord's
    count included) wait out a Redis restart (``tasks.broker``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        outage = self.app.conf.result_backend_transport_options.get("outage_seconds", 0)
        self.connparams.update(broker.retry_params(outage))

    def on_task_call(self, producer, task_id):
        pass

    def add_pending_result(self, result, weak=False, start_drainer=True):
        return result  # group.apply_async subscribes each chain's result otherwise

    def remove_pending_result(self, result):
        return result


def config(settings: Settings) -> dict:
    """Celery settings derived from retouch settings (see docs/cluster.md)."""
    transport = {
        "visibility_timeout": settings.visibility_timeout,
        "unacked_restore_interval": settings.unacked_restore_interval,
        # scan for abandoned messages on every sweep, not every tenth
        "unacked_restore_throttle": 1,
        # publish, acknowledge and restore wait out a Redis restart (tasks.broker)
        "outage_seconds": settings.redis_outage_seconds,
    }
    outage = settings.redis_outage_seconds
    return {
        "broker_url": settings.redis_url,
        "broker_transport": (f"{broker.__name__}:Transport" if settings.redis_url.startswith(("redis://", "rediss://"))
                             else None),
        # the next task of a chain, sent once a task's work is done: retried
        # (reconnecting) for about as long, not dropped after a second
        "task_publish_retry_policy": {"max_retries": max(3, int(outage)), "interval_start": 0,
                                      "interval_step": 0.5, "interval_max": 1},
        "result_backend": _backend_url(settings.backend_url),
        "task_serializer": "json", "result_serializer": "json",
        "accept_content": ["json"], "result_accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout,
                                             "outage_seconds": outage},
        "task_soft_time_limit": settings.task_soft_time_limit or None,
        "task_time_limit": settings.task_time_limit,
        "task_default_queue": CPU_QUEUE,
        "task_create_missing_queues": True,
        "result_expires": 24 * 3600,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_track_started": False,
    }


def _is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def _backend_url(url: str) -> str:
    if _is_redis(url):
        return f"{__name__}:JobResultBackend+{url}"
    return url


def make_app(settings: Settings) -> Celery:
    """The app for these settings, set as the current app (its tasks are the
    shared tasks of ``TASK_MODULES``)."""
    if settings.visibility_timeout <= settings.task_time_limit:
        log.warning("visibility_timeout (%ss) should exceed task_time_limit (%ss): a long task would be "
                    "delivered twice", settings.visibility_timeout, settings.task_time_limit)
    celery = Celery("retouch", include=TASK_MODULES)
    celery.conf.update(config(settings))
    # celery-redbeat (retouch beat, tasks.schedules): the schedule lives in Redis, and its lock keeps
    # a second beat from sending the same turn (taken over within redbeat_lock_timeout if the first dies)
    celery.conf.update(redbeat_redis_url=settings.redis_url, redbeat_key_prefix="redbeat:",
                       redbeat_lock_timeout=settings.beat_lock_timeout, beat_max_loop_interval=5)
    celery_signals.connect(celery)  # in-flight, retries, redeliveries flagged by kombu
    celery.set_current()
    return celery
