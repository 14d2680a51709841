"""``retouch watermark learn``: learn the watermark a collection shares.

    retouch watermark learn PATH... --out mark.png [--min-images 8] [--sample 64]
    retouch watermark eval [--photos 12] [--max-side 256] [--out report-watermarks/]

Writes the mark as an RGBA PNG (usable with ``retouch run --watermark
mark.png``) and, next to it, ``mark.json``: its alpha map, colour, size,
position in the collection's frame and the images it came from.
``retouch run --watermark learned`` does the same on its own batch first.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np

from orchestration.local import discover
from monitoring.logs import DECISION_LOGGER
from orchestration.evaluate.watermarks import KINDS, evaluate
from orchestration.settings import load_settings
from worker.errors import RetouchError
from worker.files import atomic_write
from worker.io import read_image
from worker.quality.lpips import LPIPS
from worker.watermark import WatermarkError, save_template
from worker.watermark.learn import MIN_IMAGES, Learned, describe, learn

SAMPLE = 64  # images read to learn from (evenly spaced over the batch): the stack is held in memory


def learn_from_files(files: list[Path], out: Path, max_pixels: int = 100_000_000, min_images: int = MIN_IMAGES,
                     sample: int = SAMPLE) -> Learned:
    """Learn the shared mark from ``files`` (a sample of at most ``sample``),
    write ``out`` (RGBA PNG) and ``out`` with suffix .json. Unreadable files
    are skipped. Raises WatermarkError (one line) when nothing can be learned."""
    if len(files) > sample:
        files = [files[int(i)] for i in np.linspace(0, len(files) - 1, sample)]
    images, names = [], []
    for path in files:
        try:
            images.append(read_image(path, max_pixels).rgb)
            names.append(str(path))
        except RetouchError:
            continue
    learned = learn(images, name=str(out), min_images=min_images)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_template(learned.template, out)
    atomic_write(out.with_suffix(".json"), json.dumps(describe(learned, out.name, names)).encode())
    return learned


def register(sub) -> None:
    p = sub.add_parser("watermark", help="learn the watermark a collection shares (RGBA template + JSON)",
                       description=__doc__.splitlines()[0])
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    lp = actions.add_parser("learn", help="learn the mark shared by a collection of images",
                            description="Learn the mark shared by images of one size (Dekel et al. 2017: median of "
                                        "gradients, Poisson reconstruction, alpha and colour solved together).")
    lp.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    lp.add_argument("--out", required=True, type=Path, help="the RGBA PNG to write (its JSON goes next to it)")
    lp.add_argument("--min-images", type=int, default=MIN_IMAGES,
                    help=f"fewest images of one size to learn from (default {MIN_IMAGES})")
    lp.add_argument("--sample", type=int, default=SAMPLE, help=f"images read at most (default {SAMPLE})")
    lp.add_argument("--max-pixels", type=int, default=100_000_000, help="skip larger images")
    ep = actions.add_parser("eval", help="score watermark and logo removal on synthetic marks over clean photos",
                            description="Tiled rotated text, faint logos, bold stamps and a shared-logo collection "
                                        "over scikit-image's photos: recall, false area, PSNR/LPIPS in the true mask, "
                                        "against the input and Telea given the true mask; learned alpha MAE.")
    ep.add_argument("--photos", type=int, default=12, help="how many bundled photos (default 12)")
    ep.add_argument("--max-side", type=int, default=256, help="photos reduced to this longer side (default 256)")
    ep.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated: {', '.join(KINDS)}")
    ep.add_argument("--no-collection", action="store_true", help="skip the learned (collection) mode")
    ep.add_argument("--lpips", action="store_true", help="also LPIPS (needs the model store's LPIPS weights)")
    ep.add_argument("--seed", type=int, default=0)
    ep.add_argument("--out", type=Path, default=Path("report-watermarks"), help="report folder")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.action == "eval":
        return run_eval(args)
    files = [f for f, _ in discover([p for p in args.paths if Path(p).exists()])]
    if not files:
        raise WatermarkError(f"{', '.join(args.paths)}: no images found")
    learned = learn_from_files(files, args.out, args.max_pixels, args.min_images, args.sample)
    t = learned.template
    x0, y0, x1, y1 = learned.box
    print(f"retouch watermark: learned a {x1 - x0}x{y1 - y0} mark at ({x0}, {y0}) of {learned.size[0]}x"
          f"{learned.size[1]} from {len(learned.used)} images: alpha up to {t.alpha.max():.2f}, colour "
          f"{tuple(round(float(c), 2) for c in t.colour[0, 0])}, edges {learned.edge_strength:.0f}x the noise "
          f"-> {args.out}", file=sys.stdout)
    return 0


def run_eval(args) -> int:
    logging.getLogger(DECISION_LOGGER).disabled = True  # a table, not a decision per stage and image
    settings = load_settings()
    metric = None
    if args.lpips:
        metric = LPIPS(settings.model_dir or "", device="cpu")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise WatermarkError(f"unknown kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    table, summary, page = evaluate(args.out, args.photos, args.max_side, args.seed, kinds,
                                    collection=not args.no_collection, model_dir=settings.model_dir, lpips=metric)
    cols = ("kind", "mode", "n", "recall", "false_area", "psnr_mask", "lpips_mask", "below_input")
    print(" | ".join(cols))
    for e in table:
        print(" | ".join(str(e.get(c, "-")) for c in cols))
    print(f"collection: {json.dumps(summary)}")
    print(f"report: {page}")
    return 0
