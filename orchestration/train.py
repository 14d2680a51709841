"""Train the stroke segmenter (:mod:`worker.strokes`) that ships as ``worker/strokes.pt``.

The training set is rendered, never downloaded: captions in every font
matplotlib ships (DejaVu, STIX, Computer Modern), bold, outlined, shadowed,
overlapping, semi-transparent (alpha 0.3-1), rotated, in colours that contrast
with the photo, that are taken from it, or that are random; over crops of
photos that ship in installed packages and that ``retouch eval`` does *not*
score on (scikit-image's gravel, moon, cell, coins, ..., matplotlib's
grace_hopper) and over generated textures. The eval's twelve photos never
appear, so its figures measure photos the network has not seen.

The target is the overlay's true mask where it changed the pixel visibly;
pixels it covered without a visible change are left out of the loss.

    python -m orchestration.train [--steps 6000] [--out worker/strokes.pt] [--seed 0]

``--init`` goes on from existing weights instead (see docs/text.md for a
second run from the shipped ones, measured and not shipped).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from worker import degrade
from worker.strokes import LINE_PX, WEIGHTS, build_network

log = logging.getLogger(__name__)

CROP = 96
# scikit-image and matplotlib sample images that retouch eval's photo sets leave out
SKIMAGE_TRAIN = ("gravel.png", "moon.png", "cell.png", "coins.png", "color.png", "clock_motion.png",
                 "chessboard_RGB.png", "microaneurysms.png", "horse.png", "phantom.png")
MATPLOTLIB_TRAIN = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")
FONT_EXCLUDE = ("LastResort", "STIXSiz", "STIXNonUni", "cmex", "cmsy", "cmmi", "DejaVuSansDisplay",
                "DejaVuSerifDisplay")
CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789©&-./"
HEIGHT_PER_SIZE = 0.85   # a DBNet line region's height per font px (measured on the eval's captions)


def training_photos() -> list[np.ndarray]:
    """The photos the crops are cut from (float32 RGB in [0, 1])."""
    import matplotlib
    import skimage

    roots = [(Path(skimage.__file__).parent / "data", SKIMAGE_TRAIN),
             (Path(matplotlib.get_data_path()) / "sample_data", MATPLOTLIB_TRAIN)]
    photos = []
    for root, names in roots:
        for name in names:
            bgr = cv2.imread(str(root / name), cv2.IMREAD_COLOR)
            if bgr is not None:
                photos.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0)
    return photos


def fonts() -> list[str]:
    return sorted(p.name for p in degrade.FONT_DIR.glob("*.ttf") if not p.name.startswith(FONT_EXCLUDE))


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A generated background: smooth colour fields plus noise at a random
    scale, with edges and stripes sometimes (grass, brick, sky stand-ins)."""
    out = np.zeros((size, size, 3), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cells = int(rng.integers(2, 40))
        field = rng.random((cells, cells, 3)).astype(np.float32)
        out += cv2.resize(field, (size, size), interpolation=cv2.INTER_CUBIC) * float(rng.uniform(0.2, 1.0))
    out /= max(1e-6, float(out.max()))
    if rng.random() < 0.4:
        period = float(rng.uniform(4, 30))
        angle = float(rng.uniform(0, np.pi))
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        stripes = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0).astype(np.float32)
        out = out * (1 - 0.3 * stripes[..., None]) + 0.3 * stripes[..., None] * rng.random(3).astype(np.float32)
    out += rng.normal(0, float(rng.uniform(0, 0.08)), out.shape).astype(np.float32)
    return np.clip(out, 0, 1)


