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
from worker.upscale import restoration
from worker.upscale.classify import classify_content
from worker.upscale.features import measure

# Inpainting thresholds: OpenCV's diffusion-style fills are good for thin
# strokes on smooth surroundings; PatchMatch copies texture for the rest.
THIN_STROKE_PX = 7.0
SMALL_COVERAGE = 0.04
TEXTURED_RING = 0.045     # std of the luminance in the ring around the mask, [0, 1]

# Names in worker.upscale's registry (worker/upscale/realesrgan): the general
# x4plus RRDBNet for photos; the compact animevideov3 model for flat-colour art
# (auto now gives drawings x4plus too: ROUTE_MODELS, measured).
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


def choose_inpaint(plan: Plan, mask_stats: dict, texture: float, fill: dict | None = None,
                   installed: list[dict] | tuple = ()) -> Decision:
    """Inpainting variant for one image, from its mask stats and ring texture.

    ``fill``: :func:`fill_features` of the region; ``installed``: the learned
    inpainting models in the store (``worker.inpaint.installed``). With both,
    :data:`FILL_RULES` may pick a learned model first (:func:`choose_learned`)."""
    inputs = {"coverage": mask_stats.get("coverage", 0.0), "stroke_width": mask_stats.get("stroke_width", 0.0),
              "ring_texture": round(texture, 4), "regions": mask_stats.get("regions", 0)}
    if not mask_stats.get("coverage"):
        return Decision("inpaint", "none", "empty-mask", "nothing detected to remove", inputs)
    if plan.inpaint != "auto":
        return Decision("inpaint", plan.inpaint, "user", f"variant {plan.inpaint} named by the user", inputs)
    if fill is not None and installed:
        learned = choose_learned(fill, installed, inputs)
        if learned is not None:
            return learned
        # no fill rule held: the measured fill still goes in the record, so it says why not
        inputs = {**inputs, **fill, "installed": [m["name"] for m in installed]}
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


# --- Large or structured fills: the learned inpainters, when installed -------
# PatchMatch copies the best-fitting patch: fine for text strokes (every fill
# pixel is a few px from real ones), wrong when the fill reaches far from any
# real pixel or must continue structure (lines entering the hole, a face).
# Then a learned model is picked: diffusion first, LaMa/MAT next (FAMILIES);
# with none installed the rules below choose_learned apply (PatchMatch).
LEARNED_FAMILIES = ("diffusion", "lama")
EDGE_MIN_PX = 20          # an edge segment this long (px, Canny) reaching the fill is structure, not grain
FACE_OVERLAP = 0.1        # share of a detected face's box under the fill that makes it "a face under the fill"
FACE_SCAN_PX = 800        # faces are looked for on the image scaled to this longest side


@dataclass(frozen=True)
class Condition:
    """``feature`` (a key of :func:`fill_features`) is at least ``at_least``."""

    feature: str
    at_least: float

    def holds(self, features: dict) -> bool:
        return float(features.get(self.feature, 0.0)) >= self.at_least

    def describe(self, features: dict) -> str:
        return f"{self.feature} {features.get(self.feature, 0):g} >= {self.at_least:g}"


@dataclass(frozen=True)
class FillRule:
    """A learned model is picked when every condition holds; ``rule`` is the
    metric label, ``what`` names the case for people."""

    rule: str
    what: str
    conditions: tuple[Condition, ...]


# Depth thresholds: the shipped captions and watermarks (bold 22-30 px fonts,
# detected and dilated) reach 3-9.2 px from real pixels and have 13-27 edge
# segments at their border (their own glyph outlines), so area and edge rules
# need a fill deeper than any caption; a face is worth a learned fill sooner.
FILL_RULES: tuple[FillRule, ...] = (
    FillRule("large-fill", "a large fill region", (Condition("largest_region_px", 4096), Condition("fill_depth_px", 16))),
    FillRule("large-fill-area", "a large fill area", (Condition("fill_px", 20000), Condition("fill_depth_px", 16))),
    FillRule("face-under-fill", "a face under the fill", (Condition("faces", 1), Condition("fill_depth_px", 8))),
    FillRule("edges-cross-fill", "edges crossing the fill",
             (Condition("edges_crossing", 3), Condition("fill_depth_px", 16))),
)


