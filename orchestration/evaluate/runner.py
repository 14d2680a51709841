"""Run every variant on every case through the embedded runner, and score it.

Each (case, variant) goes through :func:`orchestration.local.restore` with a
:class:`Plan` naming the variant (or ``auto``), exactly as ``retouch run``
would process it. Scores (see :func:`score`) compare the output with the clean
photo: inside the true overlay mask for remove-text (PSNR, SSIM, LPIPS), over
the whole image for upscaling; detection precision/recall/IoU compare the
pipeline's fill region with the true mask.

Remove-text variants are ranked by the *fill* scores (``fill_*``): the
inpainting stage's own output on the same detected region, before the shared
seam post-processing. Post-processing (colour continuity, soft blending) is
common to all variants and narrows their differences (it lifts even a
mean-colour fill close to the others on thin strokes), so the final scores are
reported next to them but do not decide the ranking.

Rows hold only deterministic values (rounded), so two runs with the same seed
give identical tables; wall-clock times go to a separate timings list.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from orchestration.evaluate.dataset import Case, EvalError
from orchestration.local import restore
from worker import inpaint, stages, upscale
from worker.upscale import restoration
from worker.errors import RetouchError
from worker.io import Image
from worker.mask import confidence_sample
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import Plan
from worker.quality import metrics

log = logging.getLogger(__name__)

INPUT = "input"  # pseudo-variant: the degraded image itself, as a reference row
DIGITS = 5
# The metric each op's variants are ranked by, and whether lower is better.
PRIMARY = {"remove-text": ("fill_lpips_mask", True), "upscale": ("lpips", True)}
FALLBACK = {"remove-text": ("fill_psnr_mask", False), "upscale": ("psnr", False)}
QUALITY = ("fill_psnr_mask", "fill_ssim_mask", "fill_lpips_mask",
           "psnr_mask", "ssim_mask", "lpips_mask", "psnr", "ssim", "lpips", "seam_error")
DETECTION = ("precision", "recall", "iou", "coverage_true", "coverage_pred")


def resolve_variants(names: list[str], ops: list[str]) -> dict[str, list[str]]:
    """Which of ``names`` apply to which op: inpaint registry names to remove-text,
    upscale registry names to upscale, ``auto`` to both; an op with none gets
    ``["auto"]``. Raises EvalError for a name neither registry knows."""
    known = {"remove-text": set(inpaint.names()), "upscale": set(upscale.names())}
    # "PREPASS+UPSCALER": a fixed restoration pre-pass, then a fixed upscaler
    known["upscale"] |= {n for n in names if "+" in n and n.split("+", 1)[0] in restoration.names()
                         and n.split("+", 1)[1] in known["upscale"]}
    unknown = [n for n in names if n != "auto" and not any(n in k for k in known.values())]
    if unknown:
        raise EvalError(f"unknown variant(s) {', '.join(unknown)}; inpaint: {', '.join(sorted(known['remove-text']))}; "
                         f"upscale: {', '.join(sorted(known['upscale']))}; or auto")
    out = {}
    for op in ops:
        chosen = [n for n in names if n == "auto" or n in known[op]]
        out[op] = chosen or ["auto"]
    return out


def upscale_plan(variant: str, scale: float, seed: int) -> Plan:
    """The plan of an upscale variant: ``auto``, an upscaler, or ``PREPASS+UPSCALER``."""
    if "+" in variant:
        prepass, upscaler = variant.split("+", 1)
        return Plan(ops=["upscale"], upscale=upscaler, prepass=prepass, scale=scale, seed=seed)
    return Plan(ops=["upscale"], upscale=variant, scale=scale, seed=seed)


def _r(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), DIGITS)


def fill_score(case: Case, filled: np.ndarray, lpips=None) -> dict:
    """Masked PSNR/SSIM/LPIPS of the inpainting stage's raw output (``fill_*``)."""
    row = {"fill_psnr_mask": _r(metrics.psnr(case.clean, filled, case.mask)),
           "fill_ssim_mask": _r(metrics.ssim(case.clean, filled, case.mask))}
    if lpips is not None:
        row["fill_lpips_mask"] = _r(metrics.masked_mean(lpips.distance_map(case.clean, filled), case.mask))
    return row


