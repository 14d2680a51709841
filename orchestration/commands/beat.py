"""``retouch beat``: Celery beat with its schedule in Redis (celery-redbeat)."""

from __future__ import annotations

from orchestration.settings import load_settings
from tasks.app import make_app


def register(sub) -> None:
    p = sub.add_parser("beat", help="run the scheduler that fires `retouch schedule` entries (one per cluster)",
                       description="Run Celery beat with the redbeat scheduler: the schedules of `retouch "
                                   "schedule` live in Redis, and redbeat's Redis lock lets one beat send at a "
                                   "time; a second one started beside it waits and takes over if the first dies.")
    p.add_argument("--loglevel", default="INFO", help="Celery log level (default INFO)")
    p.set_defaults(func=run)


def run(args) -> int:
    app = make_app(load_settings())
    app.Beat(scheduler="redbeat.RedBeatScheduler", loglevel=args.loglevel, quiet=True).run()
    return 0
