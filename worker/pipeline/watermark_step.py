"""The ``watermark`` stage: marks the text detector misses, merged into its maps.

Runs after ``detect`` and before ``unblend`` (see :mod:`worker.pipeline.graph`).
With templates in the plan (``Plan.watermarks``) it finds every occurrence of
each (:mod:`worker.watermark.match`); with ``Plan.watermark_auto`` it also
looks for repeated marks unaided (:mod:`worker.watermark.tiled`) and grows
the text the detector found into the logo or stamp around it, where that text
is one colour at one opacity (:mod:`worker.watermark.logo`). A template
named by an ``s3://`` key (learned by a cluster job) is taken from the cache,
where the task put it (``tasks.learning.prefetch``). What it finds
is merged into detect's maps (max of confidence and soft mask, union of the
region, the overlay with the larger alpha per pixel), so ``unblend`` restores
the photo under the semi-transparent parts and ``inpaint`` fills the opaque ones.
A template that matches nothing is a one-line note in the record and the image
goes on.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from worker.pipeline.artifacts import PIXELS
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import LEARNED, Plan, is_remote
from worker.pipeline.record import Context
from worker.pipeline.select import Decision
from worker.unblend import ALPHA_MAX, ALPHA_MAX_EXACT
from worker.watermark import Marks, WatermarkError, load_template, merge, template_marks
from worker.watermark.logo import seeded_marks
from worker.watermark.tiled import tiled_marks

log = logging.getLogger(__name__)


def watermark(arts: dict, plan: Plan, cache: ModelCache, ctx: Context) -> dict:
    """pixels, confidence, mask, region, overlay -> the same four maps with the
    marks merged in (nothing when the plan asks for no watermark search)."""
    paths = [p for p in plan.watermarks if p != LEARNED]
    if not paths and not plan.watermark_auto and LEARNED not in plan.watermarks:
        return {}
    rgb = arts[PIXELS].rgb
    start = time.perf_counter()
    marks = Marks.empty(rgb.shape[:2])
    if LEARNED in plan.watermarks:
        marks.notes.append("learned: no learned template reached this image (retouch run and submit --watermark "
                           "learned learn it from the batch; elsewhere learn it first with retouch watermark learn)")
    templates = [cache.get("watermark", "learned", _not_fetched(p), key=(p,)) if is_remote(p) else load_template(p)
                 for p in paths]
    template_marks(rgb, templates, marks)
    if plan.watermark_auto:
        tiled_marks(rgb, marks)
        mask = arts.get("mask")
        seeded_marks(rgb, mask > 0.5 if mask is not None else np.zeros(rgb.shape[:2], bool), marks)
    ctx.timed("watermark", "template" if templates else "auto", "cpu", time.perf_counter() - start)
    by_source: dict[str, list[dict]] = {}
    for record in marks.records:
        by_source.setdefault(record.get("template", record["kind"]), []).append(record)
    for source in [t.name for t in templates] + (["auto"] if plan.watermark_auto else []):
        found = by_source.get(source, []) if source != "auto" else [r for r in marks.records if r["kind"] != "template"]
        if found:
            alphas = [r["alpha"] for r in found]
            # a template's alpha is known: unblended further (worker.unblend)
            limit = ALPHA_MAX_EXACT if source != "auto" else ALPHA_MAX
            ctx.decided(Decision("watermark", "unblend" if max(alphas) <= limit else "inpaint",
                                 "template" if source != "auto" else "auto",
                                 f"{len(found)} mark(s) from {source}: alpha {min(alphas):.2f}-{max(alphas):.2f}, "
                                 f"{f'unblended up to alpha {limit}' if min(alphas) <= limit else 'opaque'}, "
                                 "the rest inpainted",
                                 {"source": source, "marks": len(found), "alpha_min": min(alphas),
                                  "alpha_max": max(alphas), "unblend_limit": limit,
                                  "score_min": min(r["score"] for r in found)}))
        else:
            ctx.decided(Decision("watermark", "none", "no-match", next(
                (n for n in marks.notes if n.startswith(source)), f"{source}: nothing found"), {"source": source}))
    for note in marks.notes:
        log.info("%s: %s", ctx.image, note)
    ctx.note("watermarks", {"marks": marks.records, "notes": marks.notes,
                            "coverage": round(float(marks.region.mean()), 5)})
    if not marks.records:
        return {}
    return merge(arts.get("confidence"), arts.get("mask"), arts.get("region"), arts.get("overlay"), marks)


def _not_fetched(url: str):
    """A template in S3 is fetched into the cache by the task before the stage
    runs (``tasks.learning.prefetch``); reaching the stage without it is an error."""
    def build():
        raise WatermarkError(f"{url}: the learned watermark was not fetched on this worker")
    return build