def score(case: Case, output: np.ndarray, lpips=None, region: np.ndarray | None = None) -> dict:
    """Quality of ``output`` against ``case.clean``: masked and full PSNR/SSIM
    (and LPIPS if ``lpips`` is given), and for remove-text the seam error
    across ``region`` (the fill region; an empty one -> 0; None -> not measured)."""
    clean, mask = case.clean, case.mask
    row: dict = {"psnr": _r(metrics.psnr(clean, output)), "ssim": _r(metrics.ssim(clean, output))}
    if mask is not None:
        row["psnr_mask"] = _r(metrics.psnr(clean, output, mask))
        row["ssim_mask"] = _r(metrics.ssim(clean, output, mask))
    if lpips is not None:
        lp_map = lpips.distance_map(clean, output)
        row["lpips"] = _r(float(lp_map.mean()))
        if mask is not None:
            row["lpips_mask"] = _r(metrics.masked_mean(lp_map, mask))
    if case.op == "remove-text" and region is not None:
        row["seam_error"] = _r(metrics.seam_error(output, region) if region is not None and region.any() else 0.0)
    return row


@dataclass
class Evaluation:
    """``rows``: one per (case, variant), JSON-able, deterministic;
    ``cases``: one per case (degradation, detection scores); ``timings``:
    seconds per (case, variant), kept apart from the deterministic tables;
    ``confidences``: detector confidence samples inside the detected masks."""

    rows: list[dict] = field(default_factory=list)
    cases: list[dict] = field(default_factory=list)
    timings: list[dict] = field(default_factory=list)
    confidences: list[np.ndarray] = field(default_factory=list)
    variants: dict[str, list[str]] = field(default_factory=dict)


def evaluate(cases: list[Case], variants: dict[str, list[str]], cache: ModelCache, seed: int = 0,
             lpips=None, on_case: Callable[[Case, dict, np.ndarray | None, np.ndarray | None], None] | None = None,
             mask: str = "detected") -> Evaluation:
    """Run ``variants[case.op]`` on every case and score the outputs.

    ``on_case(case, outputs, predicted_mask, confidence)`` is called once per case
    with ``outputs`` = {variant: float32 image} (for the report's crops). A
    failure of one variant on one case is recorded in its row (``error``) and
    does not stop the others. ``mask="true"`` hands the true overlay mask to the
    pipeline as a user mask (isolating the inpainting from detection errors);
    ``"detected"`` (default) runs the detector, end to end."""
    if mask not in ("detected", "true"):
        raise EvalError(f"mask must be 'detected' or 'true' but is {mask!r}")
    result = Evaluation(variants=variants)
    for case in cases:
        base = {"case": case.id, "photo": case.photo, "op": case.op, "kind": case.kind, "jpeg": case.jpeg}
        outputs: dict[str, np.ndarray] = {}
        predicted = confidence = None
        case_info = dict(base, width=case.clean.shape[1], height=case.clean.shape[0], params=case.params)
        if case.op == "remove-text":
            result.rows.append(dict(base, variant=INPUT, chosen=INPUT, rule="", error=None,
                                    **fill_score(case, case.degraded, lpips),
                                    **score(case, case.degraded, lpips, None)))
        for variant in variants.get(case.op, []):
            plan = (Plan(ops=["remove-text"], inpaint=variant, seed=seed) if case.op == "remove-text"
                    else upscale_plan(variant, float(case.factor), seed))
            start = time.perf_counter()
            try:
                user_mask = case.mask.astype(np.float32) if mask == "true" and case.mask is not None else None
                tables = case.params.get("jpeg_tables")   # a JPEG case carries its file's tables
                image = Image(rgb=case.degraded, name=case.id, format="JPEG" if tables else "PNG",
                              jpeg_tables=tuple(tuple(t) for t in tables) if tables else None)
                restored = restore(image, plan, cache, user_mask)
            except Exception as exc:  # one variant failing on one case must not stop the evaluation
                if isinstance(exc, RetouchError):
                    log.warning("%s / %s failed: %s", case.id, variant, exc)
                else:
                    log.exception("%s / %s failed", case.id, variant)
                result.rows.append(dict(base, variant=variant, chosen=None, rule="",
                                        error=f"{type(exc).__name__}: {exc}"))
                continue
            seconds = time.perf_counter() - start
            record = restored.record
            stage = "inpaint" if case.op == "remove-text" else "upscale"
            decision = next((d for d in record["decisions"] if d["stage"] == stage), {})
            output = restored.image.rgb
            if output.shape != case.clean.shape:
                result.rows.append(dict(base, variant=variant, chosen=None, rule="",
                                        error=f"output is {output.shape}, ground truth {case.clean.shape}"))
                continue
            region = restored.mask > 0 if restored.mask is not None else None
            if predicted is None and region is not None:
                predicted, confidence = region, restored.confidence
                scores = metrics.detection_scores(region, case.mask)
                case_info.update({k: _r(v) for k, v in scores.items()})
                case_info["coverage_true"] = _r(float(case.mask.mean()))
                case_info["coverage_pred"] = _r(float(region.mean()))
                case_info["confidence_mean"] = record.get("mask", {}).get("confidence_mean")
                result.confidences.append(confidence_sample(confidence, region))
            outputs[variant] = output
            if case.op == "upscale" and "features" not in case_info and record.get("upscale_features"):
                case_info["features"] = record["upscale_features"]   # what the router measured (routing.py)
            chosen = decision.get("variant", variant)
            if case.op == "upscale" and decision.get("inputs", {}).get("prepass"):
                chosen = f"{decision['inputs']['prepass']}+{chosen}"
            fill = {}
            if case.op == "remove-text":
                # the variant's own contribution: its fill of the same region, before post-processing
                filled = (stages.inpaint(case.degraded, None, region, chosen, seed, plan.margin)[0]
                          if chosen != "none" and region is not None else case.degraded)
                fill = fill_score(case, filled, lpips)
            result.rows.append(dict(base, variant=variant, chosen=chosen, rule=decision.get("rule", ""),
                                    error=None, **fill, **score(case, output, lpips, region)))
            result.timings.append({"case": case.id, "variant": variant, "seconds": round(seconds, 4),
                                   "megapixels": round(case.degraded.shape[0] * case.degraded.shape[1] / 1e6, 4),
                                   "stages": record.get("timings", {})})
        result.cases.append(case_info)
        if on_case is not None:
            on_case(case, outputs, predicted, confidence)
    return result