def background(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> np.ndarray:
    if rng.random() < 0.35 or not photos:
        return texture(rng, size)
    photo = photos[int(rng.integers(len(photos)))]
    scale = float(rng.uniform(0.3, 1.5))
    h, w = photo.shape[:2]
    if min(h, w) * scale < size:
        scale = size / min(h, w)
    small = cv2.resize(photo, (max(size, int(w * scale)), max(size, int(h * scale))), interpolation=cv2.INTER_AREA)
    y = int(rng.integers(0, small.shape[0] - size + 1))
    x = int(rng.integers(0, small.shape[1] - size + 1))
    crop = small[y:y + size, x:x + size].copy()
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.3:
        crop = crop[:, :, rng.permutation(3)]
    if rng.random() < 0.2:
        crop = 1.0 - crop
    return np.ascontiguousarray(crop * float(rng.uniform(0.6, 1.2)) + float(rng.uniform(-0.15, 0.15))).clip(0, 1)


def caption(rng: np.random.Generator, bg: np.ndarray, font_names: list[str]) -> list[degrade.TextSpec]:
    """One or two lines of one hard kind or another over ``bg``."""
    size_px = bg.shape[0]
    specs = []
    for line in range(1 if rng.random() < 0.6 else 2):
        size = int(rng.uniform(0.75, 1.35) * LINE_PX / HEIGHT_PER_SIZE)
        if rng.random() < 0.5:
            text = str(rng.choice(degrade.WORDS))
        else:
            text = "".join(rng.choice(list(CHARS), size=int(rng.integers(3, 10))))
        x = int(rng.integers(-size, size_px // 2))
        y = int(rng.integers(-size // 3, size_px - size))
        spec = degrade.TextSpec(text=text, xy=(x, y), size=size, font=str(rng.choice(font_names)))
        spec = degrade.legible(bg, [spec])[0] if rng.random() < 0.6 else spec
        roll = rng.random()
        if roll < 0.25:   # a colour from the photo itself
            py, px = int(rng.integers(size_px)), int(rng.integers(size_px))
            spec = replace(spec, colour=tuple(int(round(c * 255)) for c in bg[py, px]))
        elif roll < 0.45:
            spec = replace(spec, colour=tuple(int(c) for c in rng.integers(0, 256, 3)))
        elif roll < 0.6:
            spec = replace(spec, colour=(255, 255, 255) if rng.random() < 0.5 else (0, 0, 0))
        if rng.random() < 0.4:
            spec = replace(spec, opacity=float(rng.uniform(0.3, 1.0)))
        if rng.random() < 0.2:
            light = np.mean(spec.colour) > 127
            spec = replace(spec, outline=int(rng.integers(1, 4)),
                           outline_colour=(0, 0, 0) if light else (255, 255, 255))
        elif rng.random() < 0.2:
            spec = replace(spec, shadow=(int(rng.integers(1, 5)), int(rng.integers(1, 5))),
                           shadow_colour=(0, 0, 0) if np.mean(spec.colour) > 127 else (90, 90, 90),
                           shadow_opacity=float(rng.uniform(0.5, 0.9)))
        if rng.random() < 0.35:
            spec = replace(spec, angle=float(rng.uniform(-35, 35)))
        if specs and rng.random() < 0.5:   # a second line crossing the first, in another colour
            first = specs[0]
            spec = replace(spec, size=first.size, angle=float(rng.uniform(-8, 8)),
                           xy=(first.xy[0] + int(rng.integers(0, first.size)), first.xy[1] + first.size // 2))
        specs.append(spec)
    return specs


def sample(rng: np.random.Generator, photos: list[np.ndarray], font_names: list[str]) -> tuple[np.ndarray, ...]:
    """(degraded RGB, target, weight): one training crop."""
    bg = background(rng, photos, CROP)
    if rng.random() < 0.15:   # no text: the network must not find glyphs in texture
        return bg, np.zeros(bg.shape[:2], np.float32), np.ones(bg.shape[:2], np.float32)
    specs = caption(rng, bg, font_names)
    degraded, touched = degrade.overlay_text(bg, specs)
    visible = np.abs(degraded - bg).max(axis=2) > 3 / 255
    if rng.random() < 0.3:    # a JPEG round trip, as most archive files have had
        quality = int(rng.integers(40, 95))
        _, buf = cv2.imencode(".jpg", (degraded[..., ::-1] * 255).round().astype(np.uint8),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
        degraded = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0
    target = (touched & visible).astype(np.float32)
    weight = np.where(touched & ~visible, 0.0, 1.0).astype(np.float32)
    return np.ascontiguousarray(degraded), target, weight


def train(steps: int, seed: int, out: Path, batch: int = 16, pool: int = 6000, refresh: int = 400,
          init: Path | None = None, max_lr: float = 3e-3) -> dict:
    """Train from scratch, or on from the weights in ``init``; returns the
    final figures. The pool of crops is rendered up front and a share of it
    re-rendered every ``refresh`` steps. The learning rate rises to ``max_lr``
    over the first tenth of the steps and anneals to nothing (one cycle)."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    photos, font_names = training_photos(), fonts()
    log.info("training photos: %d, fonts: %d", len(photos), len(font_names))
    data = [sample(rng, photos, font_names) for _ in range(pool)]
    net = build_network()
    if init is not None:
        state = torch.load(init, map_location="cpu", weights_only=True)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    opt = torch.optim.AdamW(net.parameters(), lr=max_lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=steps, pct_start=0.1)
    start, losses = time.time(), []
    for step in range(steps):
        idx = rng.integers(0, pool, batch)
        x = torch.from_numpy(np.stack([data[i][0].transpose(2, 0, 1) for i in idx]))
        y = torch.from_numpy(np.stack([data[i][1] for i in idx]))[:, None]
        w = torch.from_numpy(np.stack([data[i][2] for i in idx]))[:, None]
        logits = net(x)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, weight=w, reduction="sum") / w.sum()
        p = torch.sigmoid(logits) * w
        dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + (y * w).sum() + 1)
        loss = bce + dice
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % refresh == 0:
            for i in rng.integers(0, pool, pool // 8):
                data[i] = sample(rng, photos, font_names)
        if (step + 1) % 100 == 0:
            log.info("step %d/%d loss %.4f (%.0f s)", step + 1, steps, float(np.mean(losses[-100:])),
                     time.time() - start)
    net.eval()
    # half precision on disk (0.6 MB); loaded back as float32
    state = {k: v.detach().half() if v.is_floating_point() else v.detach().clone() for k, v in net.state_dict().items()}
    torch.save(state, out)
    return {"steps": steps, "loss": float(np.mean(losses[-100:])), "seconds": round(time.time() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestration.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--init", type=Path, default=None, help="go on from these weights instead of from scratch")
    parser.add_argument("--max-lr", type=float, default=3e-3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    figures = train(args.steps, args.seed, args.out, init=args.init, max_lr=args.max_lr)
    print(f"wrote {args.out}: {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
