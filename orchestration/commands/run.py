"""``retouch run``: restore files and folders in-process, no servers needed."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from monitoring.logs import log_decisions_to
from monitoring.metrics import Metrics, start_metrics_server
from orchestration.commands._plan import add_plan_arguments, plan_from_args
from orchestration import parallel
from orchestration.local import run_batch, search
from orchestration.settings import SettingsError, load_settings
from orchestration.commands.watermark import learn_from_files
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import LEARNED, Plan
from worker.watermark import WatermarkError
from worker.pipeline.request import load_requests

DESCRIPTION = """Restore images in-process: detect text and watermarks, inpaint them, post-process the
seams, upscale. Writes, per image, the output, a JSON sidecar (<output>.json) and, with
--save-masks, the confidence map and the soft mask as 16-bit PNGs (<input name>.confidence.png,
<input name>.mask.png). Inputs are never modified. A file or folder that cannot be read fails
with one line naming it and the cause; the others are still processed. Exit code 1 if any failed."""


def register(sub) -> None:
    p = sub.add_parser("run", help="restore images in-process (embedded, no servers)", description=DESCRIPTION)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("--out", required=True, type=Path, help="output folder (mirrors the input folder layout)")
    add_plan_arguments(p)
    p.add_argument("--masks", type=Path, help="folder of user masks (<image name>.png, else <image stem>.png; "
                                              "soft 0-255 or binary); "
                                              "a mask found there replaces detection")
    p.add_argument("--request", type=Path, metavar="PATH",
                   help="per-image inpainting requests: a JSON file (one object, a list, or JSON Lines) or a "
                        "folder of *.json, each {\"image_id\", \"mask\": {\"type\", \"sigma\"}, \"prompt\", "
                        "\"scale\", \"seed\", ...}; image_id matches an input's name or stem")
    p.add_argument("--save-masks", action="store_true", help="also write the confidence map and the mask")
    p.add_argument("--force", action="store_true", help="redo images whose output is already up to date")
    p.add_argument("--max-pixels", type=int, help="refuse larger images (default from settings: 100 MP)")
    p.add_argument("--device", help="auto, cpu or cuda:N (default from settings: auto)")
    p.add_argument("--metrics-textfile", type=Path,
                   help="write Prometheus metrics of this run to this file (node-exporter textfile format)")
    p.add_argument("--metrics-port", type=int,
                   help="serve Prometheus metrics of this run on this port while it runs")
    p.add_argument("--metrics-addr", default="127.0.0.1", help="metrics listen address (default 127.0.0.1)")
    p.add_argument("--metrics-hold", type=float, default=0.0, metavar="SECONDS",
                   help="with --metrics-port, keep serving this long after the batch so the final "
                        "figures get scraped (default 0)")
    p.add_argument("--jobs", default="auto", metavar="N|auto",
                   help="images restored at once, each in its own process with cores/N threads (default auto: "
                        "the usable cores on the CPU, 1 on a GPU; outputs are the same either way)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    settings = load_settings(max_pixels=args.max_pixels, device=args.device)
    plan = plan_from_args(args, settings.model_dir, settings.device)
    requests = load_requests(args.request, plan, settings.model_dir) if args.request else None
    found = search(args.paths, exclude=args.out)
    for outcome in found.failed:   # unreadable folders, dangling links, link loops, missing paths
        print(f"retouch run: {outcome.error}", file=sys.stderr)

    log_decisions_to(decisions := args.out / "retouch-decisions.jsonl")
    files = found.files
    plan = _learned_watermark(plan, [f for f, _ in files], args.out, settings.max_pixels)
    if requests:
        names = {f.name for f, _ in files} | {f.stem for f, _ in files}
        for image_id in sorted(set(requests) - names):
            print(f"retouch run: request for image_id {image_id!r} matches no input", file=sys.stderr)
    jobs = _jobs(args, [f for f, _ in files], settings.device)
    metrics, metrics_server = _metrics(args)
    cache = ModelCache(device=settings.device, model_dir=settings.model_dir,
                       on_load=(metrics.model_loaded if metrics is not None else None))
    bar = None
    if not args.no_progress and files and sys.stderr.isatty():   # a bar in a log file would split its lines
        bar = tqdm(total=len(files), unit="img", desc="retouch", file=sys.stderr, dynamic_ncols=True)
    start = time.perf_counter()

    def done(outcome):
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{outcome.status}: {outcome.source.name}", refresh=False)

    execute = None
    if jobs > 1:
        execute = parallel.executor(jobs, model_dir=settings.model_dir, device=settings.device,
                                    log_level=args.log_level, decisions=decisions)
    with logging_redirect_tqdm() if bar is not None else contextlib.nullcontext():
        report = run_batch(files, args.out, plan, cache, max_pixels=settings.max_pixels, force=args.force,
                           save_masks=args.save_masks, mask_dir=args.masks, metrics=metrics, on_done=done,
                           requests=requests, execute=execute)
    if bar is not None:
        bar.close()
    if metrics is not None and args.metrics_textfile:
        metrics.write_textfile(str(args.metrics_textfile))
    elapsed = time.perf_counter() - start
    ok, skipped, failed = report.count("ok"), report.count("skipped"), report.count("failed") + len(found.failed)
    print(f"retouch: {ok} restored, {skipped} skipped (up to date), {failed} failed "
          f"in {elapsed:.1f}s -> {args.out}")
    for outcome in found.failed + report.failed:
        print(f"  FAILED {outcome.error}")
    if metrics_server is not None:
        sys.stdout.flush()
        time.sleep(max(args.metrics_hold, 0.0))
        metrics_server.shutdown()
    return 1 if failed else 0


def _learned_watermark(plan: Plan, files: list[Path], out: Path, max_pixels: int) -> Plan:
    """``--watermark learned``: learn the batch's shared mark into
    <out>/retouch-watermark.png (+ .json) and look for that template instead.
    A batch too small or too varied gets one line and goes on without it."""
    if LEARNED not in plan.watermarks:
        return plan
    target = out / "retouch-watermark.png"
    try:
        learned = learn_from_files(files, target, max_pixels)
    except WatermarkError as exc:
        print(f"retouch run: --watermark learned: {exc}; going on without it", file=sys.stderr)
        return plan.model_copy(update={"watermarks": [w for w in plan.watermarks if w != LEARNED]})
    print(f"retouch run: learned the shared watermark from {len(learned.used)} images -> {target}", file=sys.stderr)
    return plan.model_copy(update={"watermarks": [str(target) if w == LEARNED else w for w in plan.watermarks]})


def _jobs(args, files: list[Path], device: str) -> int:
    """``--jobs``: a count, or ``auto`` (``orchestration.parallel.auto_jobs``;
    one with metrics, which one process observes)."""
    metrics = bool(args.metrics_textfile) or args.metrics_port is not None
    if args.jobs == "auto":
        return 1 if metrics else parallel.auto_jobs(files, device)
    try:
        jobs = int(args.jobs)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise SettingsError(f"--jobs must be a positive number or auto but is {args.jobs!r}")
    if jobs > 1 and metrics:
        raise SettingsError("--jobs above 1 and --metrics-*: a run's metrics are observed in one process; "
                            "use --jobs 1")
    return jobs


def _metrics(args):
    """(Metrics on a fresh registry, its HTTP server or None), or (None, None) without metrics flags."""
    if not args.metrics_textfile and args.metrics_port is None:
        return None, None
    metrics, server = Metrics(registry=CollectorRegistry()), None
    if args.metrics_port is not None:
        server = start_metrics_server(args.metrics_port, args.metrics_addr, registry=metrics.registry)
        print(f"retouch: metrics on http://{args.metrics_addr}:{server.server_port}/metrics",
              file=sys.stderr, flush=True)
    return metrics, server
