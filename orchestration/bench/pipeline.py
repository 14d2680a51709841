"""Embedded pipeline: per-stage latency per megapixel and images per minute.

Runs the bundled samples (or given images) through ``orchestration.local.restore``
``--repeats`` times and prints medians, with a description of the machine.
Model loading happens once in a warm-up run and is reported apart: it is not
per-image latency. The detect stage is set against the bare model sessions on
the arrays it feeds them, timed right after it on the same image; the ratio
is the median over those pairs. Figures are printed (and optionally written as JSON), never
asserted: speed depends on the machine and its load."""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

from orchestration.local import restore
from worker.io import read_image
from worker.mask import MaskParams, build_mask
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import Plan
from worker.pipeline.steps import mask_params

log = logging.getLogger(__name__)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def add_arguments(parser) -> None:
    parser.add_argument("--images", nargs="*", type=Path, help="images to use (default: examples/)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per image (default 5)")
    parser.add_argument("--ops", default="remove-text", help="ops to benchmark (default remove-text)")
    parser.add_argument("--inpaint", default="auto", help="inpaint variant (default auto)")
    parser.add_argument("--upscale", default="lanczos", help="upscale variant when --ops has upscale (default lanczos)")
    parser.add_argument("--scale", type=float, default=2.0, help="upscale factor (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda[:N] (default cpu)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str = "cpu") -> dict:
    """CPU model, logical cores (and those this process may use), memory, load,
    library versions, the device and what torch/onnxruntime can use."""
    import numpy
    import onnxruntime
    import psutil
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "usable_cores": usable,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "os": platform.platform(terse=True), "python": platform.python_version(),
        "numpy": numpy.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "onnxruntime": onnxruntime.__version__, "providers": onnxruntime.get_available_providers(),
        "device": device,
    }


class _Fed:
    """The line reader and the stroke segmenter as the mask calls them, keeping
    the arrays their bare sessions run on (``lines``, ``strokes``)."""

    def __init__(self, reader, segmenter):
        self.reader, self.segmenter, self.lines, self.strokes = reader, segmenter, [], []

    def verdicts(self, rgb, regions, boxes=None):
        self.lines.extend(self.reader.model_inputs(rgb, regions, boxes))
        return self.reader.verdicts(rgb, regions, boxes)

    def read_lines(self, rgb, regions, boxes=None):
        self.lines.extend(self.reader.model_inputs(rgb, regions, boxes))
        return self.reader.read_lines(rgb, regions, boxes)

    def probability(self, crop, height):
        self.strokes.append(self.segmenter.model_input(crop, height)[0])
        return self.segmenter.probability(crop, height)

    def model_input(self, crop, height):
        return self.segmenter.model_input(crop, height)

    def run(self, x):
        self.strokes.append(x)
        return self.segmenter.run(x)


def _feeds(cache: ModelCache, images, params: MaskParams) -> list[tuple]:
    """Per image, exactly the arrays the detect stage feeds the bare model
    sessions: the detector's (enlarged, tiled or not), and those of the models
    the mask calls: the line reader's (each found line's crop, read back before
    it is masked, and each recovered line's) and the stroke segmenter's (each
    line kept, and the whole image at the heights and turns recovery looks at).
    Prepared once, outside the timings."""
    detector = cache.detector()
    reader, segmenter = detector.reader, detector.segmenter
    feeds = []
    for img in images:
        fed = _Fed(reader, segmenter)
        build_mask(img.rgb, detector.confidence(img.rgb), params, fed if reader else None,
                   fed if segmenter else None, detector.recover)
        feeds.append((detector.model_inputs(img.rgb), fed.lines, fed.strokes))
    return feeds


def _raw_seconds(cache: ModelCache, feed: tuple) -> tuple[float, float]:
    """Seconds of the bare sessions on one image's ``feed``: the detector's
    alone, and the detector's plus the reader's and the segmenter's. The
    floors the stage is measured against."""
    detector = cache.detector()
    inputs, lines, strokes = feed
    start = time.perf_counter()
    for x in inputs:
        detector.run_session(x)
    det = time.perf_counter() - start
    start = time.perf_counter()
    for x in lines:
        detector.reader.run_session(x)
    for x in strokes:
        detector.segmenter.run(x)
    return det, det + time.perf_counter() - start


