"""Faint overlays over a background of one tone: a logo's name at a third of
its opacity over fur. The background under the strokes hardly varies, so the
blend's colour and alpha cannot be fitted from its variation; the colour the
pixels head for, where their change leaves the RGB cube, is taken instead
(``worker.mask._fit_exit``), and the line's strokes are what moved toward it,
not the fur."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

import worker.mask as mask
from worker import degrade

GREEN = (40, 170, 80)


def _logo_over(ground: tuple[int, int, int], colour: tuple[int, int, int], alpha: float, texture: float, seed: int = 1):
    """"PHX" in bold, ``colour`` at ``alpha`` over ``ground`` with a fur-like
    texture of ``texture`` RMS (0-1). Returns (rgb, region, box, glyphs)."""
    h, w = 90, 260
    rng = np.random.default_rng(seed)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.2)
    photo = np.clip(np.float32(ground) / 255 + (grain / grain.std() * texture)[..., None], 0, 1)
    layer = PILImage.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    font = degrade._font("DejaVuSans-Bold.ttf", 44)
    draw.text((40, 18), "PHX", font=font, fill=255)
    left, top, right, bottom = draw.textbbox((40, 18), "PHX", font=font)
    cover = np.asarray(layer, np.float32)[..., None] / 255 * alpha
    rgb = (photo * (1 - cover) + np.float32(colour) / 255 * cover).astype(np.float32)
    region = np.zeros((h, w), bool)
    region[top - 3:bottom + 3, left - 3:right + 3] = True
    box = [left - 3, top - 3, right - left + 6, bottom - top + 6]
    return rgb, region, box, np.asarray(layer) > 128


def _segmented(rgb, region, box):
    sl, prob, _, fit = mask.segment_line(rgb, region, region, None, box=box)
    strokes = np.zeros(region.shape, bool)
    strokes[sl] = prob >= 0.35
    return strokes, fit


def test_a_faint_logo_over_fur_of_one_tone_is_fitted_as_a_blend(monkeypatch):
    rgb, region, box, glyphs = _logo_over((150, 115, 85), GREEN, 0.33, texture=0.10)
    strokes, fit = _segmented(rgb, region, box)
    assert len(fit.alphas) == 1 and fit.alphas[0] < mask.EXIT_MAX_ALPHA
    r, g, b = fit.colours[0]
    assert g > r + 60 and g > b + 60       # green, as the logo: the fur's brown is not in it
    recall = (strokes & glyphs).sum() / glyphs.sum()
    false = int((strokes & ~glyphs).sum())
    assert recall >= 0.9
    # fitted as opaque (the mean of what it sees: a brownish green), the fur moving toward that is "text" too
    monkeypatch.setattr(mask, "_fit_exit", lambda obs, bg, opaque: opaque)
    opaque_strokes, opaque_fit = _segmented(rgb, region, box)
    assert opaque_fit.alphas == [1.0]
    assert (opaque_strokes & ~glyphs).sum() > 3 * max(false, 10)


def test_one_colour_that_explains_the_strokes_stays_opaque(monkeypatch):
    """A blue stamp over a flat grey-blue sky: the pixels agree on one colour
    (an opaque fit within EXIT_FROM), though a fainter, purer blue would
    explain them too. Unblending a stamp fitted that way would amplify its
    error."""
    rng = np.random.default_rng(0)
    sky = np.tile(np.float32([70, 80, 120]) / 255, (400, 1)) + rng.normal(0, 0.004, (400, 3)).astype(np.float32)
    stamp = np.float32([40, 40, 160]) / 255
    obs = (0.93 * stamp + 0.07 * sky + rng.normal(0, 0.02, (400, 3))).astype(np.float32)
    colour, alpha, rmse = mask._fit_blend(obs, sky)
    assert alpha == 1.0 and rmse < mask.EXIT_FROM
    monkeypatch.setattr(mask, "EXIT_FROM", 0.0)
    assert mask._fit_blend(obs, sky)[1] < 0.62   # without the floor, the faint pure blue would be taken


def test_a_pale_caption_is_not_taken_for_a_faint_white_one():
    """Over a flat background, an opaque pink caption's change heads for white
    as a faint white mark's would: white, black and grey exits are never taken
    (EXIT_CHROMA), so it stays opaque."""
    rng = np.random.default_rng(0)
    ground = np.tile(np.float32([150, 120, 110]) / 255, (400, 1)) + rng.normal(0, 0.004, (400, 3)).astype(np.float32)
    texture = rng.normal(0, 0.05, (400, 3)).astype(np.float32) * (rng.random((400, 1)) < 0.3)  # fur among them
    obs = (np.float32([202, 182, 182]) / 255 + texture).astype(np.float32)
    assert mask._fit_blend(obs, ground)[1] == 1.0
