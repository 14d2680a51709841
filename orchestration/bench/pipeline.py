"""Embedded pipeline: per-stage latency per megapixel and images per minute.

Runs the bundled samples (or given images) through ``orchestration.local.restore``
``--repeats`` times and prints medians, with a description of the machine."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def add_arguments(parser) -> None:
    parser.add_argument("--images", nargs="*", type=Path, help="images to use (default: examples/)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per image (default 5)")
    parser.add_argument("--ops", default="remove-text", help="ops to benchmark (default remove-text)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")


def machine() -> dict:
    import os

    import onnxruntime
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "providers": onnxruntime.get_available_providers()}


def run(args) -> int:
    from orchestration.local import restore
    from orchestration.plan import Plan
    from worker.io import read_image
    from worker.models.cache import ModelCache

    paths = args.images or sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".jpg", ".png"))
    plan = Plan(ops=args.ops.split(","), upscale="lanczos" if "upscale" in args.ops else "auto")
    cache = ModelCache(device="cpu")
    images = [read_image(p) for p in paths]
    restore(images[0], plan, cache)  # warm-up: model load is not per-image latency
    per_stage: dict[str, list[float]] = {}
    per_image: list[float] = []
    for _ in range(args.repeats):
        for img in images:
            start = time.perf_counter()
            record = restore(img, plan, cache).record
            per_image.append(time.perf_counter() - start)
            mp = img.size[0] * img.size[1] / 1e6
            for stage, seconds in record["timings"].items():
                per_stage.setdefault(stage, []).append(seconds / mp)
    figures = {
        "machine": machine(),
        "images": [str(p) for p in paths], "repeats": args.repeats, "ops": plan.ops,
        "seconds_per_megapixel": {k: round(statistics.median(v), 4) for k, v in per_stage.items()},
        "median_seconds_per_image": round(statistics.median(per_image), 4),
        "images_per_minute": round(60.0 / statistics.median(per_image), 1),
    }
    m = figures["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, onnxruntime {m['onnxruntime']}")
    print(f"{len(paths)} images x {args.repeats} runs, ops {','.join(plan.ops)} (medians)")
    for stage, value in figures["seconds_per_megapixel"].items():
        print(f"  {stage:<12} {value:8.3f} s/MP")
    print(f"  images/minute {figures['images_per_minute']:8.1f}  ({figures['median_seconds_per_image']:.3f} s/image)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0
