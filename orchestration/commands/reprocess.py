"""``retouch reprocess``: a normal job for the outputs that are stale."""

from __future__ import annotations

import sys

import redis

from orchestration.commands.watch import follow
from orchestration.jobs import JobStore, gpu_queues
from orchestration.settings import load_settings
from orchestration.storage import Storage
from tasks.app import make_app
from tasks.reprocess import reprocess

DESCRIPTION = """Redo outputs under --out whose inputs are under s3://IN, each with the plan it
was made with and the models now in the store. On a versioned output bucket each
redone output becomes a new version (`retouch history`, `retouch rollback`); an
unversioned bucket is refused unless --overwrite. The manifest lists each image's
previous and new fingerprint."""


def register(sub) -> None:
    p = sub.add_parser("reprocess", help="redo stale outputs (new S3 versions); prints the job id(s)",
                       description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p) -> None:
    """The flags of `retouch reprocess` (also parsed by `retouch schedule add ... -- reprocess ...`)."""
    p.add_argument("source", metavar="s3://IN", help="input prefix the outputs were made from")
    p.add_argument("--out", required=True, metavar="s3://OUT", help="output prefix")
    p.add_argument("--only-stale", action="store_true", help="only outputs that are stale (see status --stale)")
    p.add_argument("--because", action="append", default=[], metavar="CAUSE",
                   help="only outputs stale for this cause, e.g. model=NAME (repeatable; implies --only-stale)")
    p.add_argument("--limit", type=int, help="at most N images")
    p.add_argument("--dry-run", action="store_true", help="list what would be redone; submit nothing")
    p.add_argument("--overwrite", action="store_true",
                   help="allow an output bucket without versioning (the previous revision is lost)")
    p.add_argument("--wait", action="store_true", help="wait for the job(s) to finish")


def run(args) -> int:
    settings = load_settings()
    storage = Storage.from_settings(settings)
    app = store = queues = None
    if not args.dry_run:
        app = make_app(settings)
        client = redis.Redis.from_url(settings.redis_url)
        store, queues = JobStore(client), gpu_queues(client, settings.gpu_queues)
    done = reprocess(app, storage, store, args.source, args.out, settings.model_dir, only_stale=args.only_stale,
                     because=args.because, limit=args.limit, dry_run=args.dry_run, overwrite=args.overwrite,
                     queues=queues, batch_size=settings.batch_size, max_pixels=settings.max_pixels)
    print(f"retouch reprocess: {done.scanned} outputs, {done.stale} stale, {len(done.selected)} selected"
          + (" (dry run)" if args.dry_run else f", {len(done.jobs)} job(s)"), file=sys.stderr)
    if args.dry_run:
        for o in done.selected:
            print(f"{o.input}  {','.join(o.causes) or 'up to date'}  {o.fingerprint or '-'}")
        return 0
    for job in done.jobs:
        print(job, flush=True)
    status = 0
    if args.wait:
        for job in done.jobs:
            status = max(status, follow(store, job, timeout=None))
    return status
