"""The restoration stages, ``deblock`` and ``denoise``: at the input size,
after text removal and before upscaling (see :mod:`worker.pipeline.graph`).

Each runs in two cases:

- its op is in the plan (``--ops deblock`` / ``--ops denoise``): the pre-pass
  of that kind at the strength the measurement calls for
  (:func:`worker.pipeline.select.choose_restoration`);
- the plan upscales with ``--upscale auto`` (or names a pre-pass of that kind):
  the router (:func:`worker.pipeline.steps.upscale_choice`) may put a
  pre-pass before the upscaler; the stage runs it when it is of its kind and
  otherwise does nothing.

Forensic runs (``--no-hallucination``) never restore.
"""

from __future__ import annotations

import time
from typing import Callable

from worker.pipeline.artifacts import PIXELS, Pixels
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import Plan
from worker.pipeline.record import Context
from worker.pipeline.select import choose_restoration
from worker.pipeline.steps import Artifacts, _device, features_of, upscale_choice
from worker.upscale import UpscaleOptions, restoration


def applies(kind: str) -> Callable[[Plan], bool]:
    """Whether a plan needs the ``kind`` stage (it may still find nothing to do)."""
    def needed(plan: Plan) -> bool:
        if kind in plan.ops:
            return True
        if "upscale" not in plan.ops or plan.no_hallucination or plan.prepass == "none":
            return False
        if plan.prepass != "auto":
            return restoration.prepass_info(plan.prepass).kind == kind
        return plan.upscale == "auto"
    needed.__name__ = f"restore_{kind}"
    return needed


def _restore(kind: str, arts: Artifacts, plan: Plan, cache: ModelCache, ctx: Context) -> Artifacts:
    pixels = arts[PIXELS]
    if kind in plan.ops:
        decision = choose_restoration(kind, plan, features_of(arts, ctx))
        strength = decision.inputs.get("prepass_strength")
    else:
        choice = upscale_choice(arts, plan, cache, ctx)
        if choice.prepass_kind != kind:
            return {}
        decision, strength = choice.prepass_decision(), choice.strength
    ctx.decided(decision)
    options = UpscaleOptions(device=_device(plan, cache), model_dir=cache.model_dir)
    info = restoration.prepass_info(decision.variant)
    model = cache.get("prepass", decision.variant, lambda: info.factory(options),
                      key=(options.device, options.model_dir))
    start = time.perf_counter()
    out = model.restore(pixels.rgb, strength)
    ctx.timed(kind, decision.variant, getattr(model, "device", "cpu"), time.perf_counter() - start)
    ctx.note(kind, {"variant": decision.variant, "strength": strength})
    return {PIXELS: Pixels(out, pixels.alpha)}


def deblock(arts: Artifacts, plan: Plan, cache: ModelCache, ctx: Context) -> Artifacts:
    """pixels -> pixels with JPEG blocking and ringing reduced (waifu2x photo)."""
    return _restore("deblock", arts, plan, cache, ctx)


def denoise(arts: Artifacts, plan: Plan, cache: ModelCache, ctx: Context) -> Artifacts:
    """pixels -> pixels denoised (FFDNet at the measured or given sigma)."""
    return _restore("denoise", arts, plan, cache, ctx)
