"""Scheduled reprocessing: named schedules run by Celery beat (celery-redbeat).

A schedule is a redbeat entry in Redis (``redbeat:<name>``) that sends
``retouch.scheduled(name)`` to the cpu queue on its crontab (or every N
seconds), plus its definition in ``retouch:schedules`` (the reprocess it runs,
its period). redbeat's Redis lock lets one beat process send at a time: a
second beat started beside it waits for the lock instead of firing again.

A run (:func:`scheduled`, on a worker) skips its turn, and records why, when
the previous run's jobs are still going or another run of the same schedule is
still scanning; otherwise it calls :func:`tasks.reprocess.reprocess` and
records the jobs it submitted. Every run is recorded (``retouch:schedule:runs:
<name>``, newest first, the last 100) with its time, result and stale counts by
cause: ``retouch schedule list`` and the metrics (:func:`metrics_source`) read them.
"""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import timedelta

from celery import Celery, shared_task
from celery.schedules import crontab, schedule as every_schedule

from orchestration.jobs import JobStore, UnknownJob, gpu_queues, status
from tasks.app import CPU_QUEUE
from tasks.reprocess import reprocess
from tasks.runtime import runtime
from worker.errors import RetouchError

log = logging.getLogger(__name__)

TASK = "retouch.scheduled"
DEFINITIONS = "retouch:schedules"          # hash: name -> JSON definition
LAST = "retouch:schedules:last"            # hash: name -> JSON of its last run
STALE = "retouch:schedules:stale"          # hash: name -> JSON {cause: outputs} at its last run
RESULTS = ("ok", "skipped", "failed")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")


class ScheduleError(RetouchError):
    """A bad schedule name, period or command; the message names it."""


def runs_key(name: str) -> str:
    return f"retouch:schedule:runs:{name}"


def _running_key(name: str) -> str:
    return f"retouch:schedule:running:{name}"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ScheduleError(f"schedule name {name!r}: use letters, digits, '_', '.', '-' (at most 63)")
    return name


def parse_period(cron: str | None, every: float | None):
    """(celery schedule, period in seconds, text) from ``--cron "m h dom mon dow"`` or ``--every SECONDS``."""
    if (cron is None) == (every is None):
        raise ScheduleError("give exactly one of --cron \"MIN HOUR DAY MONTH WEEKDAY\" or --every SECONDS")
    if every is not None:
        if every < 1:
            raise ScheduleError(f"--every must be at least 1 second but is {every}")
        return every_schedule(timedelta(seconds=every)), float(every), f"every {every:g}s"
    fields = cron.split()
    if len(fields) != 5:
        raise ScheduleError(f"--cron {cron!r}: expected 5 fields, MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK")
    try:
        sched = crontab(minute=fields[0], hour=fields[1], day_of_month=fields[2], month_of_year=fields[3],
                        day_of_week=fields[4])
        now = sched.now()
        first = sched.remaining_estimate(now)
        second = sched.remaining_estimate(now + first + timedelta(seconds=1))
    except (ValueError, TypeError) as exc:
        raise ScheduleError(f"--cron {cron!r}: {exc}") from None
    period = max(60.0, (second - first).total_seconds() + 1)
    return sched, period, f"cron {cron}"


def add(app: Celery, client, name: str, reprocess_args: dict, command: str, cron: str | None = None,
        every: float | None = None) -> dict:
    """Create or replace schedule ``name`` (its redbeat entry and definition)."""
    from redbeat import RedBeatSchedulerEntry

    check_name(name)
    sched, period, text = parse_period(cron, every)
    definition = {"name": name, "schedule": text, "period": period, "command": command,
                  "reprocess": reprocess_args, "created": time.time()}
    client.hset(DEFINITIONS, name, json.dumps(definition))
    RedBeatSchedulerEntry(name, TASK, sched, args=[name], options={"queue": CPU_QUEUE}, app=app).save()
    return definition


def remove(app: Celery, client, name: str) -> None:
    from redbeat import RedBeatSchedulerEntry
    from redbeat.schedulers import ensure_conf

    ensure_conf(app)
    if not client.hexists(DEFINITIONS, name):
        raise ScheduleError(f"no schedule {name!r} (see `retouch schedule list`)")
    try:
        RedBeatSchedulerEntry.from_key(RedBeatSchedulerEntry.generate_key(app, name), app=app).delete()
    except KeyError:
        pass
    pipe = client.pipeline()
    for key in (DEFINITIONS, LAST, STALE):
        pipe.hdel(key, name)
    pipe.execute()


