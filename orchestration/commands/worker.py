"""``retouch worker``: serve the cluster's queues from this machine."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time

import redis

from monitoring.metrics import mark_process_dead, prepare_multiprocess_dir, start_metrics_server
from orchestration.cluster import Supervisor, worker_specs
from orchestration.jobs import QUEUES_KEY, JobStore, announce_queues
from orchestration.settings import SettingsError, load_settings
from tasks.app import config, make_app
from tasks import schedules
from tasks.broker import RestartWatch, persists, redis_client
from tasks.requeue import held_keys, requeue_held
from worker import threads

log = logging.getLogger(__name__)

DESCRIPTION = """Start Celery workers for the retouch cluster and keep them running.
--gpus 0,1 starts one worker process per GPU (CUDA_VISIBLE_DEVICES set, solo pool,
consuming queue gpu.<i>, models loaded once per process) plus one for the cpu queue
(light stages, job summaries). --cpu (no GPU) starts one worker serving everything.
A worker that dies is restarted; its unfinished task is redelivered. Broker, storage
and limits come from RETOUCH_* settings (see docs/cluster.md)."""


def register(sub) -> None:
    p = sub.add_parser("worker", help="run cluster workers (one per GPU, plus the cpu queue)",
                       description=DESCRIPTION)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--gpus", help="comma-separated GPU indices, e.g. 0,1")
    mode.add_argument("--cpu", action="store_true", help="no GPU: one worker serves every stage")
    p.add_argument("--cpu-concurrency", type=int,
                   help="processes for the cpu queue (default from settings: 1; 0 = none with --gpus)")
    p.add_argument("--simulate-gpus", action="store_true", default=None,
                   help="run the per-GPU workers on the CPU (tests; still consuming gpu.<i>)")
    p.add_argument("--threads", type=int,
                   help="threads per worker process (default from settings: usable cores / processes)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics of all workers on this port")
    p.add_argument("--metrics-addr", default="127.0.0.1", help="metrics listen address (default 127.0.0.1)")
    p.add_argument("--loglevel", default="WARNING", help="worker log level (default WARNING)")
    p.set_defaults(func=run)


def parse_gpus(text: str) -> list[int]:
    """Raises SettingsError naming the value."""
    try:
        gpus = [int(g) for g in text.split(",") if g.strip()]
    except ValueError:
        raise SettingsError(f"--gpus must be comma-separated integers, e.g. 0,1, but is {text!r}") from None
    if not gpus or len(set(gpus)) != len(gpus) or min(gpus) < 0:
        raise SettingsError(f"--gpus must list distinct non-negative GPU indices but is {text!r}")
    return gpus


def run(args) -> int:
    settings = load_settings(simulate_gpus=args.simulate_gpus, cpu_concurrency=args.cpu_concurrency,
                             threads=args.threads)
    gpus = parse_gpus(args.gpus) if args.gpus else None
    specs = worker_specs(gpus, settings.cpu_concurrency, settings.simulate_gpus)
    cores = threads.usable_cores()
    per_process = settings.threads or threads.budget(len(specs), cores)
    for spec in specs:  # BLAS reads its variables at load: they go in the child's environment
        spec.threads, spec.env = per_process, {**spec.env, **threads.env_for(per_process)}
    on_exit = None
    if args.metrics_port:
        on_exit = _start_metrics(args, settings, specs)
    bookkeeping = redis_client(settings.redis_url, settings.redis_outage_seconds, socket_timeout=5)
    app = make_app(settings)

    def on_death(hostname: str) -> None:
        # the messages a dead child held go back to their queues now, not after
        # the visibility timeout; then it is doing nothing (its restarted
        # successor reuses the name, and the key would outlive it)
        requeue_held(app, hostname, patience=settings.redis_outage_seconds)
        bookkeeping.delete(*held_keys(hostname))

    supervisor = Supervisor(specs, loglevel=args.loglevel, on_exit=on_exit, on_death=on_death)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    supervisor.start_all()
    print("retouch worker: " + ", ".join(f"{s.name} (pid {supervisor.pids()[s.name]}) on {','.join(s.queues)}"
                                         f" [{s.device}]" for s in specs)
          + f"; {per_process} threads per process ({cores} usable cores, {len(specs)} processes"
          + (", set by --threads/RETOUCH_THREADS)" if settings.threads else ")"), flush=True)
    announcer = _Announcer(settings.redis_url, supervisor.tag, sorted({q for s in specs for q in s.queues}))
    _warn_if_volatile(announcer.redis)
    try:
        while not stop:
            supervisor.poll()
            announcer.maybe_announce()
            time.sleep(0.5)
    finally:
        announcer.withdraw()
        # SIGTERM (Kubernetes, docker stop): a warm shutdown, each child finishing
        # its task, which cannot outlast the hard time limit; a second signal stops now
        supervisor.stop(timeout=settings.task_time_limit + 30, cold=lambda: len(stop) > 1)
    return 0


def _warn_if_volatile(client) -> None:
    try:
        volatile = persists(client) is False
    except redis.RedisError:  # not reachable yet: the workers wait for it
        return
    if volatile:
        log.warning("Redis does not persist (no append-only file, no save points): a restart erases every job; "
                    "run it with appendonly yes (docs/cluster.md)")


class _Announcer:
    """Tells `retouch submit` which queues this machine serves (a Redis key with a TTL)."""

    def __init__(self, redis_url: str, tag: str, queues: list[str], every: float = 10.0):
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.name = f"{socket.gethostname()}.{tag}"
        self.queues, self.every, self.last = queues, every, 0.0
        self.restarts = RestartWatch(self.redis)   # a Redis restart is reported, never silent

    def maybe_announce(self) -> None:
        if time.monotonic() - self.last < self.every:
            return
        try:
            announce_queues(self.redis, self.name, self.queues)
            self.last = time.monotonic()
            said = self.restarts.check()
            if said:
                (log.error if "without persistence" in said else log.warning)("%s", said)
        except Exception as exc:  # the broker may be down for a while; the workers retry on their own
            log.warning("could not announce queues to Redis: %s", exc)
            self.last = time.monotonic()

    def withdraw(self) -> None:
        try:
            self.redis.delete(QUEUES_KEY + self.name)
        except Exception as exc:  # the key expires by itself
            log.info("could not withdraw the queue announcement: %s", exc)


def _start_metrics(args, settings, specs):
    """Multiprocess Prometheus metrics: the parent prepares the shared
    directory before starting the children and serves the merged view."""
    # A fixed directory per port, wiped of the previous run's files here, so
    # restarts neither leak temp folders nor resurrect dead processes' counts.
    path = settings.metrics_dir or os.path.join(settings.state_dir, f"metrics-{args.metrics_port}")
    prepare_multiprocess_dir(path)  # sets PROMETHEUS_MULTIPROC_DIR, inherited by the children
    queues = sorted({q for s in specs for q in s.queues})
    store = JobStore(redis.Redis.from_url(settings.redis_url, socket_timeout=5))
    start_metrics_server(args.metrics_port, args.metrics_addr, redis_url=settings.redis_url, queues=queues,
                         transport_options=config(settings)["broker_transport_options"], jobs=store.active,
                         schedules=schedules.metrics_source(store.redis))
    return mark_process_dead
