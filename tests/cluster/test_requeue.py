"""The supervisor's requeue of a dead worker's messages, on a real
redis-server: what is put back, where, and which deaths the delivery cap
counts (``lost_task_key``): a death while the task ran, or with a message
just taken, counts; a death after the task finished (its acknowledgement
still on its way) puts the message back without counting."""

from __future__ import annotations

import json
import uuid

import redis

from orchestration.jobs import current_task_key, last_task_key, lost_task_key, received_task_key
from orchestration.settings import Settings
from tasks.app import make_app
from tasks.requeue import requeue_held


def test_requeue_counts_only_deaths_during_a_task(redis_server):
    app = make_app(Settings(redis_url=redis_server.url))
    client = redis.Redis.from_url(redis_server.url)
    # the dead workers' connection: left open, as closing it would put its
    # unacknowledged messages back by itself
    conn = app.connection_for_write()

    def take() -> str:   # as a worker takes a message: unacknowledged
        message = conn.default_channel.basic_get("cpu", no_ack=False)
        assert message is not None, "nothing on the queue"
        return message.headers["id"]

    ids = [str(uuid.uuid4()) for _ in range(4)]
    for task_id in ids:   # first sent, first taken
        app.send_task("retouch.stages", args=[{}, ["detect"]], task_id=task_id, queue="cpu")
    running, finished, just_taken = take(), take(), take()
    assert [running, finished, just_taken] == ids[:3]

    # host a died inside a task; host b after finishing one (not yet acked);
    # host c right after taking a message, its last task long acknowledged
    client.set(current_task_key("a"), json.dumps({"task": "detect", "id": running}))
    client.set(received_task_key("a"), running)
    client.set(last_task_key("b"), finished)
    client.set(received_task_key("b"), finished)
    client.set(last_task_key("c"), str(uuid.uuid4()))
    client.set(received_task_key("c"), just_taken)

    assert requeue_held(app, "a") == [running]
    assert requeue_held(app, "b") == [finished]
    assert requeue_held(app, "c") == [just_taken]
    assert int(client.get(lost_task_key(running, 0))) == 1
    assert client.get(lost_task_key(finished, 0)) is None
    assert int(client.get(lost_task_key(just_taken, 0))) == 1
    # all three back, ahead of the message never taken: the last put back
    # is the next consumed
    assert client.llen("cpu") == 4
    assert [take(), take(), take()] == [just_taken, finished, running]
    # a second death of the same running task counts again
    assert requeue_held(app, "a") == [running]
    assert int(client.get(lost_task_key(running, 0))) == 2
    # nothing held: nothing put back, nothing counted
    assert requeue_held(app, "nobody") == []
    assert len(list(client.scan_iter("retouch:lost:*"))) == 2
    conn.release()
