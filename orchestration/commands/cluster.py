"""``retouch cluster up|down``: a local cluster on loopback for trying the
distributed pipeline (Redis, SeaweedFS S3, one worker)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from orchestration.cluster import ClusterError, cluster_down, cluster_up
from orchestration.settings import load_settings

DESCRIPTION = """up: start redis-server, an S3-compatible server (SeaweedFS `weed mini`) and one
`retouch worker --cpu` with one `retouch beat` (scheduled reprocessing), all on 127.0.0.1,
and print the endpoints. S3 credentials come
from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (generated when unset); the settings that
reach the cluster are written to <state dir>/cluster.env (mode 0600; `source` it).
down: stop them. Pid files and logs live in the state dir."""


def register(sub) -> None:
    p = sub.add_parser("cluster", help="start/stop a local cluster (redis, S3, one worker)", description=DESCRIPTION)
    p.add_argument("action", choices=["up", "down"])
    p.add_argument("--state-dir", type=Path, help="pid files, logs, data (default from settings: "
                                                  "~/.cache/retouch/cluster)")
    p.add_argument("--redis-port", type=int, default=6379, help="Redis port (default 6379; 0 = any free port)")
    p.add_argument("--s3-port", type=int, default=8333, help="S3 port (default 8333; 0 = any free port)")
    p.add_argument("--no-worker", action="store_true", help="start only the servers (no worker, no beat)")
    p.set_defaults(func=run)


def run(args) -> int:
    state_dir = args.state_dir or Path(load_settings().state_dir)
    if args.action == "down":
        stopped = cluster_down(state_dir)
        print(f"retouch cluster: stopped {', '.join(stopped) if stopped else 'nothing (not running)'}")
        return 0
    try:
        endpoints = cluster_up(state_dir, args.redis_port, args.s3_port, os.environ.get("AWS_ACCESS_KEY_ID"),
                               os.environ.get("AWS_SECRET_ACCESS_KEY"), worker=not args.no_worker)
    except ClusterError as exc:  # exit 1: the servers, not the command line, are the problem
        print(f"retouch cluster: {exc}", file=sys.stderr)
        return 1
    print(f"redis: {endpoints['redis']}")
    print(f"s3:    {endpoints['s3']}")
    if "worker_pid" in endpoints:
        print(f"worker: pid {endpoints['worker_pid']} (log {state_dir / 'worker.log'})")
    if "beat_pid" in endpoints:
        print(f"beat: pid {endpoints['beat_pid']} (log {state_dir / 'beat.log'}; runs `retouch schedule` entries)")
    print(f"settings: source {endpoints['env_file']}")
    return 0
