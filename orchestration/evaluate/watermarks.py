"""Watermark and logo evaluation (``retouch watermark eval``): kinds of mark
over clean photos, each run through the embedded pipeline as ``retouch run``
would, scored against the clean photo and the true mask.

Kinds (one case per photo, seeded by photo and kind):

- ``tiled``: rotated semi-transparent text repeated on a grid
  (:func:`worker.degrade.random_watermark_spec`);
- ``faint-logo``: a ring-and-letters logo at alpha 0.25-0.6, white, black or
  coloured, at a random scale and angle;
- ``stamp``: a bold outlined stamp (frame and bold word), nearly opaque, red
  or dark, rotated;
- ``collection``: N photos sharing one logo (learned mode), with or without
  position jitter.

Modes: ``auto`` (text detector plus ``--watermark auto``), ``template``
(``--watermark FILE`` with the mark's template at its own scale and no
rotation), ``learned`` (collection only). References: the input itself and
Telea given the true mask. Scores per case: recall and false area of the
detected region (text detector and watermark stage together), PSNR and LPIPS
inside the true mask, and for learned marks the alpha MAE against the truth.
"""

from __future__ import annotations

import html
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

from orchestration.local import restore
from worker import degrade
from worker.io import Image
from worker.pipeline.artifacts import IMAGE, PIXELS
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import Plan
from worker.quality import metrics
from worker.watermark import Template, save_template
from worker.watermark.learn import learn
from worker.watermark.match import Occurrence, render
from worker.watermark.template import Pose

KINDS = ("tiled", "faint-logo", "stamp")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field",
          "ihc", "retina", "camera", "coins", "moon")
STAMP_WORDS = ("ARCHIVE", "APPROVED", "COPY", "PROOF", "SAMPLE")


@dataclass
class MarkCase:
    id: str
    kind: str
    photo: str
    clean: np.ndarray
    observed: np.ndarray
    truth: np.ndarray             # bool HxW
    template: Template | None     # the mark as a user would hand it over
    params: dict = field(default_factory=dict)


