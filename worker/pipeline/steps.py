"""One step function per stage: what the stage graph runs, in either executor.

A step takes the artifacts it consumes (a dict by name; see
:mod:`worker.pipeline.artifacts`; an optional one that no earlier stage made
is None), the :class:`Plan`, the :class:`ModelCache` and the
:class:`Context`. It makes the model selection for its stage (a
:class:`Decision` with reasons), times the compute, reports to the context,
and returns the artifacts it produced (none when it had nothing to do).

The order, declared in :mod:`worker.pipeline.graph`, is detect -> inpaint ->
postprocess -> upscale: seams are repaired at the source resolution, where the
mask was measured, and the upscaler then sees a clean image.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from worker import inpaint as inpaint_variants
from worker import stages
from worker.device import is_out_of_memory, release_cached, resolve_device
from worker.errors import PlanError, one_line
from worker.inpaint import InpaintOutOfMemory
from worker.unblend import ALPHA_MAX, TOLERANCE, TOLERANCE_EXACT
from worker.unblend import unblend as reverse_blend
from worker.mask import MaskParams, confidence_sample
from worker.pipeline.artifacts import IMAGE, PIXELS, Pixels
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import Plan
from worker.pipeline.record import Context
from worker.pipeline.select import (Decision, UpscaleChoice, artifact_features, choose_backend, choose_inpaint,
                                    fallback_variants, fill_features, ring_texture, route_upscale)
from worker.upscale import UpscaleOptions, restoration, variant_info
from worker.upscale import speeds as upscale_speeds

Artifacts = dict[str, Any]


def mask_params(plan: Plan) -> MaskParams:
    return MaskParams(type=plan.mask_type, sigma=plan.mask_sigma, threshold=plan.mask_threshold,
                      dilate=plan.mask_dilate)


def detect(arts: Artifacts, plan: Plan, cache: ModelCache, ctx: Context) -> Artifacts:
    """pixels (+ user_mask) -> confidence, mask (soft), region (bool) and the
    overlay estimate (colour and alpha of the text found; none for a user mask)."""
    rgb, user_mask = arts[PIXELS].rgb, arts.get("user_mask")
    detector = None if user_mask is not None else cache.detector()
    start = time.perf_counter()
    detection = stages.detect(rgb, detector, mask_params(plan), user_mask)
    device = getattr(detector, "device", "cpu")
    ctx.timed("detect", detection.stats["source"] if user_mask is not None else detector.name, device,
              time.perf_counter() - start)
    ctx.note("mask", detection.stats)
    ctx.note("mask_params", mask_params(plan).to_dict())
    if ctx.metrics is not None:
        ctx.metrics.observe_mask(confidence_sample(detection.confidence, detection.core),
                                 detection.stats["coverage"])
    produced = {"confidence": detection.confidence, "mask": detection.soft, "region": detection.binary}
    if detection.overlay is not None and (detection.overlay[:, :, 3] > 0).any():
        produced["overlay"] = detection.overlay
    return produced


def unblend(arts: Artifacts, plan: Plan, cache: ModelCache, ctx: Context) -> Artifacts:
    """pixels, overlay, region, unblend_limit -> pixels (semi-transparent
    overlay lifted) and region (what is left to inpaint); nothing without an
    overlay estimate. Without ``unblend_limit`` the limit is ``ALPHA_MAX``."""
    overlay = arts.get("overlay")
    if overlay is None or not arts["region"].any():
        return {}
    pixels, region = arts[PIXELS], arts["region"]
    limit = arts.get("unblend_limit")
    limit = ALPHA_MAX if limit is None else limit
    # where the limit is raised a template placed the overlay: its colour is known, so a result just outside
    # [0, 1] is its alpha a little off, not a wrong colour (worker.unblend)
    tolerance = np.where(np.asarray(limit) > ALPHA_MAX, np.float32(TOLERANCE_EXACT), np.float32(TOLERANCE))
    start = time.perf_counter()
    result = reverse_blend(pixels.rgb, overlay, region, alpha_max=limit, tolerance=tolerance,
                           margin=plan.mask_dilate)
    lifted, total = int(result.lifted.sum()), int(region.sum())
    top = round(float(np.max(limit)), 4)
    inputs = {"region_px": total, "lifted_px": lifted, "lifted_share": round(lifted / total, 4), "alpha_max": top}
    if not lifted:
        ctx.decided(Decision("unblend", "none", "opaque-or-unfit",
                             "no part of the overlay is semi-transparent with a fitting estimate: inpaint it all",
                             inputs))
        return {}
    ctx.decided(Decision("unblend", "reverse-blend", "semi-transparent",
                         f"{lifted / total:.0%} of the overlay is semi-transparent (alpha <= {top}): the "
                         f"photo is restored by reversing the blend; the rest is inpainted", inputs))
    ctx.timed("unblend", "reverse-blend", "cpu", time.perf_counter() - start)
    return {PIXELS: Pixels(result.rgb, pixels.alpha), "region": result.remaining}


def inpaint(arts: Artifacts, plan: Plan, cache: ModelCache, ctx: Context) -> Artifacts:
    """pixels, region -> fill (nothing when the mask is empty).

    ``auto`` measures the fill (:func:`fill_features`) when a learned model is
    installed, so large or structured fills go to it. A learned model that runs
    out of memory at every crop size hands the image to the next variant
    (:func:`fallback_variants`), recorded as a decision (rule ``out-of-memory``).
    A named variant that is not installed fails the image (UnknownVariantError)."""
    pixels, region = arts[PIXELS], arts["region"]
    installed = inpaint_variants.installed(cache.model_dir) if plan.inpaint == "auto" else []
    fill = fill_features(pixels.rgb, region) if installed and region.any() else None
    decision = choose_inpaint(plan, ctx.trace.details.get("mask", {}), ring_texture(pixels.rgb, region), fill,
                              installed)
    ctx.decided(decision)
    if decision.variant == "none":
        return {}
    variant = decision.variant
    info = inpaint_variants.get(variant, cache.model_dir)
    while info.learned:
        device = _device(plan, cache)
        try:
            model = cache.inpainter(variant, device)
            start = time.perf_counter()
            filled, alpha, report = inpaint_variants.fill_with_model(pixels.rgb, region, model, plan.inpaint_params(),
                                                                     pixels.alpha)
        except Exception as exc:
            if not (isinstance(exc, InpaintOutOfMemory) or is_out_of_memory(exc)):
                raise
            cause = one_line(exc)
        else:
            ctx.timed("inpaint", variant, device, time.perf_counter() - start)
            ctx.note("inpaint", {"variant": variant, "family": info.family, "device": device,
                                 "mask_blur_sigma": plan.mask_sigma, **report.to_dict()})
            return {"fill": Pixels(filled, alpha)}
        release_cached(device)
        after = fallback_variants(variant, installed or inpaint_variants.installed(cache.model_dir))[0]
        ctx.decided(Decision("inpaint", after, "out-of-memory",
                             f"{variant} ran out of memory on {device} ({cause}): {after} instead",
                             {"failed": variant, "device": device}))
        variant, info = after, inpaint_variants.get(after, cache.model_dir)
    start = time.perf_counter()
    filled, alpha = stages.inpaint(pixels.rgb, pixels.alpha, region, variant, plan.seed, plan.margin)
    ctx.timed("inpaint", variant, "cpu", time.perf_counter() - start)
    return {"fill": Pixels(filled, alpha)}


def postprocess(arts: Artifacts, plan: Plan, cache: ModelCache, ctx: Context) -> Artifacts:
    """pixels, fill, mask, region -> pixels (the fill blended in; nothing without a fill)."""
    fill = arts.get("fill")
    if fill is None:
        return {}
    start = time.perf_counter()
    result, report = stages.postprocess(arts[PIXELS].rgb, fill.rgb, arts["mask"], arts["region"])
    ctx.timed("postprocess", "continuity-blend", "cpu", time.perf_counter() - start)
    ctx.note("postprocess", report)
    return {PIXELS: Pixels(result, fill.alpha)}


def upscale(arts: Artifacts, plan: Plan, cache: ModelCache, ctx: Context) -> Artifacts:
    """pixels -> pixels at ``plan.scale`` times the size, with the upscaler the
    router chose (:func:`upscale_choice`); for ``auto``, on the faster backend
    for the device (:func:`choose_backend`)."""
    pixels = arts[PIXELS]
    decision = upscale_choice(arts, plan, cache, ctx).decision()
    ctx.decided(decision)
    options = UpscaleOptions(device=_device(plan, cache), model_dir=cache.model_dir)
    if plan.no_hallucination and variant_info(decision.variant, options).learned:
        raise PlanError(f"--no-hallucination forbids the learned upscaler {decision.variant}")
    runs = decision.variant
    backend = (choose_backend(runs, options.device, upscale_speeds.load(cache.model_dir))
               if plan.upscale == "auto" else None)
    if backend is not None:
        ctx.decided(backend)
        runs = backend.variant
    upscaler = cache.upscaler(runs, options)
    start = time.perf_counter()
    out, out_alpha = stages.upscale(pixels.rgb, pixels.alpha, upscaler, plan.scale)
    ctx.timed("upscale", runs, options.device, time.perf_counter() - start)
    return {PIXELS: Pixels(out, out_alpha)}


FEATURES, ROUTE = "upscale_features", "upscale_route"


def features_of(arts: Artifacts, ctx: Context) -> dict:
    """The artifact features of this image (:func:`artifact_features`, with the
    input JPEG's own quantisation tables), measured once and kept in the
    record under ``upscale_features``."""
    known = ctx.trace.details.get(FEATURES)
    if known is not None:
        return known
    image = arts.get(IMAGE)
    found = artifact_features(arts[PIXELS].rgb, getattr(image, "jpeg_tables", None))
    ctx.note(FEATURES, found)
    return ctx.trace.details[FEATURES]


def upscale_choice(arts: Artifacts, plan: Plan, cache: ModelCache, ctx: Context) -> UpscaleChoice:
    """The router's pre-pass and upscaler for this image, made once (by the first
    stage that asks: a pre-pass stage or upscale) and kept under ``upscale_route``."""
    known = ctx.trace.details.get(ROUTE)
    if known is not None:
        return UpscaleChoice.from_dict(known)
    installed = restoration.installed(cache.model_dir) if plan.upscale == "auto" else None
    choice = route_upscale(plan, arts[PIXELS].rgb, features=features_of(arts, ctx), prepasses=installed)
    ctx.note(ROUTE, choice.to_dict())
    return choice


def _device(plan: Plan, cache: ModelCache) -> str:
    device = plan.device if plan.device != "auto" else cache.device
    return resolve_device(device) if device == "auto" else device
