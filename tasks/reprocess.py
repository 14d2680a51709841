"""Reprocessing: submit a normal job for the outputs that are stale.

:func:`reprocess` scans the output prefix (``orchestration.revisions``), keeps
the outputs of inputs under the input prefix that are stale (for the given
causes), and submits one job per plan those outputs were made with (usually
one) for exactly those images, with ``revise`` set: each output gets a new
version, written once per (output, fingerprint), and the manifest line lists
the previous and the new fingerprint. ``retouch reprocess`` and the scheduled
runs (``tasks.schedules``) both call it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from celery import Celery

from orchestration.jobs import JobStore, output_key
from orchestration.revisions import Output, by_cause, check_because, matches, scan
from orchestration.storage import Storage, StorageError, parse_url
from tasks.canvas import submit
from worker.pipeline.plan import Plan

log = logging.getLogger(__name__)


@dataclass
class Reprocessed:
    selected: list[Output]                 # the outputs chosen (submitted, unless a dry run)
    scanned: int                           # outputs found under the output prefix
    stale: int                             # of which stale
    jobs: list[str] = field(default_factory=list)
    causes: dict[str, int] = field(default_factory=dict)   # stale outputs by their exact causes


def _maps(src, out, o: Output) -> bool:
    """Whether a job from ``src`` to ``out`` writes this output's key (it was
    made by a submit whose prefixes map the same way): others are left alone."""
    try:
        same = output_key(src, out, parse_url(o.input).prefix, (o.record.get("plan") or {}).get("format")) == o.key
    except (StorageError, ValueError):
        same = False
    if not same:
        log.warning("reprocess: %s was not made from %s into %s the way this job would write it; left alone",
                    o.key, src, out)
    return same


def unversioned_refusal(bucket: str) -> str:
    return (f"bucket {bucket} has no object versioning, so a reprocess would replace outputs and lose their "
            f"previous revision; enable it (aws s3api put-bucket-versioning --bucket {bucket} "
            f"--versioning-configuration Status=Enabled) or pass --overwrite")


def reprocess(app: Celery | None, storage: Storage, store: JobStore | None, src_url: str, out_url: str,
              model_dir: str | None, *, only_stale: bool = False, because: list[str] = (), limit: int | None = None,
              dry_run: bool = False, overwrite: bool = False, queues: list[str] | None = None,
              batch_size: int = 100, max_pixels: int = 100_000_000) -> Reprocessed:
    """Select and (unless ``dry_run``) submit. Raises StorageError on an
    unversioned output bucket unless ``overwrite``."""
    src, out = parse_url(src_url), parse_url(out_url)
    because = check_because(list(because))
    if limit is not None and limit < 1:
        raise StorageError(f"--limit must be at least 1 but is {limit}")
    if not overwrite and not storage.versioned(out.bucket):
        raise StorageError(unversioned_refusal(out.bucket))
    outputs = [o for o in scan(storage, str(out), model_dir, str(src)) if _maps(src, out, o)]
    stale = sum(o.stale for o in outputs)
    chosen = [o for o in outputs if matches(o, because)] if (only_stale or because) else list(outputs)
    chosen = [o for o in chosen if "input-gone" not in o.causes][:limit]
    done = Reprocessed(chosen, len(outputs), stale,
                       causes={cause: len(group) for cause, group in by_cause(outputs).items()})
    if dry_run or not chosen:
        return done
    groups: dict[str, list[Output]] = {}
    for o in chosen:
        groups.setdefault(json.dumps(o.record.get("plan", {}), sort_keys=True), []).append(o)
    for plan_json, group in groups.items():
        only = {parse_url(o.input).prefix: o.fingerprint for o in group}
        submitted = submit(app, storage, store, str(src), str(out), Plan(**json.loads(plan_json)),
                           batch_size=batch_size, queues=queues, max_pixels=max_pixels, only=only, revise=True)
        done.jobs.append(submitted.job)
        log.info("reprocess: job %s for %d images", submitted.job, submitted.images)
    return done
