"""``retouch submit``: restore every image under an S3 prefix on the cluster."""

from __future__ import annotations

import sys
import uuid

import redis

from orchestration.commands._plan import add_plan_arguments, plan_from_args
from orchestration.commands.watch import follow
from orchestration.jobs import JobStore, gpu_queues
from orchestration.settings import SettingsError, load_settings
from orchestration.storage import Storage
from tasks import learning
from tasks.app import make_app
from tasks.canvas import submit
from worker.pipeline.plan import LEARNED

DESCRIPTION = """List an s3:// prefix page by page and enqueue its images in batches for the
cluster workers; print the job id. Outputs mirror the input layout under --out (a
separate prefix: originals are never overwritten), each with a JSON record next to it;
the job ends with a JSON Lines manifest under <out>/_retouch/jobs/<job>/. Images whose
output exists with the same pipeline fingerprint and input are skipped."""


def register(sub) -> None:
    p = sub.add_parser("submit", help="restore an s3:// prefix on the cluster; prints a job id",
                       description=DESCRIPTION)
    p.add_argument("source", metavar="s3://BUCKET/PREFIX", help="input prefix")
    p.add_argument("--out", required=True, metavar="s3://BUCKET/PREFIX", help="output prefix (separate from input)")
    add_plan_arguments(p)
    p.add_argument("--force", action="store_true", help="redo (and overwrite) outputs that already exist")
    p.add_argument("--batch-size", type=int, help="images per chord batch (default from settings: 100)")
    p.add_argument("--gpu-queues", type=int,
                   help="spread heavy stages over gpu.0..gpu.N-1 (default: the queues workers consume now)")
    p.add_argument("--max-pixels", type=int, help="refuse larger images (default from settings: 100 MP)")
    p.add_argument("--wait", action="store_true", help="wait for the job to finish, with a progress bar")
    p.add_argument("--learn-timeout", type=float, default=learning.TIMEOUT, metavar="SECONDS",
                   help="with --watermark learned: how long to wait for the workers to learn the mark from a "
                        f"sample of the prefix before enqueueing the images (default {learning.TIMEOUT:g})")
    p.set_defaults(func=run)


def run(args) -> int:
    settings = load_settings(max_pixels=args.max_pixels, batch_size=args.batch_size)
    plan = plan_from_args(args, settings.model_dir)
    if settings.batch_size < 1:
        raise SettingsError(f"batch size must be at least 1 but is {settings.batch_size}")
    app = make_app(settings)
    client = redis.Redis.from_url(settings.redis_url)
    queues = ([f"gpu.{i}" for i in range(args.gpu_queues)] if args.gpu_queues is not None
              else gpu_queues(client, settings.gpu_queues))
    store = JobStore(client)
    storage = Storage.from_settings(settings)
    job = None
    if LEARNED in plan.watermarks:   # the learning step first (tasks.learning), then the images
        job = uuid.uuid4().hex[:12]
        plan = learning.learn_for_job(app, storage, store, args.source, args.out, plan, job,
                                      max_pixels=settings.max_pixels, timeout=args.learn_timeout,
                                      say=lambda line: print(f"retouch submit: {line}", file=sys.stderr, flush=True))
    submitted = submit(app, storage, store, args.source, args.out, plan,
                       batch_size=settings.batch_size, queues=queues, force=args.force,
                       max_pixels=settings.max_pixels, job=job)
    print(submitted.job, flush=True)
    print(f"retouch submit: {submitted.images} images in {submitted.batches} batches on "
          f"{', '.join(submitted.queues)}", file=sys.stderr)
    if args.wait:
        return follow(store, submitted.job, timeout=None)
    return 0
