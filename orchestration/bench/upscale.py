"""Learned upscaling: seconds per output megapixel and peak memory per backend and model.

Each variant (PyTorch on --device, and ncnn's own run of the same weights on
the CPU, side by side) runs in its own subprocess, so its peak resident memory
(``ru_maxrss``) is its own: model, tiles and the output canvas. Input: a real
photo (scikit-image's astronaut) resized to --size. The model load is timed
apart; the figures are medians over --repeats runs. Nothing is asserted:
speed depends on the machine and its load.

    retouch bench upscale [--models a,b] [--size 256] [--scale 4] [--repeats 3]
    retouch bench upscale --memory      # one x4 run of a 2000x2000 image per model
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

from orchestration.bench.pipeline import machine
from orchestration.settings import load_settings
from worker import upscale
from worker.models.convert_ncnn import SHIPPED
from worker.pipeline.select import choose_backend
from worker.upscale import speeds

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("realesr-animevideov3,realesr-animevideov3-x4-ncnn,"
                  "realesrgan-x4plus,realesrgan-x4plus-ncnn,lanczos")


def add_arguments(parser) -> None:
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated variants (default {DEFAULT_MODELS})")
    parser.add_argument("--size", type=int, default=256, help="input side in pixels (default 256)")
    parser.add_argument("--scale", type=float, default=4.0, help="upscale factor (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per model (default 3)")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda:N for the PyTorch variants (default cpu)")
    parser.add_argument("--tile", type=int, default=0, help="tile size (default 0: from free memory)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: all usable cores)")
    parser.add_argument("--half", action="store_true", help="fp16 on CUDA")
    parser.add_argument("--model-dir", help="model store (default from settings)")
    parser.add_argument("--memory", action="store_true",
                        help="memory check: --size 2000 --repeats 1 (peak RSS of an x4 run of a 2000x2000 image)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per model (default 3600)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    # Internal: the parent re-invokes itself with --child VARIANT to measure one model.
    parser.add_argument("--child", help=argparse.SUPPRESS)


def _photo(size: int):
    import cv2
    import numpy as np
    import skimage.data

    rgb = skimage.data.astronaut().astype(np.float32) / 255.0
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if size < 512 else cv2.INTER_LANCZOS4)


def measure(variant: str, size: int, scale: float, repeats: int, device: str, tile: int, threads: int,
            half: bool, model_dir: str) -> dict:
    """Load ``variant`` and time ``repeats`` upscales in this process; peak RSS included."""
    import os
    import resource

    import torch

    threads = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    image = _photo(size)
    options = upscale.UpscaleOptions(device=device, tile=tile, half=half, model_dir=model_dir,
                                     extra={"threads": threads})
    start = time.perf_counter()
    model = upscale.create(variant, options)
    load = time.perf_counter() - start
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = model.upscale(image, scale)
        seconds.append(time.perf_counter() - start)
    out_mp = out.shape[0] * out.shape[1] / 1e6
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    gpu_peak = torch.cuda.max_memory_allocated() if str(getattr(model, "device", "cpu")).startswith("cuda") else None
    return {"variant": variant, "backend": type(model).__name__, "device": str(getattr(model, "device", "cpu")),
            "tile": getattr(model, "tile", None), "threads": threads, "load_seconds": round(load, 3),
            "seconds": [round(s, 3) for s in seconds], "median_seconds": round(statistics.median(seconds), 3),
            "seconds_per_output_mp": round(statistics.median(seconds) / out_mp, 4),
            "input": f"{size}x{size}", "output": f"{out.shape[1]}x{out.shape[0]}",
            "peak_rss_mb": round(peak_kib / 1024, 1),
            "gpu_peak_mb": round(gpu_peak / 2**20, 1) if gpu_peak is not None else None}


def auto_backends(results: list[dict], device: str, measured: dict | None = None) -> list[dict]:
    """For each model measured on both backends: the one ``auto`` runs on
    ``device`` (:func:`worker.pipeline.select.choose_backend`) and its time as
    a multiple of the fastest backend's."""
    seconds = {r["variant"]: r["median_seconds"] for r in results}
    out = []
    for model in SHIPPED:
        backends = [model.name] + [n for n in model.ncnn if n.endswith(("x4plus-ncnn", "anime-ncnn", "x4-ncnn"))]
        ran = [b for b in backends if b in seconds]
        decision = choose_backend(model.name, "cpu" if device == "auto" else device, measured)
        if len(ran) < 2 or decision is None or decision.variant not in seconds:
            continue
        fastest = min(ran, key=lambda b: seconds[b])
        out.append({"model": model.name, "auto": decision.variant, "fastest": fastest,
                    "ratio": round(seconds[decision.variant] / max(seconds[fastest], 1e-9), 3),
                    "reason": decision.reason})
    return out