def definitions(client) -> dict[str, dict]:
    return {k.decode(): json.loads(v) for k, v in sorted(client.hgetall(DEFINITIONS).items())}


def last_runs(client) -> dict[str, dict]:
    return {k.decode(): json.loads(v) for k, v in client.hgetall(LAST).items()}


def runs(client, name: str, n: int = 100) -> list[dict]:
    """The last ``n`` runs of ``name``, newest first."""
    return [json.loads(v) for v in client.lrange(runs_key(name), 0, n - 1)]


def _record(client, name: str, run: dict, stale: dict[str, int] | None = None) -> dict:
    pipe = client.pipeline()
    pipe.lpush(runs_key(name), json.dumps(run))
    pipe.ltrim(runs_key(name), 0, 99)
    pipe.hset(LAST, name, json.dumps(run))
    if stale is not None:
        pipe.hset(STALE, name, json.dumps(stale))
    pipe.execute()
    (log.warning if run["result"] != "ok" else log.info)("schedule %s: %s%s", name, run["result"],
                                                         f": {run['message']}" if run.get("message") else "")
    return run


def _still_going(store: JobStore, jobs: list[str]) -> list[str]:
    going = []
    for job in jobs:
        try:
            if not status(store, job).finished:
                going.append(job)
        except UnknownJob:
            pass
    return going


@shared_task(name=TASK, bind=True, ignore_result=True)
def scheduled(self, name: str) -> dict:
    """One turn of schedule ``name``: skip it if the previous run is still
    going, else reprocess as defined; recorded either way."""
    rt = runtime()
    client = rt.redis
    run = {"schedule": name, "time": time.time(), "task": self.request.id, "jobs": []}
    raw = client.hget(DEFINITIONS, name)
    if raw is None:
        return _record(client, name, {**run, "result": "failed", "message": f"no schedule {name!r} defined"})
    definition = json.loads(raw)
    store = JobStore(client)
    previous = json.loads(client.hget(LAST, name) or "{}")
    going = _still_going(store, previous.get("jobs", []) + previous.get("running_jobs", []))
    if going:
        return _record(client, name, {**run, "result": "skipped", "running_jobs": going,
                                      "message": f"previous run still going (job {', '.join(going)}); "
                                                 "skipping this turn"})
    lock = _running_key(name)
    if not client.set(lock, self.request.id, nx=True, ex=max(60, int(rt.settings.task_time_limit))):
        return _record(client, name, {**run, "result": "skipped",
                                      "message": "another run of this schedule is still scanning; skipping this turn"})
    try:
        args = definition["reprocess"]
        done = reprocess(self.app, rt.storage, store, args["source"], args["out"], rt.settings.model_dir,
                         only_stale=args.get("only_stale", False), because=args.get("because", []),
                         limit=args.get("limit"), overwrite=args.get("overwrite", False),
                         queues=gpu_queues(client, rt.settings.gpu_queues), batch_size=rt.settings.batch_size,
                         max_pixels=rt.settings.max_pixels)
        return _record(client, name, {**run, "result": "ok", "jobs": done.jobs, "selected": len(done.selected),
                                      "stale": done.stale, "scanned": done.scanned}, stale=done.causes)
    except RetouchError as exc:
        return _record(client, name, {**run, "result": "failed", "message": str(exc)})
    except Exception as exc:
        log.exception("schedule %s failed", name)
        return _record(client, name, {**run, "result": "failed", "message": f"{type(exc).__name__}: {exc}"})
    finally:
        client.delete(lock)


def metrics_source(client):
    """For ``monitoring.collectors.ScheduleCollector``: per schedule its period,
    last run (time, result) and stale outputs by cause at that run."""
    def source() -> dict[str, dict]:
        defs, last = definitions(client), last_runs(client)
        stale = {k.decode(): json.loads(v) for k, v in client.hgetall(STALE).items()}
        return {name: {"period": d.get("period"), "created": d.get("created"),
                       "last_time": (last.get(name) or {}).get("time"),
                       "last_result": (last.get(name) or {}).get("result"), "stale": stale.get(name, {})}
                for name, d in defs.items()}
    return source
