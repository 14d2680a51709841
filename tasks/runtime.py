"""What a worker process holds: settings, storage client, Redis, one
``ModelCache`` (models load once per process) and the metrics observer.

Built lazily in the process that runs tasks (after a prefork fork, in the
child), never at import. ``configure`` is called by the worker entry point
(``tasks.worker``) before the worker starts."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class WorkerOptions:
    device: str = "auto"          # the device this process computes on
    enforce_limits: bool = False  # solo/threads pools: time limits enforced by tasks.limits
    hostname: str = ""


@dataclass
class Runtime:
    settings: object
    storage: object
    redis: object
    cache: object
    metrics: object
    options: WorkerOptions = field(default_factory=WorkerOptions)


_options = WorkerOptions()
_runtime: Runtime | None = None
_pid: int | None = None


def configure(options: WorkerOptions) -> None:
    global _options, _runtime
    _options = options
    _runtime = None


def options() -> WorkerOptions:
    return _options


def runtime() -> Runtime:
    """This process's runtime (rebuilt after a fork)."""
    global _runtime, _pid
    if _runtime is None or _pid != os.getpid():
        import redis

        from orchestration.settings import load_settings
        from orchestration.storage import Storage
        from worker.models.cache import ModelCache

        settings = load_settings()
        metrics = process_metrics()
        device = _options.device if _options.device != "auto" else settings.device
        cache = ModelCache(device=device, model_dir=settings.model_dir,
                           on_load=(metrics.model_loaded if metrics is not None else None))
        _runtime = Runtime(settings, Storage.from_settings(settings), redis.Redis.from_url(settings.redis_url),
                           cache, metrics, _options)
        _pid = os.getpid()
        log.info("worker runtime ready (pid %s, device %s)", _pid, device)
    return _runtime


def process_metrics():
    """The per-process metrics instance (multiprocess-aware, see monitoring.metrics)."""
    from monitoring.metrics import process_metrics as _process_metrics

    return _process_metrics()