def summarise(evaluation: Evaluation, confidence: float = 0.95) -> list[dict]:
    """Per (op, variant): mean, confidence-interval half-width and n of each metric,
    the choices ``auto`` made, failures, and the rank by the op's primary metric
    (1 = best; the ``input`` reference row is not ranked)."""
    summary = []
    for op in sorted({r["op"] for r in evaluation.rows}):
        rows = [r for r in evaluation.rows if r["op"] == op]
        names = [INPUT] if any(r["variant"] == INPUT for r in rows) else []
        names += evaluation.variants.get(op, [])
        for name in names:
            mine = [r for r in rows if r["variant"] == name]
            entry: dict = {"op": op, "variant": name, "n": sum(r["error"] is None for r in mine),
                           "failures": sum(r["error"] is not None for r in mine)}
            for metric in QUALITY:
                values = [r.get(metric) for r in mine if r["error"] is None]
                if all(v is None for v in values):
                    continue
                mean, half, n = metrics.mean_ci([v for v in values if v is not None], confidence)
                entry[metric] = _r(mean)
                entry[f"{metric}_ci"] = _r(half)
            chosen: dict[str, int] = {}
            for r in mine:
                if r["error"] is None and r["chosen"] != name:
                    chosen[r["chosen"]] = chosen.get(r["chosen"], 0) + 1
            if chosen:
                entry["chosen"] = dict(sorted(chosen.items()))
            summary.append(entry)
        primary, lower = PRIMARY[op]
        if not any(primary in e for e in summary if e["op"] == op):
            primary, lower = FALLBACK[op]
        ranked = sorted((e for e in summary if e["op"] == op and e["variant"] != INPUT and e.get(primary) is not None),
                        key=lambda e: (e[primary] if lower else -e[primary], e["variant"]))
        for i, e in enumerate(ranked, 1):
            e["rank"] = i
            e["ranked_by"] = primary
    return summary
