"""Cluster scaling and overhead: images/min per worker count, the speed-up,
and distributed time over in-process time for the same images and ops.

In-process: decode, ``orchestration.local.restore`` and encode each image in
this process (models warm), one at a time with every core; with ``--workers
1,2`` also N processes at once (``cores / N`` threads each), so the embedded
run's two strategies are measured side by side. Distributed: the same images in
an S3 bucket, one ``retouch submit``, served by ``retouch worker --cpu
--cpu-concurrency N`` (solo processes with the default thread budget, cores / N
each); the time runs from the submit to the job's manifest. Both warm up first
(model loads are not per-image latency). Repeats alternate the sides and
medians are printed, never asserted. Without ``--redis``/``--s3`` it starts its
own redis-server and weed mini on free loopback ports; with them it measures
the workers already serving that cluster (credentials from the usual
settings: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or RETOUCH_S3_*).
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
from worker import threads as thread_budget
from worker.degrade import legible, overlay_text, random_text_specs
from worker.io import decode, encode
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import Plan

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--images", type=int, default=6, help="images per run (default 6)")
    parser.add_argument("--size", type=int, default=1024, help="image side in px (default 1024, ~1 MP)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each side (default 2)")
    parser.add_argument("--workers", default="1", help="worker process counts to compare, e.g. 1,2 (default 1)")
    parser.add_argument("--ops", default="remove-text", help="ops (default remove-text)")
    parser.add_argument("--inpaint", default="auto", help="inpaint variant (default auto)")
    parser.add_argument("--upscale", default="lanczos", help="upscale variant when --ops has upscale")
    parser.add_argument("--scale", type=float, default=2.0, help="upscale factor (default 2)")
    parser.add_argument("--redis", help="measure an existing cluster: its Redis URL (workers already running)")
    parser.add_argument("--s3", help="the existing cluster's S3 endpoint URL (with --redis)")
    parser.add_argument("--bucket", default="retouch-bench", help="bucket for the images (default retouch-bench)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")


def parse_workers(text: str) -> list[int]:
    try:
        counts = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise SystemExit(f"retouch bench cluster: --workers must list positive counts, e.g. 1,2, but is {text!r}")
    return counts


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


_pool_cache: ModelCache | None = None


def _pool_start(threads: int, model_dir: str | None, warm: dict[str, bytes], plan) -> None:
    """A parallel in-process worker: its thread budget, its models loaded."""
    global _pool_cache
    thread_budget.apply(threads)
    _pool_cache = ModelCache(device="cpu", model_dir=model_dir)
    in_process(warm, plan, _pool_cache)


def _pool_one(name: str, data: bytes, plan) -> None:
    restored = restore(decode(data, name), plan, _pool_cache)
    encode(restored.image, plan.format, plan.quality)


class Parallel:
    """``n`` processes restoring images at once, ``cores // n`` threads each."""

    def __init__(self, n: int, model_dir: str | None, warm: dict[str, bytes], plan):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.plan = plan
        self.pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_pool_start,
                                        initargs=(thread_budget.budget(n), model_dir, warm, plan))
        list(self.pool.map(time.sleep, [0.5] * n))  # every process started (and warm) before timing

    def seconds(self, images: dict[str, bytes]) -> float:
        start = time.perf_counter()
        list(self.pool.map(_pool_one, images.keys(), images.values(), [self.plan] * len(images)))
        return time.perf_counter() - start

    def close(self) -> None:
        self.pool.shutdown()


def _start_worker(env: dict, n: int, log_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestration.cli", "worker", "--cpu", "--cpu-concurrency",
                             str(n)], env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _ipm(seconds: float, images: int) -> float:
    return round(60 * images / seconds, 1)


