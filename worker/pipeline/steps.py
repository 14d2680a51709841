"""One function per stage, shared by the embedded run and the Celery tasks.

A step takes arrays, the :class:`Plan` and a :class:`ModelCache`, makes the
model selection for its stage, times it, reports to the metrics observer and
the decision log, and returns arrays plus a JSON-able record fragment. The
order is detect -> inpaint -> postprocess -> upscale: seams are repaired at the
source resolution, where the mask was measured, and the upscaler then sees a
clean image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from monitoring.logs import log_decision
from orchestration.plan import Plan
from orchestration.select import Decision, choose_inpaint, choose_upscale, ring_texture
from worker import stages
from worker.mask import MaskParams, confidence_sample
from worker.models.cache import ModelCache
from worker.upscale import UpscaleOptions, variant_info


@dataclass
class Context:
    """Who is being processed, and where observations go."""

    image: str
    job: str | None = None
    metrics: object | None = None  # monitoring.metrics.Metrics, or None
    record: dict = field(default_factory=lambda: {"timings": {}, "decisions": []})

    def timed(self, stage: str, variant: str, device: str, seconds: float) -> None:
        self.record["timings"][stage] = round(seconds, 4)
        if self.metrics is not None:
            self.metrics.observe_stage(stage, variant, device, seconds)

    def decided(self, decision: Decision) -> None:
        self.record["decisions"].append(decision.to_dict())
        log_decision(decision.to_dict(), image=self.image, job=self.job)
        if self.metrics is not None:
            self.metrics.selection(decision.stage, decision.variant, decision.rule)


def mask_params(plan: Plan) -> MaskParams:
    return MaskParams(type=plan.mask_type, sigma=plan.mask_sigma, threshold=plan.mask_threshold,
                      dilate=plan.mask_dilate)


def detect(rgb: np.ndarray, plan: Plan, cache: ModelCache, ctx: Context,
           user_mask: np.ndarray | None = None) -> stages.Detection:
    detector = None if user_mask is not None else cache.detector()
    start = time.perf_counter()
    detection = stages.detect(rgb, detector, mask_params(plan), user_mask)
    device = getattr(detector, "device", "cpu")
    ctx.timed("detect", detection.stats["source"] if user_mask is not None else detector.name, device,
              time.perf_counter() - start)
    ctx.record["mask"] = detection.stats
    ctx.record["mask_params"] = mask_params(plan).to_dict()
    if ctx.metrics is not None:
        ctx.metrics.observe_mask(confidence_sample(detection.confidence, detection.core),
                                 detection.stats["coverage"])
    return detection


def inpaint(rgb: np.ndarray, alpha: np.ndarray | None, detection: stages.Detection, plan: Plan,
            ctx: Context) -> tuple[np.ndarray, np.ndarray | None, Decision]:
    decision = choose_inpaint(plan, detection.stats, ring_texture(rgb, detection.binary))
    ctx.decided(decision)
    if decision.variant == "none":
        return rgb, alpha, decision
    start = time.perf_counter()
    filled, filled_alpha = stages.inpaint(rgb, alpha, detection.binary, decision.variant, plan.seed, plan.margin)
    ctx.timed("inpaint", decision.variant, "cpu", time.perf_counter() - start)
    return filled, filled_alpha, decision


def postprocess(original: np.ndarray, filled: np.ndarray, detection: stages.Detection,
                ctx: Context) -> np.ndarray:
    start = time.perf_counter()
    result, report = stages.postprocess(original, filled, detection.soft, detection.binary)
    ctx.timed("postprocess", "continuity-blend", "cpu", time.perf_counter() - start)
    ctx.record["postprocess"] = report
    return result


def upscale(rgb: np.ndarray, alpha: np.ndarray | None, plan: Plan, cache: ModelCache,
            ctx: Context) -> tuple[np.ndarray, np.ndarray | None, Decision]:
    decision = choose_upscale(plan, rgb)
    ctx.decided(decision)
    options = UpscaleOptions(device=_device(plan, cache), model_dir=cache.model_dir)
    info = variant_info(decision.variant, options)
    if plan.no_hallucination and info.learned:
        raise ValueError(f"--no-hallucination forbids the learned upscaler {decision.variant}")
    upscaler = cache.upscaler(decision.variant, options)
    start = time.perf_counter()
    out, out_alpha = stages.upscale(rgb, alpha, upscaler, plan.scale)
    ctx.timed("upscale", decision.variant, options.device, time.perf_counter() - start)
    return out, out_alpha, decision


def _device(plan: Plan, cache: ModelCache) -> str:
    device = plan.device if plan.device != "auto" else cache.device
    if device == "auto":
        try:
            from worker.device import resolve_device

            return resolve_device("auto")
        except ImportError:
            return "cpu"
    return device