def photos(max_side: int, count: int) -> list[tuple[str, np.ndarray]]:
    """scikit-image's bundled photographs (grey ones as RGB), fitted into ``max_side``."""
    from skimage import data

    folder = Path(data.__file__).parent
    out = []
    for name in PHOTOS[:count]:
        path = next(folder.glob(f"{name}.*"))
        rgb = np.asarray(PILImage.open(path).convert("RGB"), np.float32) / 255.0
        h, w = rgb.shape[:2]
        s = min(1.0, max_side / max(h, w))
        rgb = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else rgb
        out.append((name, np.ascontiguousarray(rgb[: rgb.shape[0] // 4 * 4, : rgb.shape[1] // 4 * 4], np.float32)))
    return out


def _quantised(rgb: np.ndarray) -> np.ndarray:
    return (np.round(np.clip(rgb, 0, 1) * 255) / 255).astype(np.float32)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    pick = rng.integers(0, 3)
    if pick == 0:
        return (255, 255, 255)
    if pick == 1:
        return (int(rng.integers(0, 40)),) * 3
    return tuple(int(c) for c in rng.choice([(220, 40, 40), (40, 90, 220), (240, 200, 40), (40, 170, 80)]))


def _text_template(spec: degrade.WatermarkSpec) -> Template:
    """One tile of a tiled watermark, unrotated, as a user would cut it out."""
    font = degrade._font(spec.font, spec.size)
    left, top, right, bottom = ImageDraw.Draw(PILImage.new("L", (1, 1))).textbbox((0, 0), spec.text, font=font)
    layer = PILImage.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(layer).text((4 - left, 4 - top), spec.text, fill=255, font=font)
    alpha = np.asarray(layer, np.float32) / 255.0 * spec.opacity
    return Template(np.broadcast_to(np.float32(spec.colour) / 255, alpha.shape + (3,)).copy(), alpha, "tile")


def _stamp_layer(word: str, size: int) -> np.ndarray:
    """A bold outlined stamp: a thick frame around a bold word, alpha in [0, 1]."""
    font = degrade._font("DejaVuSans-Bold.ttf", size)
    left, top, right, bottom = ImageDraw.Draw(PILImage.new("L", (1, 1))).textbbox((0, 0), word, font=font)
    pad, ring = size // 2, max(3, size // 6)
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    layer = PILImage.new("L", (w + 4, h + 4), 0)
    draw = ImageDraw.Draw(layer)
    draw.rounded_rectangle((2, 2, w + 1, h + 1), radius=size // 3, outline=255, width=ring)
    draw.text((2 + pad - left, 2 + pad - top), word, fill=255, font=font)
    return np.asarray(layer, np.float32) / 255.0


def _placed(clean: np.ndarray, template: Template, rng: np.random.Generator, max_angle: float,
            scale_range: tuple[float, float], opacity: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """``template`` composited once at a random pose (inside the photo); (observed, true alpha, pose)."""
    h, w = clean.shape[:2]
    th, tw = template.alpha.shape
    scale = float(rng.uniform(*scale_range))
    scale = min(scale, 0.8 * min(h, w) / max(th, tw))
    half = 0.5 * np.hypot(th, tw) * scale
    x = float(rng.uniform(half, max(half + 1, w - half)))
    y = float(rng.uniform(half, max(half + 1, h - half)))
    pose = Pose(x, y, scale, float(rng.uniform(-max_angle, max_angle)))
    overlay = render((h, w), template, [Occurrence(pose, 1.0, 1.0, opacity / max(float(template.alpha.max()), 1e-6))])
    a = overlay[..., 3:]
    return _quantised(a * overlay[..., :3] + (1 - a) * clean), overlay[..., 3], {
        "x": round(x, 2), "y": round(y, 2), "scale": round(scale, 3), "angle": round(pose.angle, 2),
        "opacity": round(opacity, 3)}


def build_cases(photo_list: list[tuple[str, np.ndarray]], kinds: list[str], seed: int) -> list[MarkCase]:
    cases = []
    for p_i, (name, clean) in enumerate(photo_list):
        h, w = clean.shape[:2]
        for kind in kinds:
            rng = np.random.default_rng(np.random.SeedSequence([seed, p_i, KINDS.index(kind)]))
            if kind == "tiled":
                spec = degrade.random_watermark_spec(rng, w, h)
                observed, truth = degrade.tiled_watermark(clean, spec)
                params = {"text": spec.text, "opacity": round(spec.opacity, 3), "angle": round(spec.angle, 2),
                          "step": list(spec.step), "colour": list(spec.colour)}
                cases.append(MarkCase(f"{name}-tiled", kind, name, clean, _quantised(observed), truth,
                                      _text_template(spec), params))
            elif kind == "faint-logo":
                colour = _colour(rng)
                spec = degrade.LogoSpec(xy=(2, 2), size=60, letters=str(rng.choice(["RA", "AG", "M", "PHX"])),
                                        colour=colour, opacity=1.0, shape=str(rng.choice(["circle", "square"])))
                alpha = degrade.logo_layer(64, 64, spec)
                template = Template(np.broadcast_to(np.float32(colour) / 255, (64, 64, 3)).copy(), alpha, "logo")
                opacity = float(rng.uniform(0.25, 0.6))
                observed, true_alpha, pose = _placed(clean, template, rng, 40.0, (0.7, 1.6), opacity)
                cases.append(MarkCase(f"{name}-faint-logo", kind, name, clean, observed, true_alpha > 0.02,
                                      template, {"colour": list(colour), **pose}))
            elif kind == "stamp":
                colour = (200, 30, 30) if rng.random() < 0.6 else (30, 30, 60)
                word = str(rng.choice(STAMP_WORDS))
                alpha = _stamp_layer(word, 24)
                template = Template(np.broadcast_to(np.float32(colour) / 255, alpha.shape + (3,)).copy(), alpha,
                                    "stamp")
                observed, true_alpha, pose = _placed(clean, template, rng, 25.0, (0.8, 1.4),
                                                     float(rng.uniform(0.8, 0.95)))
                cases.append(MarkCase(f"{name}-stamp", kind, name, clean, observed, true_alpha > 0.02, template,
                                      {"word": word, "colour": list(colour), **pose}))
    return cases


def _telea(observed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    u8 = np.clip(np.rint(observed * 255), 0, 255).astype(np.uint8)
    return cv2.inpaint(u8, mask.astype(np.uint8), 3, cv2.INPAINT_TELEA).astype(np.float32) / 255.0


def _r(v) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 4)


def score(clean: np.ndarray, output: np.ndarray, truth: np.ndarray, detected: np.ndarray | None, lpips=None) -> dict:
    row = {"psnr_mask": _r(metrics.psnr(clean, output, truth))}
    if lpips is not None:
        row["lpips_mask"] = _r(metrics.masked_mean(lpips.distance_map(clean, output), truth))
    if detected is not None:
        row["recall"] = _r((detected & truth).sum() / max(int(truth.sum()), 1))
        row["false_area"] = _r((detected & ~truth).mean())
    return row


def _restore(rgb: np.ndarray, name: str, plan: Plan, cache: ModelCache):
    """The pipeline's output and the region it found (text and marks, before
    unblending hands part of it back): run to the watermark stage, then on."""
    image = Image(rgb=rgb, name=name)
    found = restore(image, plan, cache, until="watermark")
    maps = {k: v for k, v in found.artifacts.items() if k not in (IMAGE, PIXELS)}
    region = maps.get("region")
    restored = restore(image, plan, cache, given=maps, trace=found.trace, after="watermark")
    return restored, (region if region is not None else np.zeros(rgb.shape[:2], bool))


def run_case(case: MarkCase, mode: str, cache: ModelCache, folder: Path, lpips=None) -> tuple[dict, np.ndarray]:
    """One case in one mode (``auto``, ``template``, ``input``, ``telea-true``): (row, output)."""
    base = {"case": case.id, "kind": case.kind, "photo": case.photo, "mode": mode}
    if mode == "input":
        return {**base, **score(case.clean, case.observed, case.truth, None, lpips)}, case.observed
    if mode == "telea-true":
        out = _telea(case.observed, case.truth)
        return {**base, **score(case.clean, out, case.truth, case.truth, lpips)}, out
    watermarks: list[str] = []
    if mode == "template":
        path = folder / f"{case.id}-template.png"
        save_template(case.template, path)
        watermarks = [str(path)]
    plan = Plan(ops=["remove-text"], watermarks=watermarks, watermark_auto=(mode == "auto"))
    restored, detected = _restore(case.observed, case.id, plan, cache)
    record = restored.record
    row = {**base, **score(case.clean, restored.image.rgb, case.truth, detected, lpips),
           "marks": len(record.get("watermarks", {}).get("marks", []))}
    return row, restored.image.rgb


def collection_cases(photo_list: list[tuple[str, np.ndarray]], n: int = 20, jitter: int = 0, seed: int = 0,
                     side: int = 128) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """(clean crops, observed, true alphas): ``n`` crops of the photos sharing
    one logo (alpha 0.45, white) near their bottom right corner, with
    ``jitter`` px of position jitter, 8-bit."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 99, jitter]))
    crops = []
    for i in range(n):
        _, src = photo_list[i % len(photo_list)]
        y = int(rng.integers(0, max(1, src.shape[0] - side)))
        x = int(rng.integers(0, max(1, src.shape[1] - side)))
        crop = src[y:y + side, x:x + side]
        if crop.shape[:2] == (side, side):
            crops.append(crop)
    colour = (255, 255, 255)
    observed, alphas = [], []
    for crop in crops:
        dx, dy = (rng.integers(-jitter, jitter + 1, 2) if jitter else (0, 0))
        spec = degrade.LogoSpec(xy=(side - 62 + int(dx), side - 62 + int(dy)), size=54, letters="RA", colour=colour,
                                opacity=0.45)
        alpha = degrade.logo_layer(side, side, spec)
        observed.append(_quantised(degrade.composite(crop, alpha, colour)[0]))
        alphas.append(alpha)
    return crops, observed, alphas


def collection_eval(photo_list: list[tuple[str, np.ndarray]], cache: ModelCache, folder: Path, n: int = 20,
                    jitter: int = 0, seed: int = 0, side: int = 128, lpips=None) -> tuple[list[dict], dict, list]:
    """The collection of :func:`collection_cases`: learned, then applied (learned mode)."""
    crops, observed, alphas = collection_cases(photo_list, n, jitter, seed, side)
    summary: dict = {"images": len(crops), "jitter": jitter}
    try:
        learned = learn(observed, name="collection")
    except Exception as exc:  # WatermarkError: reported as the mode's one line
        summary["error"] = str(exc)
        return [], summary, []
    x0, y0, x1, y1 = learned.box
    estimate = np.zeros_like(alphas[0])
    estimate[y0:y1, x0:x1] = learned.template.alpha
    if not jitter:
        support = alphas[0] > 0.02
        summary["alpha_mae_support"] = _r(np.abs(estimate - alphas[0])[support].mean())
        summary["alpha_mae_box"] = _r(np.abs(estimate - alphas[0])[y0:y1, x0:x1].mean())
    path = folder / "collection-learned.png"
    save_template(learned.template, path)
    (folder / "collection-learned.json").write_text(json.dumps({
        "template": path.name, "size": {"width": side, "height": side},
        "box": {"x0": x0, "y0": y0, "x1": x1, "y1": y1}}))
    rows, visuals = [], []
    plan = Plan(ops=["remove-text"], watermarks=[str(path)])
    for i, (clean, obs, alpha) in enumerate(zip(crops, observed, alphas)):
        truth = alpha > 0.02
        restored, detected = _restore(obs, f"collection-{i}", plan, cache)
        base = {"case": f"collection{'-jitter' if jitter else ''}-{i}", "kind": "collection" + ("-jitter" if jitter else ""),
                "photo": photo_list[i % len(photo_list)][0]}
        rows.append({**base, "mode": "learned", **score(clean, restored.image.rgb, truth, detected, lpips)})
        rows.append({**base, "mode": "telea-true", **score(clean, _telea(obs, truth), truth, truth, lpips)})
        rows.append({**base, "mode": "input", **score(clean, obs, truth, None, lpips)})
        if i == 0:
            visuals.append((base["kind"], obs, restored.image.rgb, truth))
    return rows, summary, visuals


def summarise(rows: list[dict]) -> list[dict]:
    table = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        for mode in dict.fromkeys(r["mode"] for r in rows if r["kind"] == kind):
            sel = [r for r in rows if r["kind"] == kind and r["mode"] == mode]
            entry = {"kind": kind, "mode": mode, "n": len(sel)}
            for key in ("recall", "false_area", "psnr_mask", "lpips_mask"):
                values = [r[key] for r in sel if r.get(key) is not None]
                if values:
                    entry[key] = round(float(np.mean(values)), 4)
            table.append(entry)
    # outputs below their input (PSNR in the mask), per kind and mode
    for entry in table:
        if entry["mode"] in ("input", "telea-true"):
            continue
        below = 0
        for r in rows:
            if r["kind"] == entry["kind"] and r["mode"] == entry["mode"]:
                ref = next(x for x in rows if x["case"] == r["case"] and x["mode"] == "input")
                below += int((r.get("psnr_mask") or 0) < (ref.get("psnr_mask") or 0))
        entry["below_input"] = below
    return table


def write_report(out: Path, table: list[dict], rows: list[dict], summary: dict,
                 visuals: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "watermarks.json").write_text(json.dumps({"table": table, "rows": rows, "collection": summary}, indent=1))
    cols = ("kind", "mode", "n", "recall", "false_area", "psnr_mask", "lpips_mask", "below_input")
    parts = ["<html><head><meta charset='utf-8'><title>retouch watermark eval</title></head><body>",
             "<h1>Watermarks and logos</h1><table border=1 cellpadding=3><tr>",
             "".join(f"<th>{c}</th>" for c in cols), "</tr>"]
    for e in table:
        parts.append("<tr>" + "".join(f"<td>{html.escape(str(e.get(c, '')))}</td>" for c in cols) + "</tr>")
    parts.append(f"</table><p>collection: {html.escape(json.dumps(summary))}</p><h2>Before / after</h2>")
    for kind, before, after, truth in visuals:
        name = f"{kind}.png"
        edge = cv2.dilate(truth.astype(np.uint8), np.ones((3, 3), np.uint8)) - truth.astype(np.uint8)
        marked = before.copy()
        marked[edge.astype(bool)] = (1.0, 0.0, 1.0)
        strip = np.hstack([before, after, marked])
        PILImage.fromarray(np.rint(strip * 255).astype(np.uint8)).save(out / name)
        parts.append(f"<h3>{html.escape(kind)}</h3><img src='{name}'><p>input | output | true mask outline</p>")
    parts.append("</body></html>")
    page = out / "index.html"
    page.write_text("".join(parts))
    return page


def evaluate(out: Path, photo_count: int = 12, max_side: int = 256, seed: int = 0, kinds: list[str] | None = None,
             modes: tuple[str, ...] = ("input", "telea-true", "auto", "template"), collection: bool = True,
             model_dir: str | None = None, lpips=None) -> tuple[list[dict], dict, Path]:
    """Everything: cases, runs, table, report. Returns (table, collection summary, page)."""
    photo_list = photos(max_side, photo_count)
    cases = build_cases(photo_list, list(kinds or KINDS), seed)
    cache = ModelCache(device="cpu", model_dir=model_dir)
    rows, visuals, summary = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for case in cases:
            outputs = {}
            for mode in modes:
                row, outputs[mode] = run_case(case, mode, cache, folder, lpips)
                rows.append(row)
            if not any(v[0].startswith(case.kind + " ") for v in visuals):
                for mode in ("template", "auto"):
                    if mode in outputs:
                        visuals.append((f"{case.kind} ({mode})", case.observed, outputs[mode], case.truth))
        if collection:
            for jitter in (0, 6):
                c_rows, c_summary, c_visuals = collection_eval(photo_list, cache, folder, jitter=jitter, seed=seed,
                                                               lpips=lpips)
                rows += c_rows
                visuals += c_visuals
                summary["jitter" if jitter else "aligned"] = c_summary
    table = summarise(rows)
    page = write_report(out, table, rows, summary, visuals)
    return table, summary, page
