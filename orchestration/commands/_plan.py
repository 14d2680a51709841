"""Pipeline flags shared by the commands that build a Plan."""

from __future__ import annotations

from worker.pipeline.plan import Plan, make_plan


def add_plan_arguments(p) -> None:
    """The pipeline flags of `retouch run` and `retouch submit` (one definition, so
    both build the same Plan and fingerprint)."""
    p.add_argument("--ops", default="remove-text", help="comma-separated: remove-text,upscale (default remove-text)")
    p.add_argument("--scale", type=float, default=4.0, help="upscale factor, 1-8 (default 4)")
    p.add_argument("--mask-type", choices=["soft", "binary"], default="soft", help="soft (feathered) or binary mask")
    p.add_argument("--mask-sigma", type=float, default=4.0, help="feathering sigma in px (default 4)")
    p.add_argument("--mask-threshold", type=float, default=0.3, help="detector probability threshold (default 0.3)")
    p.add_argument("--mask-dilate", type=int, default=2, help="px added around strokes (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same output)")
    p.add_argument("--inpaint", default="auto", help="auto or a variant: telea, ns, patchmatch")
    p.add_argument("--upscale", default="auto", help="auto or a variant (see `retouch models list`)")
    p.add_argument("--no-hallucination", action="store_true",
                   help="forensic mode: never use a learned upscaler (Lanczos unless --upscale bicubic)")
    p.add_argument("--format", help="output format: jpeg, png, tiff, webp, bmp (default: the input's)")
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality (default 95)")


def plan_from_args(args, model_dir: str | None = None, device: str = "auto") -> Plan:
    """The Plan the flags describe; raises PlanError (one line) on bad values
    or a variant no registry knows."""
    return make_plan(model_dir, ops=[o.strip() for o in args.ops.split(",") if o.strip()], scale=args.scale,
                     mask_type=args.mask_type, mask_sigma=args.mask_sigma, mask_threshold=args.mask_threshold,
                     mask_dilate=args.mask_dilate, seed=args.seed, inpaint=args.inpaint, upscale=args.upscale,
                     no_hallucination=args.no_hallucination, format=args.format, quality=args.quality,
                     device=device)
