"""Artifacts between tasks, stored in S3 under the image's artifact prefix.

A map (``worker.pipeline.artifacts``, kind ``map``) is one compressed ``.npz``
holding ``array`` (zero outside the text, so it compresses fast). Pixels
(kind ``pixels``) are stored as the pixels that differ from the decoded input
(``index``/``values``, plus ``alpha``): a fill touches a few percent of the
image, so this is exact and small; pixels of another size (after an upscale)
go whole (``rgb``). Everything is exact float data read back with
``allow_pickle=False``, so the distributed output equals the embedded one
byte for byte.

Keys are ``<prefix>/<stage>-<name>.npz``: one key per producer, so a
conditional write never meets an older value of the same name.
"""

from __future__ import annotations

import functools
import io
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from orchestration.storage import Storage, join
from worker.pipeline.artifacts import ARTIFACTS, Pixels
from worker.pipeline.job import ImageJob


def key_for(job: ImageJob, stage: str, name: str) -> str:
    return join(job.artifact_prefix, f"{stage}-{name}.npz")


def save(storage: Storage, job: ImageJob, stage: str, name: str, value, base: np.ndarray) -> None:
    """Store artifact ``name`` made by ``stage`` and record its key in ``job.artifacts``.
    ``base``: the decoded input's pixels (pixels artifacts are stored as a diff)."""
    if ARTIFACTS[name].kind == "pixels":
        arrays, compress = _pixel_arrays(value, base), False
    else:
        arrays, compress = {"array": value}, True
    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **{k: v for k, v in arrays.items() if v is not None})
    key = key_for(job, stage, name)
    storage.put(job.out_bucket, key, buf.getvalue(), {"retouch-job": job.job}, "application/octet-stream",
                overwrite=job.force)
    job.artifacts[name] = key


def save_all(storage: Storage, job: ImageJob, made: dict[str, str], values: dict, base: np.ndarray) -> None:
    """:func:`save` each artifact of ``made`` (name -> the stage that made it),
    the PUTs in flight together: one round trip's wait, not one per artifact."""
    futures = [_pool().submit(save, storage, job, stage, name, values[name], base) for name, stage in made.items()]
    for future in futures:
        future.result()


def fetch_all(storage: Storage, job: ImageJob, names) -> dict[str, Future]:
    """Start the GETs of the artifacts ``names`` the job has, all in flight
    together (and while the caller reads its input): name -> future bytes."""
    return {name: _pool().submit(storage.get, job.out_bucket, job.artifacts[name])
            for name in names if name in job.artifacts}


@functools.cache
def _pool() -> ThreadPoolExecutor:   # per process, made on first use (never inherited through a fork)
    return ThreadPoolExecutor(8, thread_name_prefix="retouch-artifacts")


def load(storage: Storage, job: ImageJob, name: str, base: np.ndarray, data: bytes | None = None):
    """Artifact ``name`` as the stage that made it left it, or None if none did
    (``data``: its bytes, fetched already)."""
    if name not in job.artifacts:
        return None
    if data is None:
        data = storage.get(job.out_bucket, job.artifacts[name])
    with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
        arrays = {k: loaded[k] for k in loaded.files}
    if ARTIFACTS[name].kind == "map":
        return arrays["array"]
    if "rgb" in arrays:
        return Pixels(arrays["rgb"], arrays.get("alpha"))
    rgb = base.copy()
    rgb.reshape(-1, rgb.shape[-1])[arrays["index"]] = arrays["values"]
    return Pixels(rgb, arrays.get("alpha"))


def _pixel_arrays(pixels: Pixels, base: np.ndarray) -> dict:
    if pixels.rgb.shape != base.shape:
        return {"rgb": pixels.rgb, "alpha": pixels.alpha}
    index = np.flatnonzero((pixels.rgb != base).any(axis=-1))
    return {"index": index, "values": pixels.rgb.reshape(-1, pixels.rgb.shape[-1])[index], "alpha": pixels.alpha}


def transient(job: ImageJob) -> list[str]:
    """Keys of the image's artifacts that are not kept after the job."""
    return [key for name, key in job.artifacts.items() if not ARTIFACTS[name].kept]


def kept(job: ImageJob) -> dict[str, str]:
    return {name: key for name, key in job.artifacts.items() if ARTIFACTS[name].kept}
