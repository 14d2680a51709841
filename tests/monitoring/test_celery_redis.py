"""Against a real redis-server: queue depth counts ready and reserved (unacked)
messages as kombu's Redis transport stores them, and the Celery signal hooks
count tasks in flight, retries and real redeliveries through a real worker."""

from __future__ import annotations

import time

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from prometheus_client import REGISTRY

from monitoring import celery_signals
from monitoring.collectors import QueueDepthCollector
from monitoring.metrics import process_metrics
from promlib import wait_for

pytestmark = pytest.mark.cluster


def make_app(redis_url: str, name: str) -> Celery:
    app = Celery(name, broker=redis_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"], task_acks_late=True,
                    task_default_queue=f"{name}-q", broker_connection_retry_on_startup=True,
                    worker_hijack_root_logger=False)
    return app


def depth_of(collector: QueueDepthCollector) -> dict:
    out = {}
    for fam in collector.collect():
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_queue_depth_counts_ready_priority_and_unacked(redis_url):
    app = make_app(redis_url, "depth")

    @app.task(name="depth.noop")
    def noop():
        return None

    for _ in range(2):
        noop.apply_async(queue="q-a")
    noop.apply_async(queue="q-a", priority=5)  # kombu keeps it in the list "q-a\x06\x163"
    noop.apply_async(queue="q-b")
    collector = QueueDepthCollector(redis_url, ["q-a", "q-b", "q-empty"])
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        reserved = channel.basic_get("q-a", no_ack=False)  # as a worker's prefetch: out of the list, not acked
        assert reserved is not None
        d = depth_of(collector)
        assert d[("retouch_queue_depth", (("queue", "q-a"), ("state", "ready")))] == 2
        assert d[("retouch_queue_depth", (("queue", "q-a"), ("state", "unacked")))] == 1
        assert d[("retouch_queue_depth", (("queue", "q-b"), ("state", "ready")))] == 1
        assert d[("retouch_queue_depth", (("queue", "q-empty"), ("state", "ready")))] == 0
        assert d[("retouch_broker_up", ())] == 1
        # LLEN of the queue key alone would miss both the priority list and the reserved message
        import redis

        assert redis.Redis.from_url(redis_url).llen("q-a") == 1
        reserved.ack()
    d = depth_of(collector)
    assert d[("retouch_queue_depth", (("queue", "q-a"), ("state", "unacked")))] == 0


def test_broker_down_is_reported_not_a_false_zero():
    d = depth_of(QueueDepthCollector("redis://127.0.0.1:1/0", ["q"], timeout=0.5))
    assert d == {("retouch_broker_up", ()): 0}


def _sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_signals_count_in_flight_retries_and_redeliveries(redis_url):
    app = make_app(redis_url, "sig")
    celery_signals.connect(app)
    process_metrics()
    seen_in_flight = []

    @app.task(name="sig.flaky", bind=True, max_retries=2)
    def flaky(self):
        seen_in_flight.append(_sample("retouch_tasks_in_flight", task="sig.flaky"))
        if self.request.retries == 0:
            raise self.retry(countdown=0)

    @app.task(name="sig.plain")
    def plain():
        return None

    before = {k: _sample(*k[:1], task=k[1]) for k in [
        ("retouch_task_retries_total", "sig.flaky"), ("retouch_task_redeliveries_total", "sig.plain")]}
    # A message fetched and never acknowledged (a worker that died): kombu restores it
    # to the queue marked redelivered when the consumer's channel closes.
    plain.apply_async()
    with app.connection_for_write() as conn:
        assert conn.default_channel.basic_get("sig-q", no_ack=False) is not None
        conn.default_channel.close()
    flaky.apply_async()
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=20):
        wait_for(lambda: _sample("retouch_task_redeliveries_total", task="sig.plain")
                 > before[("retouch_task_redeliveries_total", "sig.plain")]
                 and len(seen_in_flight) >= 2, 30, "the worker to run both tasks")
        time.sleep(0.2)  # let postrun of the last task land
    assert _sample("retouch_task_retries_total", task="sig.flaky") == \
        before[("retouch_task_retries_total", "sig.flaky")] + 1
    assert _sample("retouch_task_redeliveries_total", task="sig.plain") == \
        before[("retouch_task_redeliveries_total", "sig.plain")] + 1
    # worker_ready declared every task: a task that never retried has a zero series, not none
    assert REGISTRY.get_sample_value("retouch_task_retries_total", {"task": "sig.plain"}) == 0.0
    assert seen_in_flight == [1.0, 1.0]  # counted while running
    assert _sample("retouch_tasks_in_flight", task="sig.flaky") == 0  # and released after, retry included
