"""``retouch status JOB``: counts and throughput of a cluster job."""

from __future__ import annotations

import json
from dataclasses import asdict

import redis

from orchestration.commands._stale import report
from orchestration.jobs import JobStore, status
from orchestration.settings import load_settings


def register(sub) -> None:
    p = sub.add_parser("status", help="show a job's queued/running/done/failed/skipped counts and throughput",
                       description="Show a cluster job's counts (queued, running, done, failed, skipped), "
                                   "throughput and, once finished, its manifest.")
    p.add_argument("job", help="job id printed by `retouch submit`, or s3://OUT with --stale")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--stale", action="store_true",
                   help="with s3://OUT: count and list the outputs that are stale, grouped by cause "
                        "(model=NAME, code=STAGE, input, plan)")
    p.add_argument("--because", action="append", default=[], metavar="CAUSE",
                   help="with --stale: only outputs stale for this cause, e.g. model=NAME (repeatable)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.job.startswith("s3://") or args.stale:
        return report(args)
    store = JobStore(redis.Redis.from_url(load_settings().redis_url))
    st = status(store, args.job)
    print(json.dumps(asdict(st), indent=2) if args.json else st.line())
    return 0
