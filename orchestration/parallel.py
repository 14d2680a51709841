"""Several images at once in the embedded run: ``retouch run --jobs N``.

One image at a time uses every core only where the libraries keep them busy,
and much of a restore is single-threaded (Python, mask building, encoding):
on 2 cores, 2 images at once in 2 processes of 1 thread each restore 1.87x
the images per minute of one process with 2 threads (``retouch bench
cluster``'s in-process figures, 24 photos of 1 MP). So ``--jobs auto`` runs
``usable cores`` images at once on the CPU (each process's libraries sized to
cores / N threads, as a cluster worker's are), and one at a time on a GPU
(one device, one model cache), for a single image, or for a batch under
:data:`MIN_MEGAPIXELS`, where starting the processes and loading their models
(about 1.5 s here) costs more than it saves: the four bundled samples (0.5 MP)
took 2.4 s one at a time and 3.9 s two at once.

Each process ("spawn": no forked model or thread state) loads its own models
and writes its images' outputs and sidecars itself, exactly as the one-process
run does (the same ``process_file``); decisions go to the same JSON Lines file.
A process that dies (killed, out of memory, a crash in native code) never
takes the batch with it: the images it had not finished run again one process
at a time, so the one that kills its process fails alone, with one line.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from monitoring.logs import configure_logging, log_decisions_to
from orchestration.local import Item, Outcome, process_file
from worker import threads as thread_budget
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import Plan

log = logging.getLogger(__name__)

_cache: ModelCache | None = None
MIN_MEGAPIXELS = 4.0


def auto_jobs(paths: list[Path], device: str, cores: int | None = None) -> int:
    """Images at once for ``--jobs auto``: the usable cores on the CPU (at most
    one per image) once the batch holds :data:`MIN_MEGAPIXELS`; else, and on
    a GPU, one."""
    cores = cores if cores is not None else thread_budget.usable_cores()
    if len(paths) < 2 or cores < 2 or device.startswith("cuda") or (device == "auto" and _cuda()):
        return 1
    if megapixels(paths, enough=MIN_MEGAPIXELS) < MIN_MEGAPIXELS:
        return 1
    return min(len(paths), cores)


def megapixels(paths: list[Path], enough: float = float("inf")) -> float:
    """The images' megapixels from their headers (no pixels decoded), summed
    until ``enough``; unreadable files count nothing (they fail on their own)."""
    from PIL import Image as PILImage

    total = 0.0
    for path in paths:
        try:
            with PILImage.open(path) as im:
                total += im.width * im.height / 1e6
        except Exception:  # noqa: BLE001 (its own error comes when it is restored)
            continue
        if total >= enough:
            break
    return total


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _start(threads: int, model_dir: str | None, device: str, log_level: str, decisions: str | None) -> None:
    global _cache
    configure_logging(log_level)
    if decisions:
        log_decisions_to(Path(decisions))
    thread_budget.apply(threads)
    _cache = ModelCache(device=device, model_dir=model_dir)


def restore_one(source: Path, root: Path, plan: Plan, options: dict) -> Outcome:
    """One image in a process of the pool, with its models."""
    return process_file(source, root, options.pop("out_dir"), plan, _cache, **options)


def executor(jobs: int, *, model_dir: str | None, device: str, log_level: str = "WARNING",
             decisions: Path | None = None):
    """A ``run_batch`` executor restoring ``jobs`` images at once."""
    def execute(items: list[Item], options: dict, finished: Callable[[int, Outcome], None]) -> None:
        run_parallel(items, jobs, options, finished, model_dir=model_dir, device=device, log_level=log_level,
                     decisions=decisions)
    return execute


def run_parallel(items: list[Item], jobs: int, options: dict, finished: Callable[[int, Outcome], None], *,
                 model_dir: str | None, device: str, log_level: str = "WARNING",
                 decisions: Path | None = None, work: Callable[..., Outcome] | None = None) -> None:
    """Restore ``items`` in ``jobs`` processes; ``finished(index, outcome)`` as
    each ends. ``options``: ``process_file``'s keyword arguments plus ``out_dir``;
    ``work(source, root, plan, options)`` (a module-level function) restores
    one image in a process (default :func:`restore_one`)."""
    work = work or restore_one
    pending = list(items)
    ctx = multiprocessing.get_context("spawn")
    alone = False   # after a process died: one image per process at a time
    while pending:
        n = 1 if alone else min(jobs, len(pending))
        init = (thread_budget.budget(n), model_dir, device, log_level, str(decisions) if decisions else None)
        with ProcessPoolExecutor(n, mp_context=ctx, initializer=_start, initargs=init) as pool:
            running = {}
            try:
                while pending or running:
                    while pending and len(running) < n:   # one image per process in flight
                        item = pending.pop(0)
                        running[pool.submit(work, item[1], item[2], item[3], dict(options))] = item
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        exc = future.exception()
                        if isinstance(exc, BrokenProcessPool):
                            raise exc   # every image still running is handled below
                        item = running.pop(future)
                        if exc is not None:
                            # a bug outside process_file's own guard (it returns, never raises): this image only
                            log.error("unexpected failure on %s", item[1], exc_info=exc)
                            finished(item[0], Outcome(item[1], "failed",
                                                      error=f"{item[1]}: {type(exc).__name__}: {exc}"))
                        else:
                            finished(item[0], future.result())
            except BrokenProcessPool:
                lost = list(running.values())
                if alone:   # the image in hand killed its process
                    (index, source, _, _), = lost
                    log.error("%s: the process restoring it died", source)
                    finished(index, Outcome(source, "failed", error=f"{source}: the process restoring it died "
                                                                    "(killed, out of memory or a crash)"))
                else:
                    log.warning("a process of the batch died; its %d unfinished images go on one at a time",
                                len(lost))
                    pending = sorted(lost) + pending
                alone = True
