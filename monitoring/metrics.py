"""Prometheus metrics, defined once, with bounded label sets.

:class:`Metrics` owns every metric a pipeline process records (stage latency,
mask confidence and coverage, model selections, image outcomes, model loads,
task retries/redeliveries, tasks in flight, GPU memory). Its registry is
injectable: the default is prometheus_client's global ``REGISTRY``; tests and
the embedded ``retouch run`` pass a fresh ``CollectorRegistry``.

Celery prefork workers use prometheus_client's multiprocess mode: the parent
``retouch worker`` calls :func:`prepare_multiprocess_dir` before the pool forks,
every child records through :func:`process_metrics`, and one HTTP endpoint per
host (:func:`start_metrics_server`) merges the children's files and adds the
live figures (queue depth from Redis, worker up; see ``monitoring.collectors``).

Label values are bounded: stages, variants (registry names), devices, reasons
(a decision's ``rule``), statuses and task names. Never an image key or a path:
:func:`_check_label` rejects anything that does not look like a short name.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import threading
from pathlib import Path

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, values, write_to_textfile
from prometheus_client import multiprocess as _mp

from monitoring.collectors import (JobProgressCollector, QueueDepthCollector, ScheduleCollector, WorkerCollector,
                                   gpu_memory)

log = logging.getLogger(__name__)

NAMESPACE = "retouch"
STATUSES = ("ok", "failed", "skipped")
# Mask confidences are probabilities: 20 equal buckets make the heatmap readable.
CONFIDENCE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
# Coverage (masked fraction of the image) is usually a few percent: dense at the low end.
COVERAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+\-]{0,63}$")
_TOLERANCE = 1e-6


def _check_label(name: str, value: str) -> str:
    """A label value must be a short name (a stage, variant, rule, device, task),
    never a free-form string: that is what keeps the series count bounded."""
    value = str(value)
    if not _LABEL.match(value):
        raise ValueError(f"metric label {name}={value!r} is not a short name "
                         "(letters, digits, _.:+-, at most 64 characters)")
    return value


def _unit_interval(name: str, arr: np.ndarray) -> np.ndarray:
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < -_TOLERANCE or arr.max() > 1 + _TOLERANCE):
        raise ValueError(f"{name} must be finite and in [0, 1], got range "
                         f"[{np.nanmin(arr):.6g}, {np.nanmax(arr):.6g}]")
    return np.clip(arr, 0.0, 1.0)


class Metrics:
    """All retouch pipeline metrics on one registry.

    Every method is cheap and thread-safe (prometheus_client's values are). A
    bad label value raises ``ValueError`` naming the label (a programming error:
    labels come from registries and rules, never from user data)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self.registry = registry
        ns = NAMESPACE
        self.mask_confidence = Histogram(
            "mask_confidence", "Detector confidence of pixels inside the mask core (deterministic subsample "
            "of up to 4096 pixels per image)", namespace=ns, buckets=CONFIDENCE_BUCKETS, registry=registry)
        self.mask_coverage = Histogram(
            "mask_coverage_ratio", "Fraction of the image covered by the mask, one observation per detection",
            namespace=ns, buckets=COVERAGE_BUCKETS, registry=registry)
        self.stage_duration = Histogram(
            "stage_duration_seconds", "Wall time of one pipeline stage on one image",
            ["stage", "variant", "device"], namespace=ns, buckets=STAGE_BUCKETS, registry=registry)
        self.model_load = Histogram(
            "model_load_seconds", "Time to load a model into a process's model cache",
            ["kind", "name"], namespace=ns, buckets=LOAD_BUCKETS, registry=registry)
        self.selections = Counter(
            "model_selections", "Model-selection decisions; reason is the decision's rule",
            ["stage", "variant", "reason"], namespace=ns, registry=registry)
        self.images = Counter(
            "images", "Images finished, by final status (ok, failed, skipped)", ["status"],
            namespace=ns, registry=registry)
        self.retries = Counter("task_retries", "Celery task retries", ["task"], namespace=ns, registry=registry)
        self.redeliveries = Counter(
            "task_redeliveries", "Celery task messages delivered again after a worker lost them "
            "(visibility timeout or restart)", ["task"], namespace=ns, registry=registry)
        self.readahead = Counter(
            "input_readahead", "Inputs fetched while the previous image computed, by what became of them: "
            "hit (its task used them), miss (the task read its input itself), changed (the object changed "
            "meanwhile), dropped (another worker took the image)", ["result"], namespace=ns, registry=registry)
        # livesum: a dead child's in-flight count must vanish with it.
        self.in_flight = Gauge("tasks_in_flight", "Celery tasks executing now", ["task"], namespace=ns,
                               registry=registry, multiprocess_mode="livesum")
        # Every process on one device sees the same driver figures: take the max of the live ones.
        self.gpu_used = Gauge("gpu_memory_used_bytes", "GPU memory in use on the device (driver view)",
                              ["device"], namespace=ns, registry=registry, multiprocess_mode="livemax")
        self.gpu_total = Gauge("gpu_memory_total_bytes", "GPU memory on the device", ["device"],
                               namespace=ns, registry=registry, multiprocess_mode="livemax")
        for status in STATUSES:  # so a zero failure count is a series, not an absence
            self.images.labels(status=status)

    # --- pipeline ---------------------------------------------------------

    def observe_stage(self, stage: str, variant: str, device: str, seconds: float) -> None:
        """One stage on one image took ``seconds`` (>= 0)."""
        if not seconds >= 0:
            raise ValueError(f"stage {stage}: duration must be >= 0 seconds, got {seconds}")
        self.stage_duration.labels(_check_label("stage", stage), _check_label("variant", variant),
                                   _check_label("device", device)).observe(seconds)

    def selection(self, stage: str, variant: str, reason: str) -> None:
        """One model-selection decision; ``reason`` is the decision's ``rule`` (a bounded set)."""
        self.selections.labels(_check_label("stage", stage), _check_label("variant", variant),
                               _check_label("reason", reason)).inc()

    def observe_mask(self, confidences: np.ndarray, coverage: float) -> None:
        """One detection: ``confidences`` is a 1-D (or any shape) float sample in
        [0, 1] of the pixels inside the mask (may be empty); ``coverage`` in [0, 1]
        is the masked fraction. Raises ``ValueError`` outside [0, 1] or on NaN."""
        conf = _unit_interval("mask confidences", np.asarray(confidences, dtype=np.float64).ravel())
        cov = float(_unit_interval("mask coverage", np.asarray([coverage], dtype=np.float64))[0])
        _observe_many(self.mask_confidence, conf)
        self.mask_coverage.observe(cov)

    def image_finished(self, status: str) -> None:
        """One image reached its final status (ok, failed or skipped); also refreshes GPU memory."""
        if status not in STATUSES:
            raise ValueError(f"image status must be one of {', '.join(STATUSES)}, got {status!r}")
        self.images.labels(status=status).inc()
        self.sample_gpu()

    def model_loaded(self, kind: str, name: str, seconds: float) -> None:
        """``ModelCache`` ``on_load`` hook: a model of ``kind``/``name`` loaded in ``seconds``."""
        self.model_load.labels(_check_label("kind", kind), _check_label("name", name)).observe(max(seconds, 0.0))

    # --- tasks ------------------------------------------------------------

    def declare_task(self, task: str) -> None:
        """Create the zero-valued series of one task (retries, redeliveries, in flight)."""
        name = _check_label("task", task)
        self.retries.labels(name)
        self.redeliveries.labels(name)
        self.in_flight.labels(name)

    def task_started(self, task: str) -> None:
        self.in_flight.labels(_check_label("task", task)).inc()

    def task_done(self, task: str) -> None:
        self.in_flight.labels(_check_label("task", task)).dec()

    def task_retried(self, task: str) -> None:
        self.retries.labels(_check_label("task", task)).inc()

    def task_redelivered(self, task: str) -> None:
        self.redeliveries.labels(_check_label("task", task)).inc()

    def input_readahead(self, result: str) -> None:
        self.readahead.labels(_check_label("result", result)).inc()

    # --- devices ----------------------------------------------------------

    def sample_gpu(self) -> None:
        """Set the GPU memory gauges from torch.cuda, only in a process that has
        already initialised CUDA (a parent must never initialise CUDA before it
        forks). Nothing on CPU-only processes."""
        for device, (used, total) in gpu_memory().items():
            self.gpu_used.labels(device).set(used)
            self.gpu_total.labels(device).set(total)

    # --- output -----------------------------------------------------------

    def write_textfile(self, path: str | os.PathLike) -> None:
        """Write this registry in the text exposition format (node-exporter textfile collector)."""
        write_to_textfile(str(path), self.registry)


def _observe_many(hist: Histogram, samples: np.ndarray) -> None:
    """``hist.observe`` for every sample, in one increment per bucket.

    Up to 4096 samples arrive per image; in multiprocess mode each ``observe``
    is an mmap write under a lock, so bucketing with numpy first turns thousands
    of writes into at most 21. Uses prometheus_client's per-bucket values (the
    same ones ``observe`` increments); falls back to ``observe`` if they change."""
    if samples.size == 0:
        return
    bounds = getattr(hist, "_upper_bounds", None)
    buckets = getattr(hist, "_buckets", None)
    total = getattr(hist, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in samples:
            hist.observe(float(value))
        return
    # observe() puts v in the first bucket with v <= bound: searchsorted(side="left").
    index = np.searchsorted(np.asarray(bounds, dtype=np.float64), samples, side="left")
    counts = np.bincount(index, minlength=len(bounds))
    total.inc(float(samples.sum()))
    for i, count in enumerate(counts[:len(bounds)]):
        if count:
            buckets[i].inc(int(count))


# --- per-process instance and multiprocess mode ---------------------------

_process_metrics: Metrics | None = None
_lock = threading.Lock()


def process_metrics() -> Metrics:
    """The per-process :class:`Metrics` on the default registry (created on first
    use). With ``PROMETHEUS_MULTIPROC_DIR`` set (see :func:`prepare_multiprocess_dir`)
    its values live in that directory, one file set per process id."""
    global _process_metrics
    with _lock:
        if _process_metrics is None:
            _process_metrics = Metrics(REGISTRY)
        return _process_metrics


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def prepare_multiprocess_dir(path: str | os.PathLike) -> Path:
    """Switch this process (and the children it will fork) to multiprocess mode.

    Creates ``path``, deletes the ``*.db`` files a previous worker left there
    (stale counters would otherwise be added to the new ones; other files are
    left alone, so a mistaken path loses nothing else), and sets
    ``PROMETHEUS_MULTIPROC_DIR``. Must run in the parent before the pool forks
    and before :func:`process_metrics` is first called; raises ``RuntimeError``
    otherwise, ``OSError`` if the folder cannot be created."""
    if _process_metrics is not None and multiprocess_dir() is None:
        raise RuntimeError("prepare_multiprocess_dir must run before process_metrics() creates the metrics")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in glob.glob(str(folder / "*.db")):
        os.remove(stale)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    # prometheus_client picks its value class when it is first imported; this
    # module imports it before the worker knows the folder, so pick again.
    values.ValueClass = values.get_value_class()
    return folder


def mark_process_dead(pid: int) -> None:
    """Forget a dead process's live gauges (in flight, GPU memory). Its counters
    and histograms stay: they are totals. No-op outside multiprocess mode."""
    path = multiprocess_dir()
    if path:
        _mp.mark_process_dead(pid, path)


def start_metrics_server(port: int, addr: str = "127.0.0.1", redis_url: str | None = None,
                         queues: list[str] | None = None, *, registry: CollectorRegistry | None = None,
                         transport_options: dict | None = None, jobs=None, schedules=None):
    """Serve ``/metrics`` on ``addr:port`` (port 0 picks a free port: read
    ``server.server_port``) from a daemon thread; returns the WSGI server
    (``server.shutdown()`` stops it).

    What it serves: ``registry`` if given (the embedded run); otherwise (a
    worker host), in multiprocess mode the merged files of every worker
    process, else the default registry, plus ``retouch_worker_up`` and the
    worker's live process count. Added live when asked: queue depth per queue (ready + reserved/unacked, when
    ``redis_url`` and ``queues`` are given; ``transport_options`` as in Celery's
    ``broker_transport_options``), and per-job progress for active jobs when
    ``jobs`` (a callable returning ``{job: {status: count}}``) is given, and the
    schedules' last runs and stale outputs when ``schedules`` is (``ScheduleCollector``)."""
    from prometheus_client import start_http_server

    if registry is None:  # a worker host
        if multiprocess_dir():
            registry = CollectorRegistry()
            # Collected in registration order: sweep the dead before merging the files.
            registry.register(DeadProcessSweeper(multiprocess_dir()))
            _mp.MultiProcessCollector(registry)
        else:
            registry = REGISTRY
        registry.register(WorkerCollector())
    if redis_url and queues:
        registry.register(QueueDepthCollector(redis_url, queues, transport_options))
    if jobs is not None:
        registry.register(JobProgressCollector(jobs))
    if schedules is not None:
        registry.register(ScheduleCollector(schedules))
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    log.info("metrics on http://%s:%d/metrics", addr, server.server_port)
    return server


class DeadProcessSweeper:
    """Before each scrape, mark dead any process whose live-gauge files remain
    (a child killed by SIGKILL or the OOM killer never runs its shutdown hook)."""

    _PID = re.compile(r"^gauge_live\w+?_(\d+)\.db$")

    def __init__(self, path: str):
        self.path = path

    def collect(self):
        for name in os.listdir(self.path):
            m = self._PID.match(name)
            if m and not _alive(int(m.group(1))):
                _mp.mark_process_dead(int(m.group(1)), self.path)
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
