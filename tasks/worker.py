"""One worker process: ``python -m tasks.worker --queues gpu.0 --device cuda:0``.

Started by ``retouch worker`` (its supervisor), one per GPU with
``CUDA_VISIBLE_DEVICES`` set, or one for the cpu queue. GPU workers use the
solo pool: CUDA and fork do not mix, and one process keeps one model cache,
so models load once; time limits are then enforced by ``tasks.limits``.
Settings are read here, once, and the Celery app is built from them."""

from __future__ import annotations

import argparse
import sys

from monitoring.logs import configure_logging
from orchestration.settings import load_settings
from tasks import runtime
from tasks.app import make_app
from worker import threads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.worker")
    parser.add_argument("--queues", required=True, help="comma-separated queues to consume")
    parser.add_argument("--device", default="auto", help="device models run on (auto, cpu, cuda:N)")
    parser.add_argument("--pool", default="solo", choices=["solo", "threads", "prefork"])
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--hostname", required=True)
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--threads", type=int, default=0,
                        help="thread budget of this process (worker.threads; 0: library defaults)")
    args = parser.parse_args(argv)

    configure_logging(args.loglevel, decisions=True)
    if args.threads:
        print(f"retouch worker {args.hostname}: {threads.describe(threads.apply(args.threads))}", flush=True)
    settings = load_settings()
    runtime.configure(settings, runtime.WorkerOptions(device=args.device, enforce_limits=args.pool != "prefork",
                                                      hostname=args.hostname))
    app = make_app(settings)
    # each task message this process takes is noted under its name (tasks.broker),
    # so that its supervisor can put it back if the process dies (tasks.requeue)
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "holder": args.hostname}
    app.worker_main(["worker", "-Q", args.queues, "-P", args.pool, "-c", str(args.concurrency),
                     "-n", args.hostname, "-l", args.loglevel, "--without-gossip", "--without-mingle"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
