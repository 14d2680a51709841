"""Live figures read at scrape time: queue depth from the broker, worker up,
per-job progress of active jobs, and GPU memory from torch.cuda.

These are custom collectors (``collect()`` yields metric families), so their
values are read when Prometheus scrapes, in the process that serves
``/metrics``, never cached in a child that may be dead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)


def gpu_memory() -> dict[str, tuple[int, int]]:
    """``{"cuda:N": (used_bytes, total_bytes)}`` for the device this process
    works on, from the driver (``torch.cuda.mem_get_info``). Empty unless torch
    is already imported and CUDA already initialised here: a CPU process reports
    nothing, and a parent that will fork never initialises CUDA because of us.
    ``N`` is the physical index (``CUDA_VISIBLE_DEVICES`` mapped back), so workers
    pinned to different GPUs of one host do not collide."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    try:
        if not torch.cuda.is_initialized():
            return {}
        index = torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
    except Exception as exc:  # a broken driver must not break a scrape or a task
        log.warning("cannot read GPU memory: %s", exc)
        return {}
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    physical = visible[index] if index < len(visible) else str(index)
    return {f"cuda:{physical}": (int(total - free), int(total))}


class WorkerCollector:
    """``retouch_worker_up`` (1 while this endpoint answers: Prometheus' ``up``
    says the same from outside, this one lets ``absent()`` name the metric) and
    ``retouch_worker_processes`` (this process plus its live children: a prefork
    pool that lost its children shows here)."""

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily("retouch_worker_up", "1 while the worker's metrics endpoint answers", value=1)
        try:
            import psutil

            me = psutil.Process()
            count = 1 + sum(1 for c in me.children(recursive=False) if c.is_running()
                            and c.status() != psutil.STATUS_ZOMBIE)
        except Exception as exc:
            log.warning("cannot count worker processes: %s", exc)
            return
        yield GaugeMetricFamily("retouch_worker_processes", "Live processes of this worker (parent + pool)",
                                value=count)


class QueueDepthCollector:
    """Messages per Celery queue on a Redis broker, as kombu's Redis transport keeps them:

    - ready: one list per queue and priority step (``queue`` for priority 0,
      ``queue + sep + str(step)`` for the others; ``sep`` is ``"\\x06\\x16"``);
    - reserved (unacked): fetched by a worker (prefetched or running) but not
      acknowledged, kept in the ``unacked`` hash (delivery tag -> JSON
      ``[message, exchange, routing_key]``) indexed by the ``unacked_index``
      zset; a lost worker's messages return to the list after the visibility
      timeout. They are attributed to a queue by routing key (Celery's default
      routing uses the queue name), else by exchange; others are not counted.

    ``retouch_queue_depth{queue, state="ready"|"unacked"}``; the depth of a
    queue is their sum. ``retouch_broker_up`` is 0 when Redis cannot be read
    (and no depth is reported then, rather than a false zero)."""

    def __init__(self, redis_url: str, queues: list[str], transport_options: dict | None = None,
                 timeout: float = 2.0):
        from kombu.transport.redis import Channel

        opts = transport_options or {}
        self.queues = list(dict.fromkeys(queues))
        self.prefix = opts.get("global_keyprefix", Channel.global_keyprefix) or ""
        self.sep = opts.get("sep", Channel.sep)
        self.steps = list(opts.get("priority_steps", Channel.priority_steps))
        self.unacked_key = self.prefix + opts.get("unacked_key", Channel.unacked_key)
        self.redis_url = redis_url
        self.timeout = timeout
        self._client = None

    def keys(self, queue: str) -> list[str]:
        """The Redis lists holding ``queue``'s ready messages (kombu's ``_q_for_pri``)."""
        return [self.prefix + (f"{queue}{self.sep}{step}" if step else queue) for step in self.steps]

    def depth(self) -> dict[str, dict[str, int]]:
        """``{queue: {"ready": n, "unacked": m}}``; raises redis errors."""
        import redis

        if self._client is None:
            self._client = redis.Redis.from_url(self.redis_url, socket_timeout=self.timeout,
                                                socket_connect_timeout=self.timeout)
        pipe = self._client.pipeline(transaction=False)
        for queue in self.queues:
            for key in self.keys(queue):
                pipe.llen(key)
        lengths = pipe.execute()
        out, i = {}, 0
        for queue in self.queues:
            n = len(self.steps)
            out[queue] = {"ready": int(sum(lengths[i:i + n])), "unacked": 0}
            i += n
        for _tag, raw in self._client.hscan_iter(self.unacked_key, count=500):
            try:
                _message, exchange, routing_key = json.loads(raw)
            except (ValueError, TypeError):
                continue
            queue = routing_key if routing_key in out else exchange if exchange in out else None
            if queue is not None:
                out[queue]["unacked"] += 1
        return out

    def collect(self) -> Iterable[GaugeMetricFamily]:
        up = GaugeMetricFamily("retouch_broker_up", "1 if the broker could be read for queue depth")
        try:
            depth = self.depth()
        except Exception as exc:
            log.warning("queue depth: cannot read %s: %s", _redact(self.redis_url), exc)
            self._client = None
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        g = GaugeMetricFamily("retouch_queue_depth", "Messages in a Celery queue: ready (waiting) or "
                              "unacked (reserved by a worker, prefetched or running)", labels=["queue", "state"])
        for queue, states in depth.items():
            for state, n in states.items():
                g.add_metric([queue, state], n)
        yield g


