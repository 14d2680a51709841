"""What a worker process holds: settings, storage client, Redis, one
``ModelCache`` (models load once per process), the metrics observer and the
input read-ahead (``tasks.readahead``).

Built lazily in the process that runs tasks (after a prefork fork, in the
child), never at import, from the settings the worker entry point
(``tasks.worker``) passed to :func:`configure`."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import redis

from monitoring.metrics import Metrics, process_metrics
from orchestration.settings import Settings, load_settings
from orchestration.storage import Storage
from tasks.broker import redis_client
from tasks.readahead import ReadAhead
from worker.pipeline.cache import ModelCache

log = logging.getLogger(__name__)


@dataclass
class WorkerOptions:
    device: str = "auto"          # the device this process computes on
    enforce_limits: bool = False  # solo/threads pools: time limits enforced by tasks.limits
    hostname: str = ""


@dataclass
class Runtime:
    settings: Settings
    storage: Storage
    redis: redis.Redis
    cache: ModelCache
    metrics: Metrics
    options: WorkerOptions = field(default_factory=WorkerOptions)
    readahead: ReadAhead | None = None


_settings: Settings | None = None
_options = WorkerOptions()
_runtime: Runtime | None = None
_pid: int | None = None


def configure(settings: Settings, options: WorkerOptions) -> None:
    global _settings, _options, _runtime
    _settings, _options, _runtime = settings, options, None


def options() -> WorkerOptions:
    return _options


def runtime() -> Runtime:
    """This process's runtime (rebuilt after a fork). Without :func:`configure`
    (a worker started by plain ``celery worker``), settings are read once here."""
    global _runtime, _pid, _settings
    if _runtime is None or _pid != os.getpid():
        settings = _settings = _settings or load_settings()
        metrics = process_metrics()
        device = _options.device if _options.device != "auto" else settings.device
        cache = ModelCache(device=device, model_dir=settings.model_dir, on_load=metrics.model_loaded)
        # bookkeeping waits out a Redis restart instead of failing finished work
        client = redis_client(settings.redis_url, settings.redis_outage_seconds)
        storage = Storage.from_settings(settings)
        _runtime = Runtime(settings, storage, client, cache, metrics, _options,
                           ReadAhead(storage, client, settings.readahead_max_bytes, metrics.input_readahead))
        _pid = os.getpid()
        log.info("worker runtime ready (pid %s, device %s)", _pid, device)
    return _runtime
