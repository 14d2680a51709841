"""``retouch watch JOB``: a live progress bar until the job finishes."""

from __future__ import annotations

import sys
import time

import redis
from tqdm import tqdm

from orchestration.jobs import JobStore, status
from orchestration.settings import load_settings


def register(sub) -> None:
    p = sub.add_parser("watch", help="follow a job with a live progress bar",
                       description="Follow a cluster job with a progress bar until its manifest is written.")
    p.add_argument("job", help="job id printed by `retouch submit`")
    p.add_argument("--timeout", type=float, help="give up after this many seconds (exit code 3)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between polls (default 0.5)")
    p.set_defaults(func=run)


def follow(store, job: str, timeout: float | None, interval: float = 0.5) -> int:
    """Progress bar over finished images; 0 when the job finished without
    failures, 1 with failures, 3 timeout; raises UnknownJob."""
    st = status(store, job)
    deadline = time.monotonic() + timeout if timeout else None
    with tqdm(total=st.total or None, unit="img", desc=f"job {job}", file=sys.stderr, dynamic_ncols=True) as bar:
        while True:
            st = status(store, job)
            bar.total = st.total
            bar.n = st.completed
            bar.set_postfix_str(f"running {st.running}, failed {st.failed}, skipped {st.skipped}", refresh=False)
            bar.refresh()
            if st.finished:
                break
            if deadline is not None and time.monotonic() > deadline:
                print(f"retouch watch: job {job} not finished after {timeout:g}s", file=sys.stderr)
                return 3
            time.sleep(interval)
    print(st.line())
    return 1 if st.failed else 0


def run(args) -> int:
    store = JobStore(redis.Redis.from_url(load_settings().redis_url))
    return follow(store, args.job, args.timeout, args.interval)
