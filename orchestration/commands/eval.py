"""``retouch eval``: score the variants on reproducible synthetic degradations.

    retouch eval [--dataset bundled|DIR|s3://bucket/prefix] [--ops remove-text,upscale]
                 [--variants telea,patchmatch,auto] [--seed N] [--out report/]
"""

from __future__ import annotations

import logging
import sys

from orchestration.evaluate.routing import format_summary as format_routing
from orchestration.evaluate.runner import INPUT
from orchestration.evaluate.suite import EvalConfig, run_suite
from orchestration.settings import load_settings

log = logging.getLogger(__name__)


def _csv_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _jpeg_levels(value: str) -> list[int]:
    return [0 if v in ("0", "none") else int(v) for v in _csv_list(value)]


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate variants on synthetic degradations (PSNR, SSIM, LPIPS, HTML report)",
                       description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="bundled",
                   help="clean photos: 'bundled' (5 of scikit-image's sample photos), 'bundled-wide' (12 of them), "
                        "a folder, or s3://bucket/prefix")
    p.add_argument("--ops", type=_csv_list, default=["remove-text"], help="remove-text,upscale (default remove-text)")
    p.add_argument("--variants", type=_csv_list, default=["telea", "patchmatch", "auto"],
                   help="inpaint and/or upscale variants, and auto (default telea,patchmatch,auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the degradations and the variants (default 0)")
    p.add_argument("--out", default="report", help="report folder (default report/)")
    p.add_argument("--kinds", type=_csv_list, help="degradations: text,watermark,logo (remove-text, the default) and the hard text kinds "
                        "text-bold,text-outline,text-shadow,text-overlap,text-alpha,text-photo-colour,text-rotated; "
                        "x2,x4 (upscale)")
    p.add_argument("--jpeg", type=_jpeg_levels, default=[0], help="JPEG levels, 0/none = uncompressed (e.g. 0,75,40)")
    p.add_argument("--max-side", type=int, default=384, help="photos are reduced to this longer side (default 384)")
    p.add_argument("--max-visuals", type=int, default=24, help="cases shown with crops in the page (default 24)")
    p.add_argument("--mask", choices=("detected", "true"), default="detected",
                   help="detected: run the detector (end to end, default); true: give the pipeline the true "
                        "overlay mask, to score inpainting apart from detection")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS (no model store needed)")
    p.add_argument("--model-dir", help="model store (default: settings)")
    p.add_argument("--device", default=None, help="cpu | cuda[:N] | auto (default: settings)")
    p.set_defaults(func=run)


def run(args) -> int:
    settings = load_settings(model_dir=args.model_dir, device=args.device)
    config = EvalConfig(dataset=args.dataset, ops=args.ops, variants=args.variants, seed=args.seed,
                        kinds=args.kinds, jpeg=args.jpeg, max_side=args.max_side, max_pixels=settings.max_pixels,
                        model_dir=settings.model_dir, device="cpu" if settings.device == "auto" else settings.device,
                        lpips=not args.no_lpips, max_visuals=args.max_visuals, mask=args.mask)
    result = run_suite(config, args.out)
    out = sys.stdout
    for op in sorted({e["op"] for e in result.summary}):
        entries = [e for e in result.summary if e["op"] == op]
        metric = next((e["ranked_by"] for e in entries if e.get("ranked_by")), None)
        out.write(f"{op} (ranked by {metric}):\n")
        for e in sorted(entries, key=lambda e: e.get("rank", 999)):
            value = e.get(metric)
            ci = e.get(f"{metric}_ci")
            label = "ref" if e["variant"] == INPUT else e.get("rank", "-")
            out.write(f"  {label!s:>3} {e['variant']:<12} {metric} {value if value is not None else '-'}"
                      f"{f' ± {ci}' if ci is not None else ''}  (n={e['n']})\n")
    if result.routing:
        out.write(format_routing(result.routing))
        fit = result.routing["fit"]
        out.write(f"  fitted on these cases: thresholds {fit['thresholds']}, models {fit['models']} -> LPIPS "
                  f"{fit['in_sample_lpips']} (leave one photo out {fit['leave_one_photo_out_lpips']}; "
                  f"auto as run {fit['auto_lpips']})\n")
    out.write(f"report: {result.page}\n")
    return 0
