"""``retouch status JOB``: counts and throughput of a cluster job."""

from __future__ import annotations

import json
from dataclasses import asdict

import redis

from orchestration.jobs import JobStore, status
from orchestration.settings import load_settings


def register(sub) -> None:
    p = sub.add_parser("status", help="show a job's queued/running/done/failed/skipped counts and throughput",
                       description="Show a cluster job's counts (queued, running, done, failed, skipped), "
                                   "throughput and, once finished, its manifest.")
    p.add_argument("job", help="job id printed by `retouch submit`")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    store = JobStore(redis.Redis.from_url(load_settings().redis_url))
    st = status(store, args.job)
    print(json.dumps(asdict(st), indent=2) if args.json else st.line())
    return 0
