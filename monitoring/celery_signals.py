"""Celery signal hooks that feed :mod:`monitoring.metrics` from a worker.

``connect(app)`` once, where the worker's Celery app is built. In a prefork pool
the handlers run in the child that executes the task and record through
:func:`monitoring.metrics.process_metrics` (multiprocess mode when the parent
called ``prepare_multiprocess_dir`` before forking):

- ``task_prerun``: in-flight +1; a message marked redelivered (kombu sets
  ``delivery_info["redelivered"]`` when it restores an unacknowledged message)
  counts a redelivery;
- ``task_postrun`` (sent after success, failure and retry alike): in-flight -1,
  GPU memory refreshed;
- ``task_retry``: retries +1;
- ``worker_process_init`` (prefork child) and ``worker_ready`` (solo/threads):
  zero series for every task of the app;
- ``worker_process_shutdown`` (in the exiting child): its live gauges are
  marked dead. Children that die without it (SIGKILL) are swept by the
  metrics endpoint (``metrics.DeadProcessSweeper``).
"""

from __future__ import annotations

import logging

from celery import signals

from monitoring.metrics import mark_process_dead, process_metrics

log = logging.getLogger(__name__)

_UID = "retouch.monitoring"


def _task_name(task) -> str:
    return getattr(task, "name", None) or "unknown"


def _ours(app, task) -> bool:
    # Celery signals are global; only count the tasks of the app we were connected to.
    return task is not None and getattr(task, "app", None) is app


def connect(app) -> None:
    """Hook the metrics to Celery's signals for the tasks of ``app``. Idempotent."""

    def prerun(sender=None, task=None, **_):
        task = task or sender
        if not _ours(app, task):
            return
        metrics = process_metrics()
        metrics.task_started(_task_name(task))
        delivery = getattr(task.request, "delivery_info", None) or {}
        if delivery.get("redelivered"):
            metrics.task_redelivered(_task_name(task))

    def postrun(sender=None, task=None, **_):
        task = task or sender
        if not _ours(app, task):
            return
        metrics = process_metrics()
        metrics.task_done(_task_name(task))
        metrics.sample_gpu()

    def retry(sender=None, **_):
        if _ours(app, sender):
            process_metrics().task_retried(_task_name(sender))

    def process_init(**_):
        # Zero series for every task of the app: a dashboard shows "0 retries",
        # not "no data", and rate() sees the first increment.
        metrics = process_metrics()
        for name in app.tasks:
            if not name.startswith("celery."):
                metrics.declare_task(name)

    def process_shutdown(pid=None, **_):
        if pid:
            mark_process_dead(pid)

    signals.task_prerun.connect(prerun, weak=False, dispatch_uid=f"{_UID}.prerun.{id(app)}")
    signals.task_postrun.connect(postrun, weak=False, dispatch_uid=f"{_UID}.postrun.{id(app)}")
    signals.task_retry.connect(retry, weak=False, dispatch_uid=f"{_UID}.retry.{id(app)}")
    signals.worker_process_init.connect(process_init, weak=False, dispatch_uid=f"{_UID}.init.{id(app)}")
    # a solo or threads pool has no child processes: declare in the worker itself
    signals.worker_ready.connect(process_init, weak=False, dispatch_uid=f"{_UID}.ready.{id(app)}")
    signals.worker_process_shutdown.connect(process_shutdown, weak=False, dispatch_uid=f"{_UID}.shutdown.{id(app)}")
