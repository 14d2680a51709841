"""``retouch schedule``: named schedules that reprocess (run by `retouch beat`)."""

from __future__ import annotations

import argparse
import json
import shlex
import time

import redis

from orchestration.commands import reprocess as reprocess_command
from orchestration.settings import load_settings
from orchestration.storage import parse_url
from tasks.app import make_app
from tasks.schedules import ScheduleError, add, check_name, definitions, last_runs, remove

DESCRIPTION = """Named schedules, kept in Redis and run by Celery beat (`retouch beat`; `retouch cluster
up` starts one): each turn runs a `retouch reprocess` on a worker. A turn whose previous
run's jobs are still going is skipped, and says so in `schedule list`. Example:
retouch schedule add nightly --cron "0 3 * * *" -- reprocess s3://in --out s3://out --only-stale"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ScheduleError(f"{self.prog}: {message}")


def register(sub) -> None:
    p = sub.add_parser("schedule", help="add, list and remove scheduled reprocessing", description=DESCRIPTION)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    a = actions.add_parser("add", help="add (or replace) a schedule: NAME --cron \"...\" -- reprocess ...",
                           usage="retouch schedule add NAME (--cron \"MIN HOUR DAY MONTH WEEKDAY\" | --every SECONDS) "
                                 "-- reprocess s3://IN --out s3://OUT [reprocess flags]",
                           description="--cron: crontab fields (UTC); --every: a fixed interval in seconds. After "
                                       "--, the reprocess each turn runs (its flags as in `retouch reprocess`).")
    # argparse cannot take options between a positional and a `--` tail: NAME, the
    # period and the command are read by _add_parser()
    a.add_argument("spec", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    ls = actions.add_parser("list", help="list schedules with their last run (the default)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    rm = actions.add_parser("remove", help="remove a schedule")
    rm.add_argument("name", metavar="NAME")
    p.set_defaults(func=run, action="list", json=False)


def _add_parser() -> _Parser:
    p = _Parser(prog="retouch schedule add", add_help=False)
    p.add_argument("name")
    p.add_argument("--cron")
    p.add_argument("--every", type=float)
    return p


def _reprocess_args(argv: list[str]) -> dict:
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv or argv[0] != "reprocess":
        raise ScheduleError("give the command after --: -- reprocess s3://IN --out s3://OUT [--only-stale ...]")
    parser = _Parser(prog="reprocess", add_help=False)
    reprocess_command.add_arguments(parser)
    ns = parser.parse_args(argv[1:])
    if ns.dry_run or ns.wait:
        raise ScheduleError("a scheduled reprocess takes neither --dry-run nor --wait")
    parse_url(ns.source)
    parse_url(ns.out)
    return {"source": ns.source, "out": ns.out, "only_stale": ns.only_stale, "because": ns.because,
            "limit": ns.limit, "overwrite": ns.overwrite}


def run(args) -> int:
    settings = load_settings()
    client = redis.Redis.from_url(settings.redis_url)
    if args.action == "add":
        if "--" not in args.spec:
            raise ScheduleError("usage: retouch schedule add NAME --cron \"...\" -- reprocess s3://IN --out s3://OUT")
        cut = args.spec.index("--")
        spec = _add_parser().parse_args(args.spec[:cut])
        check_name(spec.name)
        command = args.spec[cut + 1:]
        d = add(make_app(settings), client, spec.name, _reprocess_args(command), shlex.join(command),
                cron=spec.cron, every=spec.every)
        print(f"schedule {d['name']}: {d['schedule']}: retouch {d['command']}")
        return 0
    if args.action == "remove":
        remove(make_app(settings), client, args.name)
        print(f"removed schedule {args.name}")
        return 0
    defs, last = definitions(client), last_runs(client)
    if args.json:
        print(json.dumps([{**d, "last_run": last.get(n)} for n, d in defs.items()], indent=2))
        return 0
    if not defs:
        print("no schedules (add one: retouch schedule add NAME --cron \"0 3 * * *\" -- reprocess ...)")
    for name, d in defs.items():
        run_ = last.get(name)
        when = (time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(run_["time"])) + f" {run_['result']}"
                + (f" (jobs {', '.join(run_['jobs'])})" if run_.get("jobs") else "")
                + (f": {run_['message']}" if run_.get("message") else "")) if run_ else "never run"
        print(f"{name}: {d['schedule']}: retouch {d['command']}\n  last run: {when}")
    return 0
