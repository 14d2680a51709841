"""Helpers for the cluster tests: run the CLI, wait for a job, make photos."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def retouch(*args: str, env: dict, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Run the retouch CLI in a subprocess with ``env``."""
    proc = subprocess.run([sys.executable, "-m", "orchestration.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"retouch {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_photos(n: int, seed: int = 0, size: int = 256) -> dict[str, bytes]:
    """``n`` JPEG photos: ``size``-px crops of scikit-image's bundled colour
    photos at seeded offsets, with seeded text overlays."""
    import skimage.data
    from PIL import Image as PILImage

    from worker.degrade import legible, overlay_text, random_text_specs

    sources = {"astronaut": skimage.data.astronaut(), "chelsea": skimage.data.chelsea(),
               "coffee": skimage.data.coffee(), "rocket": skimage.data.rocket(),
               "motorcycle": skimage.data.stereo_motorcycle()[0]}
    rng = np.random.default_rng(seed)
    names = list(sources)
    photos = {}
    for i in range(n):
        name = names[i % len(names)]
        full = sources[name]
        y = int(rng.integers(0, full.shape[0] - size + 1))
        x = int(rng.integers(0, full.shape[1] - size + 1))
        clean = full[y:y + size, x:x + size].astype(np.float32) / 255.0
        specs = random_text_specs(rng, size, size, lines=2, max_angle=8, min_opacity=0.8)
        degraded, _ = overlay_text(clean, legible(clean, specs))
        buf = io.BytesIO()
        PILImage.fromarray((np.clip(degraded, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buf, "JPEG", quality=92)
        photos[f"{name}-{i:03d}.jpg"] = buf.getvalue()
    return photos


def wait_job(env: dict, job: str, timeout: float) -> str:
    """``retouch watch JOB`` until it finishes; returns its last status line."""
    proc = retouch("watch", job, "--timeout", str(timeout), "--interval", "0.3", env=env, timeout=timeout + 30,
                   check=False)
    assert proc.returncode in (0, 1), f"watch exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-2000:]}"
    return proc.stdout.strip().splitlines()[-1]


def wait_finished(store, job: str, timeout: float = 120):
    """The job's status (``orchestration.jobs.status``) once it is finished."""
    import time

    from orchestration.jobs import status

    deadline = time.monotonic() + timeout
    while not (st := status(store, job)).finished:
        assert time.monotonic() < deadline, st.line()
        time.sleep(0.1)
    return st


def in_process_job(settings, bucket: str, photos: dict[str, bytes], prefix: str, plan, timeout: float = 180):
    """Upload ``photos`` under ``<prefix>/in`` and restore them as a job with
    a worker in this process (Celery's test worker, solo pool, ``cpu`` queue,
    on the real Redis and S3), so it sees what the test changed in-process.
    Returns (storage, the finished job's status)."""
    import redis
    from celery.contrib.testing.worker import start_worker

    from orchestration.jobs import JobStore
    from orchestration.storage import Storage
    from tasks import runtime
    from tasks.app import make_app
    from tasks.canvas import submit

    storage = Storage.from_settings(settings)
    for name, data in photos.items():
        storage.put(bucket, f"{prefix}/in/{name}", data)
    app = make_app(settings)
    runtime.configure(settings, runtime.WorkerOptions(device="cpu"))
    store = JobStore(redis.Redis.from_url(settings.redis_url))
    with start_worker(app, pool="solo", perform_ping_check=False, queues=["cpu"]):
        job = submit(app, storage, store, f"s3://{bucket}/{prefix}/in", f"s3://{bucket}/{prefix}/out", plan).job
        return storage, wait_finished(store, job, timeout)
