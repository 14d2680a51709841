"""Pipeline flags shared by the commands that build a Plan."""

from __future__ import annotations

from worker.pipeline.plan import Plan, make_plan


def add_plan_arguments(p) -> None:
    """The pipeline flags of `retouch run` and `retouch submit` (one definition, so
    both build the same Plan and fingerprint)."""
    p.add_argument("--ops", default="remove-text",
                   help="comma-separated: remove-text,deblock,denoise,upscale (default remove-text)")
    p.add_argument("--scale", type=float, default=4.0, help="upscale factor, 1-8 (default 4)")
    p.add_argument("--mask-type", choices=["soft", "binary"], default="soft", help="soft (feathered) or binary mask")
    p.add_argument("--mask-sigma", type=float, default=4.0, help="feathering sigma in px (default 4)")
    p.add_argument("--mask-threshold", type=float, default=0.3, help="detector probability threshold (default 0.3)")
    p.add_argument("--mask-dilate", type=int, default=1, help="px added around strokes (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same output)")
    p.add_argument("--inpaint", default="auto",
                   help="auto or a variant: telea, ns, patchmatch, or a diffusion/LaMa model added to the store "
                        "(see `retouch models list`)")
    p.add_argument("--upscale", default="auto", help="auto or a variant (see `retouch models list`)")
    p.add_argument("--prepass", default="auto",
                   help="restoration before upscaling: auto (chosen by the measured JPEG quality, noise and grain "
                        "when --upscale is auto), none, ffdnet, waifu2x-noise0..3")
    p.add_argument("--sigma", type=float, default=None,
                   help="FFDNet's noise level in 8-bit units (default: measured per image)")
    p.add_argument("--no-hallucination", action="store_true",
                   help="forensic mode: never use a learned upscaler (Lanczos unless --upscale bicubic)")
    g = p.add_argument_group("learned inpainting (diffusion models; LaMa ignores them)")
    g.add_argument("--prompt", default="", help="what the fill should show (diffusion)")
    g.add_argument("--negative-prompt", default="", help="what the fill should not show (diffusion)")
    g.add_argument("--strength", type=float, default=1.0,
                   help="denoising strength in (0, 1], the request payload's 'scale' (default 1: ignore what is "
                        "under the mask)")
    g.add_argument("--steps", type=int, default=30, help="denoising steps (default 30)")
    g.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    p.add_argument("--watermark", action="append", default=[], metavar="FILE|learned|auto",
                   help="look for a watermark or logo (repeatable): FILE, an RGBA PNG of the mark or a picture of "
                        "it on a flat background, found at any position, scale (0.5-2x) and rotation (+-45 deg); "
                        "'learned', learn the mark shared by the batch first (retouch run); 'auto', look for "
                        "repeated (tiled) marks unaided")
    p.add_argument("--format", help="output format: jpeg, png, tiff, webp, bmp (default: the input's)")
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality (default 95)")


def plan_from_args(args, model_dir: str | None = None, device: str = "auto") -> Plan:
    """The Plan the flags describe; raises PlanError (one line) on bad values
    or a variant no registry knows."""
    return make_plan(model_dir, ops=[o.strip() for o in args.ops.split(",") if o.strip()], scale=args.scale,
                     mask_type=args.mask_type, mask_sigma=args.mask_sigma, mask_threshold=args.mask_threshold,
                     mask_dilate=args.mask_dilate, seed=args.seed, inpaint=args.inpaint, upscale=args.upscale,
                     prepass=args.prepass, sigma=args.sigma,
                     no_hallucination=args.no_hallucination, format=args.format, quality=args.quality,
                     device=device, prompt=args.prompt, negative_prompt=args.negative_prompt,
                     strength=args.strength, steps=args.steps, guidance=args.guidance,
                     watermarks=[w for w in args.watermark if w != "auto"], watermark_auto="auto" in args.watermark)
