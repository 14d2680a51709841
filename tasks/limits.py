"""Soft and hard time limits for pools that do not enforce them.

Celery's prefork pool enforces ``task_soft_time_limit`` / ``task_time_limit``;
the solo pool (used for GPU workers, because CUDA and fork do not mix) does
not. Here the soft limit is a SIGALRM that raises ``SoftTimeLimitExceeded``
in the task (main thread; it lands between Python bytecodes, so after the
current native call returns), and the hard limit a timer thread that kills the
worker process: its supervisor (``retouch worker``) starts a new one, the
message is redelivered, and ``tasks.pipeline`` (which marked the task as
timed out before the kill) fails the image instead of running it again."""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager

from celery.exceptions import SoftTimeLimitExceeded

log = logging.getLogger(__name__)


@contextmanager
def enforced(soft: float, hard: float, what: str, enabled: bool = True, before_kill=None):
    """Apply the limits (seconds) around a block run on the main thread.
    ``before_kill()`` runs (from the timer thread) just before the hard kill,
    e.g. to record that the task must not be run again."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_soft(signum, frame):
        raise SoftTimeLimitExceeded(f"{what}: soft time limit ({soft:g}s) exceeded")

    def on_hard():
        log.error("%s: hard time limit (%gs) exceeded; killing worker process %s", what, hard, os.getpid())
        try:
            if before_kill is not None:
                before_kill()
        finally:
            os.kill(os.getpid(), signal.SIGKILL)

    previous = signal.signal(signal.SIGALRM, on_soft)
    if soft:  # 0: no soft limit
        signal.setitimer(signal.ITIMER_REAL, soft)
    timer = threading.Timer(hard, on_hard)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        timer.cancel()