def run(args) -> int:
    paths = args.images or sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".jpg", ".png"))
    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    plan = Plan(ops=ops, inpaint=args.inpaint, upscale=args.upscale, scale=args.scale, device=args.device)
    loads: dict[str, float] = {}
    cache = ModelCache(device=args.device, on_load=lambda kind, name, s: loads.__setitem__(f"{kind}:{name}", round(s, 3)))
    images = [read_image(p) for p in paths]
    for img in images:  # warm-up: model loads and first-call allocations are not per-image latency
        restore(img, plan, cache)
    # the bare sessions are timed right after the stage on the same image, and the
    # ratio is the median of those pairs: a machine whose speed drifts (other
    # work on the host) moves both sides of each pair alike
    feeds = _feeds(cache, images, mask_params(plan)) if "remove-text" in plan.ops else None
    per_stage: dict[str, list[float]] = {}
    per_image: list[float] = []
    per_mp: list[float] = []
    raw_mp: list[float] = []
    raw_both_mp: list[float] = []
    ratios: list[float] = []
    ratios_both: list[float] = []
    variants: dict[str, int] = {}
    for _ in range(args.repeats):
        for index, img in enumerate(images):
            start = time.perf_counter()
            record = restore(img, plan, cache).record
            seconds = time.perf_counter() - start
            mp = img.size[0] * img.size[1] / 1e6
            per_image.append(seconds)
            per_mp.append(seconds / mp)
            for stage, stage_seconds in record["timings"].items():
                per_stage.setdefault(stage, []).append(stage_seconds / mp)
            for stage, variant in record["variants"].items():
                key = f"{stage}:{variant}"
                variants[key] = variants.get(key, 0) + 1
            if feeds is not None and "detect" in record["timings"]:
                det, both = _raw_seconds(cache, feeds[index])
                raw_mp.append(det / mp)
                raw_both_mp.append(both / mp)
                ratios.append(record["timings"]["detect"] / det)
                ratios_both.append(record["timings"]["detect"] / both)
    median_image = statistics.median(per_image)
    figures = {
        "machine": machine(args.device),
        "images": [f"{p.name} ({img.size[0]}x{img.size[1]})" for p, img in zip(paths, images)],
        "repeats": args.repeats, "ops": plan.ops, "variants_used": variants, "model_load_seconds": loads,
        "seconds_per_megapixel": {k: round(statistics.median(v), 4) for k, v in per_stage.items()},
        "total_seconds_per_megapixel": round(statistics.median(per_mp), 4),
        "median_seconds_per_image": round(median_image, 4),
        "images_per_minute": round(60.0 / median_image, 1),
    }
    if ratios:
        figures["raw_onnx_seconds_per_megapixel"] = round(statistics.median(raw_mp), 4)
        figures["detect_over_raw_onnx"] = round(statistics.median(ratios), 3)
        figures["raw_onnx_with_reader_seconds_per_megapixel"] = round(statistics.median(raw_both_mp), 4)
        figures["detect_over_raw_onnx_with_reader"] = round(statistics.median(ratios_both), 3)
        figures["detect_over_raw_onnx_with_reader_runs"] = [round(r, 3) for r in ratios_both]
    m = figures["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['memory_gb']} GB, "
          f"load {m['load_average_1m']}; device {m['device']}; torch {m['torch']} ({m['torch_threads']} threads), "
          f"onnxruntime {m['onnxruntime']} {m['providers']}")
    print(f"{len(paths)} images x {args.repeats} runs, ops {','.join(plan.ops)}, variants {variants} (medians)")
    if loads:
        print(f"  model load (once): {', '.join(f'{k} {v:.2f}s' for k, v in loads.items())}")
    for stage, value in figures["seconds_per_megapixel"].items():
        print(f"  {stage:<12} {value:8.3f} s per input megapixel")
    print(f"  {'total':<12} {figures['total_seconds_per_megapixel']:8.3f} s per input megapixel")
    if "detect_over_raw_onnx" in figures:
        print(f"  raw ONNX session {figures['raw_onnx_seconds_per_megapixel']:.3f} s per input megapixel (the model "
              f"alone, on the arrays the detect stage feeds it): detect / raw = {figures['detect_over_raw_onnx']:.2f}x")
        print(f"  raw model sessions with the line reader and stroke net "
              f"{figures['raw_onnx_with_reader_seconds_per_megapixel']:.3f} s per input megapixel (detector + "
              f"recogniser and stroke segmenter on each line's crop, and recovery's whole-image passes): "
              f"detect / raw = "
              f"{figures['detect_over_raw_onnx_with_reader']:.2f}x (median of each run's ratio, "
              f"{min(ratios_both):.2f}-{max(ratios_both):.2f}x)")
    stages_mp = figures["seconds_per_megapixel"]
    if "postprocess" in stages_mp and "inpaint" in stages_mp:
        print(f"  postprocess / inpaint = {stages_mp['postprocess'] / max(stages_mp['inpaint'], 1e-9):.2f}x")
    print(f"  images/minute {figures['images_per_minute']:8.1f}  ({figures['median_seconds_per_image']:.3f} s/image)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0