def run(args) -> int:
    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    plan = Plan(ops=ops, inpaint=args.inpaint, upscale=args.upscale, scale=args.scale, device="auto")
    counts = [] if args.redis else parse_workers(args.workers)
    if bool(args.redis) != bool(args.s3):
        raise SystemExit("retouch bench cluster: --redis and --s3 go together (an existing cluster)")
    images = make_images(args.images, args.size)
    tmp = Path(tempfile.mkdtemp(prefix="retouch-bench-cluster-"))
    servers = []
    if args.redis:
        os.environ.update({"RETOUCH_REDIS_URL": args.redis, "RETOUCH_S3_ENDPOINT_URL": args.s3})
    else:
        access, secret = "bench" + secrets.token_hex(4), secrets.token_urlsafe(18)
        servers.append(start_redis(tmp / "redis"))
        servers.append(start_s3(tmp / "s3", access_key=access, secret_key=secret))
        os.environ.update({"RETOUCH_REDIS_URL": servers[0].url, "RETOUCH_S3_ENDPOINT_URL": servers[1].url,
                           "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret, "RETOUCH_DEVICE": "cpu"})
    env = dict(os.environ)
    local: dict[int, list[float]] = {n: [] for n in counts or [1]}
    dist: dict[int, list[float]] = {n: [] for n in counts or [0]}
    task_sums: dict[int, list[float]] = {n: [] for n in dist}
    loads: dict[int, list[float]] = {n: [] for n in dist}   # 1-minute load average as each run began
    try:
        settings = load_settings()
        app = make_app(settings)
        storage = Storage.from_settings(settings)
        store = JobStore(redis.Redis.from_url(settings.redis_url))
        bucket = args.bucket
        storage.ensure_bucket(bucket)
        run_id = secrets.token_hex(3)
        for name, data in images.items():
            storage.put(bucket, f"{run_id}/in/{name}", data)
        warm_n = max(counts or [1]) * 2
        for name, data in make_images(warm_n, args.size, seed=99).items():
            storage.put(bucket, f"{run_id}/warm/{name}", data)
        warm1 = make_images(1, args.size, seed=99)

        cache = ModelCache(device="cpu", model_dir=settings.model_dir)
        in_process(warm1, plan, cache)  # models load here, not in the timing
        for n in counts or [0]:
            worker = _start_worker(env, n, tmp / f"worker-{n}.log") if n else None
            parallel = Parallel(n, settings.model_dir, warm1, plan) if n > 1 else None
            try:
                # warm every worker process (a solo child takes one task at a time)
                distributed(app, storage, store, bucket, f"{run_id}/warm", f"{run_id}/warm-out-{n}", plan)
                for r in range(args.repeats):
                    loads[n].append(round(os.getloadavg()[0], 2))
                    if n <= 1:
                        local[max(n, 1)].append(in_process(images, plan, cache))
                    else:
                        local[n].append(parallel.seconds(images))
                    seconds, lines = distributed(app, storage, store, bucket, f"{run_id}/in",
                                                 f"{run_id}/out-{n}-{r}", plan)
                    bad = [line for line in lines if line["status"] != "ok"]
                    if bad:
                        raise RuntimeError(f"bench job failed: {bad[0]['error']}")
                    dist[n].append(seconds)
                    task_sums[n].append(statistics.mean(sum(line["task_seconds"].values()) for line in lines))
            finally:
                if parallel:
                    parallel.close()
                if worker:
                    _stop(worker)
    finally:
        for server in reversed(servers):
            server.stop()

    n_img = len(images)
    rows = []
    for n in dist:
        loc = statistics.median(local[max(n, 1)])
        d = statistics.median(dist[n])
        rows.append({"workers": n or "existing", "images_per_min": _ipm(d, n_img),
                     "in_process_images_per_min": _ipm(loc, n_img),
                     "in_process_mode": "one image at a time, all cores" if n <= 1 else
                     f"{n} images at once, {n} processes",
                     "distributed_over_in_process": round(d / loc, 3),
                     "task_seconds_per_image": round(statistics.median(task_sums[n]), 3),
                     "load_average_1m": loads[n],
                     "runs_s": {"in_process": [round(x, 2) for x in local[max(n, 1)]],
                                "distributed": [round(x, 2) for x in dist[n]]}})
    base = next((row["images_per_min"] for row in rows if row["workers"] == 1), None)
    for row in rows:
        row["speed_up"] = round(row["images_per_min"] / base, 3) if base else None
    figures = {"images": n_img, "size": f"{args.size}x{args.size}", "ops": ops, "inpaint": args.inpaint,
               "repeats": args.repeats, "rows": rows, "machine": machine("cpu")}
    m = figures["machine"]
    print(f"cluster scaling, {n_img} images of {args.size}x{args.size}, ops {','.join(ops)}, "
          f"median of {args.repeats}{' (existing cluster)' if args.redis else ''}:")
    print(f"  {'workers':>8} {'images/min':>11} {'speed-up':>9} {'in-process/min':>15} {'dist/in-proc':>13}  "
          f"in-process mode")
    for row in rows:
        print(f"  {row['workers']:>8} {row['images_per_min']:>11} {row['speed_up'] or '-':>9} "
              f"{row['in_process_images_per_min']:>15} {row['distributed_over_in_process']:>12}x  "
              f"{row['in_process_mode']}; load {row['load_average_1m']}")
    print(f"  machine: {m['cpu']}, {m['usable_cores']}/{m['cores']} cores, {m['memory_gb']} GB, "
          f"load average {m['load_average_1m']} (after the runs)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0
