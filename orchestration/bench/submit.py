"""Submit at archive scale: list and enqueue a prefix of many objects.

Starts its own redis-server and weed mini on free loopback ports, puts
``--objects`` zero-byte ``.jpg`` objects under one prefix (a bounded pool of
concurrent puts), then measures, with no worker running (so every task stays
queued): listing alone (keys/s), and one ``submit`` of the prefix (tasks/s
enqueued, seconds until the first task is on its queue, Redis memory per
queued image: the ``used_memory`` delta over the images queued). Figures are
printed with the machine line, never asserted.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from orchestration.bench.pipeline import machine
from orchestration.cluster import start_redis, start_s3
from orchestration.jobs import JobStore, list_images
from orchestration.settings import load_settings
from orchestration.storage import Storage, parse_url
from tasks.app import CPU_QUEUE, make_app
from tasks.canvas import submit
from worker.pipeline.plan import Plan


def add_arguments(parser) -> None:
    parser.add_argument("--objects", type=int, default=100_000, help="objects under the prefix (default 100000)")
    parser.add_argument("--batch-size", type=int, default=100, help="images per chord batch (default 100)")
    parser.add_argument("--put-concurrency", type=int, default=16, help="concurrent puts while filling (default 16)")
    parser.add_argument("--ops", default="remove-text", help="ops of the submitted plan (default remove-text)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")


def fill(storage: Storage, bucket: str, prefix: str, n: int, concurrency: int) -> float:
    """Put ``n`` zero-byte objects with at most ``concurrency`` in flight; seconds taken."""
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        window = concurrency * 4
        for first in range(0, n, window):  # bounded: never n futures at once
            list(pool.map(lambda i: storage.put(bucket, f"{prefix}/{i:07d}.jpg", b""),
                          range(first, min(n, first + window))))
    return time.perf_counter() - start


class FirstTask(threading.Thread):
    """Polls the queue's length until a message is there; ``seconds`` from ``start``."""

    def __init__(self, client: redis.Redis, queue: str, timeout: float):
        super().__init__(daemon=True)
        self.client, self.queue, self.timeout = client, queue, timeout
        self.start_time = time.perf_counter()
        self.seconds: float | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.client.llen(self.queue) > 0:
                self.seconds = time.perf_counter() - self.start_time
                return
            time.sleep(0.005)


def run(args) -> int:
    if args.objects < 1 or args.batch_size < 1:
        raise SystemExit(f"retouch bench submit: --objects and --batch-size must be at least 1 but are "
                         f"{args.objects} and {args.batch_size}")
    tmp = Path(tempfile.mkdtemp(prefix="retouch-bench-submit-"))
    access, secret = "bench" + secrets.token_hex(4), secrets.token_urlsafe(18)
    servers = [start_redis(tmp / "redis")]
    try:
        servers.append(start_s3(tmp / "s3", access_key=access, secret_key=secret))
        settings = load_settings(redis_url=servers[0].url, s3_endpoint_url=servers[1].url,
                                 s3_access_key_id=access, s3_secret_access_key=secret)
        storage = Storage.from_settings(settings)
        storage.ensure_bucket("bench")
        print(f"filling s3://bench/in with {args.objects} zero-byte objects ...", flush=True)
        fill_s = fill(storage, "bench", "in", args.objects, args.put_concurrency)

        start = time.perf_counter()
        listed = sum(1 for _ in list_images(storage, parse_url("s3://bench/in")))
        list_s = time.perf_counter() - start

        client = redis.Redis.from_url(settings.redis_url)
        app = make_app(settings)
        plan = Plan(ops=[op.strip() for op in args.ops.split(",") if op.strip()])
        before = client.info("memory")["used_memory"]
        watcher = FirstTask(redis.Redis.from_url(settings.redis_url), CPU_QUEUE, timeout=600)
        watcher.start()
        submitted = submit(app, storage, JobStore(client), "s3://bench/in", "s3://bench/out", plan,
                           batch_size=args.batch_size, queues=[])
        submit_s = time.perf_counter() - watcher.start_time
        watcher.join(timeout=5)
        after = client.info("memory")["used_memory"]
        queued = client.llen(CPU_QUEUE)
        sample = client.lindex(CPU_QUEUE, 0) or b""
    finally:
        for server in reversed(servers):
            server.stop()

    figures = {
        "objects": args.objects, "listed": listed, "images": submitted.images, "batches": submitted.batches,
        "batch_size": args.batch_size, "ops": plan.ops,
        "fill_puts_per_s": round(args.objects / fill_s),
        "list_keys_per_s": round(listed / list_s),
        "submit_s": round(submit_s, 2),
        "enqueued_per_s": round(submitted.images / submit_s),
        "first_task_s": round(watcher.seconds, 3) if watcher.seconds is not None else None,
        "messages_queued": queued,
        "redis_bytes_per_image": round((after - before) / max(1, submitted.images)),
        "message_bytes": len(sample),
        "machine": machine("cpu"),
    }
    print(f"submit of {args.objects} objects, batches of {args.batch_size}, ops {','.join(plan.ops)}, no worker:")
    print(f"  fill        {figures['fill_puts_per_s']} puts/s ({args.put_concurrency} concurrent)")
    print(f"  list        {figures['list_keys_per_s']} keys/s")
    print(f"  enqueue     {figures['enqueued_per_s']} images/s ({submitted.images} in {submit_s:.1f} s, "
          f"{submitted.batches} batches)")
    print(f"  first task  {figures['first_task_s']} s after the submit began")
    print(f"  redis       {figures['redis_bytes_per_image']} B per queued image "
          f"({queued} messages; one message {figures['message_bytes']} B)")
    m = figures["machine"]
    print(f"  machine     {m['cpu']}, {m['usable_cores']}/{m['cores']} cores, load average {m['load_average_1m']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0
