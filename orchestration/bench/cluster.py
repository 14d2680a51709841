"""Orchestration overhead of the cluster: distributed time over in-process time
for the same images and ops.

In-process: decode, ``orchestration.local.restore`` and encode each image in
this process (models warm). Distributed: the same images in an S3 bucket, one
``retouch submit``, served by ONE worker process (``retouch worker --cpu``,
solo pool), so neither side gets more cores than the other; the time runs from
the submit to the job's manifest. Both warm up first (model loads are not
per-image latency). The ratio is distributed seconds per image over in-process
seconds per image; repeats alternate the two and medians are printed, never
asserted. Without ``--redis-url``/``--s3-endpoint`` it starts its own
redis-server and weed mini on free loopback ports.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from orchestration.bench.pipeline import machine
from orchestration.cluster import start_redis, start_s3
from orchestration.jobs import JobStore, read_manifest, status
from orchestration.local import restore
from orchestration.settings import load_settings
from orchestration.storage import Storage
from tasks.app import make_app
from tasks.canvas import submit
from worker.degrade import legible, overlay_text, random_text_specs
from worker.io import decode, encode
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import Plan

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--images", type=int, default=6, help="images per run (default 6)")
    parser.add_argument("--size", type=int, default=1024, help="image side in px (default 1024, ~1 MP)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each side (default 2)")
    parser.add_argument("--ops", default="remove-text", help="ops (default remove-text)")
    parser.add_argument("--inpaint", default="auto", help="inpaint variant (default auto)")
    parser.add_argument("--upscale", default="lanczos", help="upscale variant when --ops has upscale")
    parser.add_argument("--scale", type=float, default=2.0, help="upscale factor (default 2)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")


def make_images(n: int, size: int, seed: int = 0) -> dict[str, bytes]:
    """``n`` JPEGs of ``size`` px: scikit-image's bundled photos resized, with text drawn on them."""
    import cv2
    import numpy as np
    import skimage.data
    from PIL import Image as PILImage

    sources = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket(),
               skimage.data.stereo_motorcycle()[0]]
    rng = np.random.default_rng(seed)
    images = {}
    for i in range(n):
        rgb = cv2.resize(sources[i % len(sources)], (size, size), interpolation=cv2.INTER_AREA if
                         sources[i % len(sources)].shape[0] > size else cv2.INTER_CUBIC).astype(np.float32) / 255
        specs = random_text_specs(rng, size, size, lines=3, min_size=size // 20, max_size=size // 9, max_angle=8)
        degraded, _ = overlay_text(rgb, legible(rgb, specs))
        buf = io.BytesIO()
        PILImage.fromarray((np.clip(degraded, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buf, "JPEG", quality=92)
        images[f"img-{i:03d}.jpg"] = buf.getvalue()
    return images


def in_process(images: dict[str, bytes], plan, cache) -> float:
    """Seconds for decode + restore + encode of every image, in this process."""
    start = time.perf_counter()
    for name, data in images.items():
        restored = restore(decode(data, name), plan, cache)
        encode(restored.image, plan.format, plan.quality)
    return time.perf_counter() - start


def distributed(app, storage, store, bucket: str, prefix: str, out: str, plan,
                timeout: float = 1800) -> tuple[float, list]:
    """Seconds from submit to the manifest, and the manifest lines."""
    start = time.perf_counter()
    job = submit(app, storage, store, f"s3://{bucket}/{prefix}", f"s3://{bucket}/{out}", plan, queues=[]).job
    deadline = time.monotonic() + timeout
    while not status(store, job).finished:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job} not finished after {timeout}s")
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    return seconds, read_manifest(storage, status(store, job).manifest)


def run(args) -> int:
    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    plan = Plan(ops=ops, inpaint=args.inpaint, upscale=args.upscale, scale=args.scale, device="auto")
    images = make_images(args.images, args.size)
    warm = make_images(1, args.size, seed=99)
    tmp = Path(tempfile.mkdtemp(prefix="retouch-bench-cluster-"))
    access, secret = "bench" + secrets.token_hex(4), secrets.token_urlsafe(18)
    servers = [start_redis(tmp / "redis")]
    servers.append(start_s3(tmp / "s3", access_key=access, secret_key=secret))
    env = {**os.environ, "RETOUCH_REDIS_URL": servers[0].url, "RETOUCH_S3_ENDPOINT_URL": servers[1].url,
           "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret, "RETOUCH_DEVICE": "cpu"}
    os.environ.update({k: v for k, v in env.items() if k.startswith(("RETOUCH_", "AWS_"))})
    worker = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "worker", "--cpu"], env=env,
                              stdout=(tmp / "worker.log").open("wb"), stderr=subprocess.STDOUT)
    try:
        settings = load_settings()
        app = make_app(settings)
        storage = Storage.from_settings(settings)
        store = JobStore(redis.Redis.from_url(settings.redis_url))
        bucket = "bench"
        storage.ensure_bucket(bucket)
        for name, data in images.items():
            storage.put(bucket, f"in/{name}", data)
        for name, data in warm.items():
            storage.put(bucket, f"warm/{name}", data)

        cache = ModelCache(device="cpu", model_dir=settings.model_dir)
        in_process(warm, plan, cache)                                      # load models here
        distributed(app, storage, store, bucket, "warm", "warm-out", plan)  # and in the worker
        local_s, dist_s, task_sums = [], [], []
        for r in range(args.repeats):
            local_s.append(in_process(images, plan, cache) / len(images))
            seconds, lines = distributed(app, storage, store, bucket, "in", f"out-{r}", plan)
            bad = [line for line in lines if line["status"] != "ok"]
            if bad:
                raise RuntimeError(f"bench job failed: {bad[0]['error']}")
            dist_s.append(seconds / len(images))
            task_sums.append(statistics.mean(sum(line["task_seconds"].values()) for line in lines))
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        for server in reversed(servers):
            server.stop()

    local_med, dist_med = statistics.median(local_s), statistics.median(dist_s)
    figures = {
        "images": len(images), "size": f"{args.size}x{args.size}", "ops": ops, "inpaint": args.inpaint,
        "repeats": args.repeats,
        "in_process_s_per_image": round(local_med, 3),
        "distributed_s_per_image": round(dist_med, 3),
        "ratio": round(dist_med / local_med, 3),
        "ratio_per_repeat": [round(d / lo, 3) for lo, d in zip(local_s, dist_s)],
        "task_seconds_per_image": round(statistics.median(task_sums), 3),
        "runs": {"in_process": [round(x, 3) for x in local_s], "distributed": [round(x, 3) for x in dist_s]},
        "machine": machine("cpu"),
    }
    print(f"cluster overhead, {len(images)} images of {args.size}x{args.size}, ops {','.join(ops)}, "
          f"one worker process vs in-process, median of {args.repeats}:")
    print(f"  in-process   {local_med:.3f} s/image")
    print(f"  distributed  {dist_med:.3f} s/image  (sum of task times {figures['task_seconds_per_image']:.3f} s/image)")
    print(f"  ratio        {figures['ratio']:.3f}x  (target <= 1.15x); per repeat: "
          + ", ".join(f"{d / lo:.3f}x" for lo, d in zip(local_s, dist_s))
          + f"; load average {figures['machine']['load_average_1m']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0