def run(args) -> int:
    model_dir = load_settings(model_dir=args.model_dir).model_dir
    if args.memory:
        args.size, args.repeats = 2000, 1
    if args.child:
        print(json.dumps(measure(args.child, args.size, args.scale, args.repeats, args.device, args.tile,
                                 args.threads, args.half, model_dir)))
        return 0
    m = machine(args.device)
    print(f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), {m['memory_gb']} GB, "
          f"load {m['load_average_1m']}; torch {m['torch']}; cuda {m['cuda_available']} {m['gpu'] or ''}")
    print(f"input {args.size}x{args.size} (astronaut photo), x{args.scale:g}, {args.repeats} runs each (medians), "
          "each model in its own process")
    print(f"  {'variant':<30} {'backend':<16} {'device':<7} {'tile':>5} {'load s':>7} {'s/run':>8} "
          f"{'s/out MP':>9} {'peak RSS MB':>12}")
    results, failed = [], 0
    for variant in [v.strip() for v in args.models.split(",") if v.strip()]:
        cmd = [sys.executable, "-m", "orchestration.cli", "bench", "upscale", "--child", variant,
               "--size", str(args.size), "--scale", str(args.scale), "--repeats", str(args.repeats),
               "--device", args.device, "--tile", str(args.tile), "--threads", str(args.threads),
               "--model-dir", model_dir] + (["--half"] if args.half else [])
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"  {variant:<30} timed out after {args.timeout:.0f}s")
            failed += 1
            continue
        lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
        if done.returncode != 0 or not lines:
            print(f"  {variant:<30} failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:160]}")
            failed += 1
            continue
        r = json.loads(lines[-1])
        results.append(r)
        print(f"  {variant:<30} {r['backend']:<16} {r['device']:<7} {str(r['tile']):>5} {r['load_seconds']:>7.2f} "
              f"{r['median_seconds']:>8.2f} {r['seconds_per_output_mp']:>9.3f} {r['peak_rss_mb']:>12.1f}"
              + (f"  GPU peak {r['gpu_peak_mb']} MB" if r.get("gpu_peak_mb") else ""), flush=True)
    # auto's choice as it stood before this run (earlier measurements, else the defaults), against this run
    auto = auto_backends(results, args.device, speeds.load(model_dir))
    if not args.device.startswith("cuda") and results:
        saved = speeds.save(model_dir, {r["variant"]: r["seconds_per_output_mp"] for r in results
                                        if r["device"] == "cpu"}, m["cpu"])
        print(f"  speeds saved to {saved} (auto runs the faster backend measured here from now on)")
    for line in auto:
        print(f"  auto {line['model']:<26} -> {line['auto']:<30} {line['ratio']:.2f}x the fastest "
              f"({line['fastest']}); {line['reason']}")
    if args.json:
        args.json.write_text(json.dumps({"machine": m, "size": args.size, "scale": args.scale,
                                         "repeats": args.repeats, "results": results, "auto": auto}, indent=2))
    return 1 if failed else 0