def _faces(rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Frontal faces as (y0, y1, x0, x1), with scikit-image's bundled LBP cascade
    (OpenCV's own cascade is gone from opencv 5's wheels)."""
    from skimage.data import lbp_frontal_face_cascade_filename
    from skimage.feature import Cascade

    h, w = rgb.shape[:2]
    scale = min(1.0, FACE_SCAN_PX / max(h, w))
    small = cv2.resize(rgb, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA) \
        if scale < 1.0 else rgb
    grey = np.clip(small * 255.0, 0, 255).astype(np.uint8)
    side = min(grey.shape[:2])
    if side < 24:
        return []
    found = Cascade(lbp_frontal_face_cascade_filename()).detect_multi_scale(
        img=grey, scale_factor=1.2, step_ratio=1, min_size=(24, 24), max_size=(side, side))
    return [(int(f["r"] / scale), int((f["r"] + f["height"]) / scale), int(f["c"] / scale),
             int((f["c"] + f["width"]) / scale)) for f in found]


def fill_features(rgb: np.ndarray, region: np.ndarray, faces: bool = True) -> dict:
    """What the learned-inpainter rules read, measured on the fill region:

    - ``fill_px`` and ``coverage``: the region's area (px, fraction);
    - ``largest_region_px``: the largest 8-connected part;
    - ``fill_depth_px``: how far the fill reaches from the nearest real pixel
      (the distance transform's maximum; a text stroke is a few px);
    - ``edges_crossing``: Canny edge segments of at least :data:`EDGE_MIN_PX`
      px outside the region that reach its border (structure the fill must continue);
    - ``faces``: detected faces whose box the region covers by at least
      :data:`FACE_OVERLAP` (only with ``faces=True``)."""
    region = region.astype(bool)
    mask8 = region.astype(np.uint8)
    out: dict = {"fill_px": int(region.sum()), "coverage": round(float(region.mean()), 6)}
    if not out["fill_px"]:
        return {**out, "largest_region_px": 0, "fill_depth_px": 0.0, "edges_crossing": 0, "faces": 0}
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask8, connectivity=8)
    out["largest_region_px"] = int(stats[1:, cv2.CC_STAT_AREA].max()) if count > 1 else 0
    padded = np.pad(mask8, 1)   # the image border is not a real pixel to copy from either
    out["fill_depth_px"] = round(float(cv2.distanceTransform(padded, cv2.DIST_L2, 5).max()), 2)
    grey = cv2.cvtColor(np.clip(rgb * 255.0, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(grey, 50, 150).astype(bool) & ~region
    ring = cv2.dilate(mask8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))).astype(bool) & ~region
    n, labels, estats, _ = cv2.connectedComponentsWithStats(edges.astype(np.uint8), connectivity=8)
    touching = np.unique(labels[ring & edges])
    out["edges_crossing"] = int(sum(1 for lab in touching if lab and estats[lab, cv2.CC_STAT_AREA] >= EDGE_MIN_PX))
    if faces:
        covered = 0
        for y0, y1, x0, x1 in _faces(rgb):
            box = region[y0:y1, x0:x1]
            if box.size and box.mean() >= FACE_OVERLAP:
                covered += 1
        out["faces"] = covered
    return out


def choose_learned(fill: dict, installed: list[dict] | tuple, inputs: dict | None = None) -> Decision | None:
    """The first :data:`FILL_RULES` rule that holds picks the first installed
    model of the preferred family (diffusion, then LaMa/MAT); None when no rule
    holds or nothing is installed."""
    models = sorted(installed, key=lambda e: (LEARNED_FAMILIES.index(e["family"]), e["name"]))
    if not models:
        return None
    inputs = {**(inputs or {}), **fill, "installed": [m["name"] for m in models]}
    for rule in FILL_RULES:
        if all(c.holds(fill) for c in rule.conditions):
            model = models[0]
            why = ", ".join(c.describe(fill) for c in rule.conditions)
            return Decision("inpaint", model["name"], rule.rule,
                            f"{rule.what} ({why}): {model['family']} model {model['name']}", inputs)
    return None


def fallback_variants(variant: str, installed: list[dict] | tuple) -> list[str]:
    """What to try when ``variant`` runs out of memory: the installed learned
    models after it (diffusion, then LaMa/MAT), then PatchMatch."""
    names = [m["name"] for m in sorted(installed, key=lambda e: (LEARNED_FAMILIES.index(e["family"]), e["name"]))]
    after = names[names.index(variant) + 1:] if variant in names else [n for n in names if n != variant]
    families = {m["name"]: m["family"] for m in installed}
    if variant in families:   # a diffusion model falls back to LaMa, not to another diffusion model
        after = [n for n in after if families[n] != families[variant]]
    return after + ["patchmatch"]


# --- Upscaling: artifact-aware routing ----------------------------------------
# The features (worker.upscale.features) are measured once per image, on a
# central crop at most MEASURE_SIDE px square whose corner sits on the 8x8 JPEG
# grid (so blockiness keeps its phase), and go into every upscale decision.
MEASURE_SIDE = 1024

# Thresholds and models: chosen on the labelled benchmark `retouch eval --ops
# upscale` builds (kinds jpeg10..70, noise5..30, grain, blur-jpeg, clean,
# illustration; x4 from 56 px) on 12 development photos (coins,
# hubble_deep_field, ihc, motorcycle_right, astronaut, chelsea, coffee, rocket,
# motorcycle_left, camera, brick, grass; 132 cases), then reported on 8 other
# photos never looked at while choosing (docs/upscaling.md, "How the
# thresholds were chosen"). What the development photos showed: Real-ESRGAN
# x4plus alone was the best plan for 8 of the 12 photos on the lightly
# degraded kinds (clean, noise5, grain, jpeg70) and even on most JPEG ones,
# while dense fine texture (grass, brick) came out as blotches unless
# smoothed first (grass clean: LPIPS 0.92 alone, 0.41 after waifu2x noise3);
# the `texture` feature tells those apart (>= 0.55 on every grass and brick
# case but the heavy JPEGs, <= 0.54 on every other case without strong noise). waifu2x noise3 first
# helped at JPEG q <= 45 and at sigma >= 12 (and beat FFDNet there by 0.5%
# over the 132 cases, so auto's noise rule runs it; FFDNet serves
# `--ops denoise` and `--prepass ffdnet`). The measured sigma of noise5/clean
# cases reached 13.3 and of noise15 ones started at 13.4, hence 12.
THRESHOLDS = {
    "heavy_jpeg_q": 45,        # at or below: deblock first (waifu2x noise3)
    "medium_jpeg_q": 0,        # at or below: a lighter deblock (off: no gain at q70 on the benchmark)
    "noise_sigma": 12.0,       # at or above (8-bit units, Immerkaer on flat blocks): FFDNet first ...
    "noise_grain_max": 0.5,    # ... when the noise is not grain
    "grain_score": 0.8,        # at or above, with grain_sigma: film grain
    "grain_sigma": 13.0,
    "texture": 0.55,           # at or above (features.texture_features): dense fine texture, smooth it first
}


@dataclass(frozen=True)
class When:
    """``feature`` compared with ``value`` (``op``: ">=", "<=" or "==")."""

    feature: str
    op: str
    value: float | str | bool

    def holds(self, features: dict) -> bool:
        v = features.get(self.feature)
        if v is None:
            return False
        if self.op == "==":
            return v == self.value
        return v >= self.value if self.op == ">=" else v <= self.value

    def describe(self, features: dict) -> str:
        return f"{self.feature} {features.get(self.feature)} {self.op} {self.value}"


@dataclass(frozen=True)
class UpscaleRoute:
    """When every condition holds: the pre-pass (None: none), then the
    upscaler. ``rule`` is the metric label. FFDNet's strength is
    :func:`denoise_strength` of the features."""

    rule: str
    what: str
    when: tuple[When, ...]
    upscaler: str
    prepass: str | None = None


# What each rule runs, (pre-pass or None, upscaler): chosen on the same benchmark.
ROUTE_MODELS = {
    "illustration-content": (None, PHOTO_MODEL),
    "heavy-jpeg": ("waifu2x-noise3", PHOTO_MODEL),
    "medium-jpeg": ("waifu2x-noise1", PHOTO_MODEL),
    "sensor-noise": ("waifu2x-noise3", PHOTO_MODEL),
    "dense-texture": ("waifu2x-noise3", PHOTO_MODEL),
    "film-grain": (None, PHOTO_MODEL),
    "photo-content": (None, PHOTO_MODEL),
}


def upscale_routes(t: dict | None = None, models: dict | None = None) -> tuple[UpscaleRoute, ...]:
    """The routes for thresholds ``t`` (default :data:`THRESHOLDS`) and models
    (default :data:`ROUTE_MODELS`), first match wins; the last one always holds."""
    t = {**THRESHOLDS, **(t or {})}
    m = {**ROUTE_MODELS, **(models or {})}

    def route(rule: str, what: str, *when: When) -> UpscaleRoute:
        prepass, upscaler = m[rule]
        return UpscaleRoute(rule, what, when, upscaler, prepass)

    return (
        route("illustration-content", "illustration content", When("content", "==", "illustration")),
        route("heavy-jpeg", "heavy JPEG compression", When("jpeg_q", "<=", t["heavy_jpeg_q"])),
        route("medium-jpeg", "medium JPEG compression", When("jpeg_q", "<=", t["medium_jpeg_q"])),
        route("sensor-noise", "strong sensor noise", When("sigma", ">=", t["noise_sigma"]),
              When("grain_score", "<=", t["noise_grain_max"])),
        route("dense-texture", "dense fine texture", When("texture", ">=", t["texture"])),
        route("film-grain", "film grain", When("grain_score", ">=", t["grain_score"]),
              When("grain_sigma", ">=", t["grain_sigma"])),
        route("photo-content", "photo content"),
    )


UPSCALE_ROUTES = upscale_routes()


def denoise_strength(features: dict) -> float:
    """FFDNet's sigma for an image: the measured noise sigma, or the grain's
    strength when the image has film grain (:data:`THRESHOLDS` ``grain_score``) and it is larger."""
    sigma = float(features.get("sigma", 0.0))
    if features.get("grain_score", 0.0) >= THRESHOLDS["grain_score"]:
        sigma = max(sigma, float(features.get("grain_sigma", 0.0)))
    return round(sigma, 2)


# What the decision log keeps of the features (all of them are in the sidecar's upscale_features).
KEY_FEATURES = ("jpeg_q", "jpeg_q_source", "tables", "table_fit", "blockiness", "double_jpeg", "sigma",
                "grain_score", "grain_sigma", "grain_correlation", "texture", "dust_per_mpx", "scratch_columns", "faded",
                "cast", "content", "flat", "top_colours", "edges", "grey")


def artifact_features(rgb: np.ndarray, tables=None) -> dict:
    """:func:`worker.upscale.features.measure` on a central crop (see
    :data:`MEASURE_SIDE`) plus the content class and its features."""
    h, w = rgb.shape[:2]
    y0 = max(0, (h - MEASURE_SIDE) // 2) // 8 * 8
    x0 = max(0, (w - MEASURE_SIDE) // 2) // 8 * 8
    found = measure(rgb[y0:y0 + MEASURE_SIDE, x0:x0 + MEASURE_SIDE], tables)
    label, content = classify_content(rgb)
    return {**found, **content, "content": label}


@dataclass(frozen=True)
class UpscaleChoice:
    """The router's plan for one image: an optional pre-pass (name, kind,
    strength) and the upscaler, with one rule and reason for both."""

    upscaler: str
    rule: str
    reason: str
    inputs: dict
    prepass: str | None = None
    prepass_kind: str | None = None
    strength: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UpscaleChoice":
        return cls(**d)

    def decision(self) -> Decision:
        return Decision("upscale", self.upscaler, self.rule, self.reason, self.inputs)

    def prepass_decision(self) -> Decision | None:
        if self.prepass is None:
            return None
        return Decision(self.prepass_kind, self.prepass, self.rule, self.reason, self.inputs)


def _measured(features: dict) -> str:
    q, source = features.get("jpeg_q"), features.get("jpeg_q_source", "")
    if source == "pixels, tables odd":
        src = "quantisation tables odd, from the pixels' blockiness"
    elif source == "pixels":
        src = "no quantisation tables, from the pixels' blockiness"
    elif source == "tables+pixels":
        src = "tables, lowered: double compression"
    else:
        src = "from the quantisation tables"
    return (f"measured JPEG q{q} ({src}), noise sigma {features.get('sigma', 0):.1f}, "
            f"grain score {features.get('grain_score', 0):.2f}, texture {features.get('texture', 0):.2f}")


def route_upscale(plan: Plan, rgb: np.ndarray, tables=None, features: dict | None = None,
                  prepasses: list[str] | tuple | None = None,
                  routes: tuple[UpscaleRoute, ...] = UPSCALE_ROUTES) -> UpscaleChoice:
    """The pre-pass and upscaler for one image, with reasons.

    ``features``: :func:`artifact_features` if already measured; ``prepasses``:
    the pre-passes whose weights are installed (None: all). Forensic runs never
    get a learned model or pre-pass; a named upscaler is used as named (with the
    pre-pass ``plan.prepass`` names, if any); ``auto`` follows ``routes``
    (:data:`UPSCALE_ROUTES`). Raises PlanError for a learned model in a forensic run."""
    h, w = rgb.shape[:2]
    features = features if features is not None else artifact_features(rgb, tables)
    inputs: dict = {"width": w, "height": h, "scale": plan.scale,
                    **{k: features[k] for k in KEY_FEATURES if k in features}}
    measured = _measured(features)
    if plan.no_hallucination:
        if plan.upscale not in ("auto", "lanczos", "bicubic"):
            raise PlanError(f"--no-hallucination forbids the learned upscaler {plan.upscale}")
        variant = "lanczos" if plan.upscale == "auto" else plan.upscale
        return UpscaleChoice(variant, "forensic", f"no-hallucination mode: interpolation only ({measured})", inputs)
    if plan.upscale != "auto":
        pre = plan.prepass if plan.prepass not in ("auto", "none") else None
        return _choice(plan.upscale, pre, "user", f"variant {plan.upscale} named by the user"
                       + (f" after {pre}" if pre else "") + f" ({measured})", inputs, features, plan)
    available = upscale.names()
    installed = set(restoration.names() if prepasses is None else prepasses)
    for route in routes:
        if not all(c.holds(features) for c in route.when) or route.upscaler not in available:
            continue
        pre, note = route.prepass, ""
        if pre is not None and (plan.prepass == "none" or pre not in installed):
            # the upscaler alone: the pre-pass is switched off or its weights are not in the store
            note = f" ({pre} {'off' if plan.prepass == 'none' else 'not installed'})"
            pre = None
        conds = ", ".join(c.describe(features) for c in route.when)
        if route.rule in ("photo-content", "illustration-content"):
            conds = (f"{features['flat']:.0%} flat pixels" + ("" if features.get("grey") else
                     f", {features['top_colours']:.0%} in 12 colours, {features['edges']:.0%} strong edges"))
        what = f"{route.what} ({conds}): " + (f"{pre} then " if pre else "") + route.upscaler + note
        return _choice(route.upscaler, pre, route.rule, f"{what}; {measured}", inputs, features, plan)
    return UpscaleChoice("lanczos", "no-learned-model",
                         f"no learned upscaler installed for this content: Lanczos ({measured})", inputs)


def _choice(upscaler: str, prepass: str | None, rule: str, reason: str, inputs: dict, features: dict,
            plan: Plan) -> UpscaleChoice:
    kind = restoration.prepass_info(prepass).kind if prepass else None
    strength = None
    if kind == "denoise":
        strength = float(plan.sigma) if plan.sigma else denoise_strength(features)
    inputs = {**inputs, "prepass": prepass, "prepass_strength": strength}
    return UpscaleChoice(upscaler, rule, reason, inputs, prepass, kind, strength)


def choose_upscale(plan: Plan, rgb: np.ndarray, tables=None, features: dict | None = None) -> Decision:
    """The upscale decision alone (see :func:`route_upscale`)."""
    return route_upscale(plan, rgb, tables, features).decision()


# --- Restoration ops on their own (--ops deblock / --ops denoise) -------------
# JPEG quality -> waifu2x noise level (its levels were trained for roughly these).
DEBLOCK_LEVELS = ((25, 3), (45, 2), (70, 1), (100, 0))


def choose_restoration(kind: str, plan: Plan, features: dict) -> Decision:
    """The pre-pass for an explicit ``deblock`` or ``denoise`` op: a named
    ``plan.prepass`` of that kind, else waifu2x at the level the measured JPEG
    quality calls for (deblock) or FFDNet at ``plan.sigma`` or
    :func:`denoise_strength` (denoise)."""
    inputs = {k: features[k] for k in KEY_FEATURES if k in features}
    measured = _measured(features)
    if plan.no_hallucination:
        raise PlanError(f"--no-hallucination forbids the learned {kind} pre-pass")
    named = plan.prepass not in ("auto", "none") and restoration.prepass_info(plan.prepass).kind == kind
    if kind == "deblock":
        if named:
            return Decision(kind, plan.prepass, "user", f"{plan.prepass} named by the user ({measured})", inputs)
        q = int(features.get("jpeg_q") or 100)
        level = next(lv for top, lv in DEBLOCK_LEVELS if q <= top)
        return Decision(kind, f"waifu2x-noise{level}", "jpeg-quality",
                        f"JPEG q{q}: waifu2x level {level} ({measured})", {**inputs, "prepass_strength": level})
    sigma = float(plan.sigma) if plan.sigma else denoise_strength(features)
    rule = "user-sigma" if plan.sigma else ("film-grain" if sigma > features.get("sigma", 0.0) else "measured-sigma")
    variant = plan.prepass if named else "ffdnet"
    return Decision(kind, variant, rule, f"{variant} at sigma {sigma:.1f} ({measured})",
                    {**inputs, "prepass_strength": round(sigma, 2)})


# --- The backend a model runs on ------------------------------------------------
# Where the same weights run on torch and on ncnn, the CPU gets the faster one:
# as measured on this machine by `retouch bench upscale` (the store's
# backend-speeds.json, worker.upscale.speeds) when it has both, else these
# defaults, measured on the project's 2-core CPU machine with `retouch bench
# upscale --size 96` when it was quiet (s per output MP, torch vs ncnn:
# animevideov3 0.41 vs 0.18, x4plus 9.2 vs 4.7, x4plus-anime 2.8 vs 1.6; under
# load from other jobs the order of x4plus and animevideov3 flipped, hence the
# per-machine file); CUDA always runs torch in fp16.
CPU_BACKEND = {
    "realesr-animevideov3": ("realesr-animevideov3-x4-ncnn", "ncnn about 2.3x faster than torch on the reference CPU"),
    "realesrgan-x4plus": ("realesrgan-x4plus-ncnn", "ncnn about 1.9x faster than torch on the reference CPU"),
    "realesrgan-x4plus-anime": ("realesrgan-x4plus-anime-ncnn", "ncnn about 1.7x faster than torch on the reference CPU"),
}
NCNN_TWIN = {"realesr-animevideov3": "realesr-animevideov3-x4-ncnn", "realesrgan-x4plus": "realesrgan-x4plus-ncnn",
             "realesrgan-x4plus-anime": "realesrgan-x4plus-anime-ncnn"}


def choose_backend(variant: str, device: str, speeds: dict | None = None) -> Decision | None:
    """Which backend runs ``variant`` (a torch model name) on ``device``; None
    when the model has one backend only. ``speeds``: seconds per output MP by
    variant measured on this machine (:func:`worker.upscale.speeds.load`)."""
    if variant not in CPU_BACKEND:
        return None
    if device.startswith("cuda"):
        return Decision("upscale-backend", variant, "cuda-torch-fp16",
                        f"{variant} on {device}: torch in fp16 (ncnn runs on the CPU only here)",
                        {"model": variant, "device": device})
    twin = NCNN_TWIN[variant]
    speeds = speeds or {}
    if variant in speeds and twin in speeds:
        runs = twin if speeds[twin] < speeds[variant] else variant
        backend = "ncnn" if runs == twin else "torch"
        return Decision("upscale-backend", runs, f"cpu-{backend}-measured",
                        f"{variant} on the CPU: {runs} (measured here: torch {speeds[variant]:.3g} s/MP, "
                        f"ncnn {speeds[twin]:.3g} s/MP)",
                        {"model": variant, "device": device, "backend": backend,
                         "torch_s_per_mp": speeds[variant], "ncnn_s_per_mp": speeds[twin]})
    runs, why = CPU_BACKEND[variant]
    backend = "ncnn" if runs.endswith("-ncnn") else "torch"
    return Decision("upscale-backend", runs, f"cpu-{backend}-default", f"{variant} on the CPU: {runs} ({why}; "
                    "run `retouch bench upscale` to measure this machine)",
                    {"model": variant, "device": device, "backend": backend})
