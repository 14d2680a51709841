"""What one API process holds: settings, the model cache, metrics, the compute
gate, and (built on first use) the Redis client, the S3 storage and the
Celery app that jobs need. The synchronous endpoints need none of the
servers, so ``retouch serve`` starts without Redis or S3."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import redis
from celery import Celery
from prometheus_client import CollectorRegistry

from monitoring.api import HttpMetrics
from monitoring.metrics import Metrics
from orchestration.api.limits import Gate
from orchestration.jobs import JobStore
from orchestration.settings import Settings
from orchestration.storage import Storage
from tasks.app import make_app
from worker.pipeline.cache import ModelCache


@dataclass
class ApiState:
    settings: Settings
    cache: ModelCache
    registry: CollectorRegistry
    metrics: Metrics
    http: HttpMetrics
    gate: Gate
    # jobs are enqueued in the background (listing a large prefix takes a while), two at a time
    submitters: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=2, thread_name_prefix="retouch-submit"))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _redis: redis.Redis | None = None
    _storage: Storage | None = None
    _celery: Celery | None = None

    @classmethod
    def build(cls, settings: Settings, registry: CollectorRegistry | None = None) -> "ApiState":
        registry = registry or CollectorRegistry()
        metrics = Metrics(registry)
        cache = ModelCache(device=settings.device, model_dir=settings.model_dir, on_load=metrics.model_loaded)
        return cls(settings, cache, registry, metrics, HttpMetrics(registry),
                   Gate(settings.api_concurrency, settings.api_request_timeout))

    @property
    def redis(self) -> redis.Redis:
        with self._lock:
            if self._redis is None:
                self._redis = redis.Redis.from_url(self.settings.redis_url, socket_timeout=5,
                                                   socket_connect_timeout=5)
            return self._redis

    @property
    def store(self) -> JobStore:
        return JobStore(self.redis)

    @property
    def storage(self) -> Storage:
        with self._lock:
            if self._storage is None:
                self._storage = Storage.from_settings(self.settings)
            return self._storage

    @property
    def celery(self) -> Celery:
        with self._lock:
            if self._celery is None:
                self._celery = make_app(self.settings)
            return self._celery

    def close(self) -> None:
        self.gate.close()
        self.submitters.shutdown(wait=False)
        if self._redis is not None:
            self._redis.close()