class JobProgressCollector:
    """``retouch_job_images{job, status}`` for active jobs only, plus
    ``retouch_jobs_active``: a job's series exist while it runs and vanish when
    it ends, so the job label stays bounded by the number of concurrent jobs.
    ``source()`` returns ``{job_id: {status: count}}`` for the active jobs."""

    def __init__(self, source: Callable[[], dict[str, dict[str, int]]]):
        self.source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            jobs = self.source()
        except Exception as exc:
            log.warning("job progress: %s", exc)
            return
        active = GaugeMetricFamily("retouch_jobs_active", "Jobs submitted and not finished", value=len(jobs))
        yield active
        g = GaugeMetricFamily("retouch_job_images", "Images of an active job by status", labels=["job", "status"])
        for job, counts in jobs.items():
            for status, n in counts.items():
                g.add_metric([str(job), str(status)], n)
        yield g


class ScheduleCollector:
    """Per schedule (``retouch schedule``): ``retouch_schedule_period_seconds``,
    ``retouch_schedule_last_run_timestamp_seconds``, ``retouch_schedule_last_run_result``
    (1 for the last run's result, ok / skipped / failed, 0 for the others) and
    ``retouch_stale_outputs{schedule, cause}`` as its last run counted them
    (``cause``: ``model:NAME``, ``code:STAGE``, ``input``, ``plan``, several joined
    by ``+``), plus ``retouch_schedule_created_timestamp_seconds``. ``source()``
    returns ``{name: {period, created, last_time, last_result, stale}}``."""

    RESULTS = ("ok", "skipped", "failed")

    def __init__(self, source: Callable[[], dict[str, dict]]):
        self.source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            schedules = self.source()
        except Exception as exc:
            log.warning("schedules: %s", exc)
            return
        period = GaugeMetricFamily("retouch_schedule_period_seconds", "Seconds between a schedule's turns",
                                   labels=["schedule"])
        last = GaugeMetricFamily("retouch_schedule_last_run_timestamp_seconds",
                                 "Unix time of a schedule's last run (its turn ran, skipped or failed)",
                                 labels=["schedule"])
        created = GaugeMetricFamily("retouch_schedule_created_timestamp_seconds",
                                    "Unix time a schedule was added (a schedule that never ran is overdue from it)",
                                    labels=["schedule"])
        result = GaugeMetricFamily("retouch_schedule_last_run_result", "1 for the result of a schedule's last run",
                                   labels=["schedule", "result"])
        stale = GaugeMetricFamily("retouch_stale_outputs", "Stale outputs by cause, as a schedule's last run found "
                                  "them", labels=["schedule", "cause"])
        for name, s in schedules.items():
            if s.get("period"):
                period.add_metric([name], float(s["period"]))
            if s.get("created"):
                created.add_metric([name], float(s["created"]))
            if s.get("last_time"):
                last.add_metric([name], float(s["last_time"]))
                for r in self.RESULTS:
                    result.add_metric([name, r], 1.0 if s.get("last_result") == r else 0.0)
            for cause, n in (s.get("stale") or {}).items():
                stale.add_metric([name, cause.replace("=", ":").replace(",", "+")], float(n))
        yield from (period, created, last, result, stale)


def _redact(url: str) -> str:
    """A broker URL without its password, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
