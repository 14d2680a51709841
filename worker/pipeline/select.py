"""Model selection: which variant each stage uses, and why, as data.

Every choice is a :class:`Decision` (stage, variant, rule, reason, inputs). The
``rule`` is a short code from a fixed set, so it can be a metric label; the
``reason`` is for people; ``inputs`` are the measured values that drove it.
``auto`` uses these rules; a named variant overrides them (rule ``user``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from worker import upscale
from worker.errors import PlanError
from worker.pipeline.plan import Plan
from worker.upscale.classify import classify_content

# Inpainting thresholds: OpenCV's diffusion-style fills are good for thin
# strokes on smooth surroundings; PatchMatch copies texture for the rest.
THIN_STROKE_PX = 7.0
SMALL_COVERAGE = 0.04
TEXTURED_RING = 0.045     # std of the luminance in the ring around the mask, [0, 1]

# Names in worker.upscale's registry (worker/upscale/realesrgan): the general
# x4plus RRDBNet for photos; the compact animevideov3 model for flat-colour art.
PHOTO_MODEL = "realesrgan-x4plus"
ILLUSTRATION_MODEL = "realesr-animevideov3"


@dataclass(frozen=True)
class Decision:
    stage: str
    variant: str
    rule: str
    reason: str
    inputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def ring_texture(rgb: np.ndarray, region: np.ndarray, width: int = 6) -> float:
    """Standard deviation of luminance in a ring around ``region`` (0 if empty)."""
    if not region.any():
        return 0.0
    grey = cv2.cvtColor(np.ascontiguousarray(rgb, np.float32), cv2.COLOR_RGB2GRAY)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    ring = cv2.dilate(region.astype(np.uint8), k).astype(bool) & ~region
    if not ring.any():
        return 0.0
    # High-pass first, so a smooth gradient (sky, studio backdrop) is not "texture";
    # the local mean leaves the masked pixels out (normalised convolution), or the
    # text itself would read as texture.
    real = (~region).astype(np.float32)
    local = cv2.GaussianBlur(grey * real, (0, 0), 3.0) / np.maximum(cv2.GaussianBlur(real, (0, 0), 3.0), 1e-4)
    return float(np.mean(np.abs(grey - local)[ring]))


def choose_inpaint(plan: Plan, mask_stats: dict, texture: float) -> Decision:
    """Inpainting variant for one image, from its mask stats and ring texture."""
    inputs = {"coverage": mask_stats.get("coverage", 0.0), "stroke_width": mask_stats.get("stroke_width", 0.0),
              "ring_texture": round(texture, 4), "regions": mask_stats.get("regions", 0)}
    if not mask_stats.get("coverage"):
        return Decision("inpaint", "none", "empty-mask", "nothing detected to remove", inputs)
    if plan.inpaint != "auto":
        return Decision("inpaint", plan.inpaint, "user", f"variant {plan.inpaint} named by the user", inputs)
    thin = inputs["stroke_width"] <= THIN_STROKE_PX
    small = inputs["coverage"] <= SMALL_COVERAGE
    smooth = texture <= TEXTURED_RING
    if thin and small and smooth:
        return Decision("inpaint", "telea", "thin-strokes-smooth",
                        f"thin strokes ({inputs['stroke_width']:.1f} px), small coverage "
                        f"({inputs['coverage']:.1%}) on smooth surroundings: fast marching fills cleanly", inputs)
    if not smooth:
        return Decision("inpaint", "patchmatch", "textured-surround",
                        f"textured surroundings (ring texture {texture:.3f} > {TEXTURED_RING}): "
                        "copy real texture with PatchMatch", inputs)
    return Decision("inpaint", "patchmatch", "large-region",
                    f"stroke width {inputs['stroke_width']:.1f} px / coverage {inputs['coverage']:.1%} too large "
                    "for diffusion-style fills: PatchMatch", inputs)


def choose_upscale(plan: Plan, rgb: np.ndarray) -> Decision:
    """Upscaling variant: forensic runs never invent detail; otherwise photos and
    illustrations get their own learned model when one is installed."""
    h, w = rgb.shape[:2]
    inputs: dict = {"width": w, "height": h, "scale": plan.scale}
    if plan.no_hallucination:
        if plan.upscale not in ("auto", "lanczos", "bicubic"):
            raise PlanError(f"--no-hallucination forbids the learned upscaler {plan.upscale}")
        variant = "lanczos" if plan.upscale == "auto" else plan.upscale
        return Decision("upscale", variant, "forensic", "no-hallucination mode: interpolation only", inputs)
    if plan.upscale != "auto":
        return Decision("upscale", plan.upscale, "user", f"variant {plan.upscale} named by the user", inputs)
    available = upscale.names()
    label, features = classify_content(rgb)
    inputs.update(features)
    inputs["content"] = label
    model = ILLUSTRATION_MODEL if label == "illustration" else PHOTO_MODEL
    if model in available:
        why = (f"{features['flat']:.0%} flat pixels" + ("" if features.get("grey") else
               f", {features['top_colours']:.0%} in 12 colours, {features['edges']:.0%} strong edges"))
        return Decision("upscale", model, f"{label}-content", f"{label} content ({why}): {model}", inputs)
    return Decision("upscale", "lanczos", "no-learned-model",
                    "no learned upscaler installed for this content: Lanczos", inputs)
