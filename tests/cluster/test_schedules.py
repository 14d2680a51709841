"""Scheduled reprocessing on real servers: a schedule with a 3-second period
fires through real `retouch beat` processes (celery-redbeat) and a real
`retouch worker`, reprocesses the outputs a replaced model made stale (one new
version each), and a second beat started beside the first never doubles a
turn (redbeat's Redis lock); stopping the beat that holds the lock hands the
schedule to the other. A turn whose previous run is still going is skipped and
says so. The worker's /metrics shows each schedule's last run and the stale
outputs by cause."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest
import redis
from celery import Celery

from clusterlib import ROOT, retouch, wait_job
from orchestration.cluster import free_port
from orchestration.jobs import JobStore
from tasks.schedules import LAST, runs
from test_revisions import _models, _outputs, _upload, _versions

pytestmark = pytest.mark.cluster

PERIOD = 3.0


def _beat(env, log):
    return subprocess.Popen([sys.executable, "-m", "orchestration.cli", "beat", "--loglevel", "INFO"], env=env,
                            cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(("retouch_schedule", "retouch_stale"))}


def _wait(what, check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what} not seen within {timeout:.0f}s")


def test_schedule_fires_once_per_turn_with_two_beats(cluster_env, bucket, s3, start_workers, archive_photos,
                                                     tmp_path):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    env = {**cluster_env, "RETOUCH_MODEL_DIR": str(tmp_path / "store"), "RETOUCH_BEAT_LOCK_TIMEOUT": "6"}
    v1, v2 = _models(tmp_path)
    retouch("models", "add", str(v1), "--licence", "test", env=env)
    photos = archive_photos(3, seed=31, size=64)
    _upload(s3, bucket, "in", photos)
    metrics_port = free_port()
    workers = start_workers(env, "--cpu", "--metrics-port", str(metrics_port))
    workers.wait_ready(["cpu"], env["RETOUCH_REDIS_URL"])
    job = retouch("submit", f"s3://{bucket}/in", "--out", f"s3://{bucket}/out", "--ops", "upscale", "--upscale",
                  "tiny-up", "--scale", "2", env=env).stdout.strip()
    assert "3 done, 0 failed" in wait_job(env, job, timeout=180)
    outputs = _outputs(s3, bucket, "out")
    retouch("models", "add", str(v2), "--licence", "test", "--replace", env=env)

    bad = retouch("schedule", "add", "x", "--cron", "61 * * * *", "--", "reprocess", f"s3://{bucket}/in", "--out",
                  f"s3://{bucket}/out", env=env, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("retouch schedule: --cron '61 * * * *'")
    assert "Traceback" not in bad.stderr
    added = retouch("schedule", "add", "often", "--every", str(PERIOD), "--", "reprocess", f"s3://{bucket}/in",
                    "--out", f"s3://{bucket}/out", "--only-stale", env=env).stdout
    assert "schedule often: every 3s" in added
    r = redis.Redis.from_url(env["RETOUCH_REDIS_URL"])
    logs = [tmp_path / "beat-a.log", tmp_path / "beat-b.log"]
    beats = [_beat(env, logs[0])]
    try:
        time.sleep(1.0)
        beats.append(_beat(env, logs[1]))   # a second beat beside the first
        # the schedule reprocesses the stale outputs: one new version each
        _wait("two versions of every output", lambda: all(len(_versions(s3, bucket, k)) == 2 for k in outputs), 120)
        started = time.time()
        time.sleep(6 * PERIOD)
        window = [run for run in runs(r, "often") if run["time"] >= started]
        # one turn per period, never two: with doubled sends, turns would come in pairs
        assert 3 <= len(window) <= 6 + 1, window   # 6 periods: 6 turns (a doubled beat: about 12)
        times = sorted(run["time"] for run in runs(r, "often"))
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert min(gaps) > PERIOD * 0.6, gaps
        holder = [i for i, log in enumerate(logs) if "Acquired lock" in log.read_text()]
        assert len(holder) == 1, [log.read_text()[-1500:] for log in logs]
        # the job the schedule submitted is a normal job; exactly those images, each reprocessed once
        submitted = [j for run in runs(r, "often") for j in run["jobs"]]
        assert len(submitted) == 1, runs(r, "often")
        lines_total = JobStore(r).counts(submitted[0])
        assert lines_total.get("ok") == 3, lines_total
        assert all(len(_versions(s3, bucket, k)) == 2 for k in outputs)
        # stopping the beat holding the lock hands the schedule to the other
        held = beats[holder[0]]
        held.terminate()
        held.wait(timeout=30)
        other = logs[1 - holder[0]]
        _wait("the standby beat taking the lock", lambda: "Acquired lock" in other.read_text(), 30)
        handed = time.time()
        _wait("turns from the standby beat", lambda: len([x for x in runs(r, "often") if x["time"] > handed]) >= 2,
              30)
    finally:
        for beat in beats:
            if beat.poll() is None:
                beat.terminate()
                beat.wait(timeout=30)

    # a rollback makes that output stale again; the next turn redoes it alone, and the metrics count it
    key = outputs[0]
    rows = json.loads(retouch("history", f"s3://{bucket}/{key}", "--json", env=env).stdout)
    retouch("rollback", f"s3://{bucket}/{key}", "--to", rows[-1]["version"], env=env)
    Celery(broker=env["RETOUCH_REDIS_URL"]).send_task("retouch.scheduled", args=["often"], queue="cpu")
    turn = _wait("a turn that redoes the rolled-back output",
                 lambda: next((x for x in runs(r, "often") if x.get("selected")), None) if
                 runs(r, "often")[0].get("selected") else None, 60)
    assert turn["selected"] == 1 and turn["stale"] == 1 and len(turn["jobs"]) == 1
    metrics = _metrics(metrics_port)
    assert metrics['retouch_stale_outputs{cause="model:tiny-up",schedule="often"}'] == 1
    assert "1 done, 0 failed" in wait_job(env, turn["jobs"][0], timeout=120)
    assert [len(_versions(s3, bucket, k)) for k in outputs] == [4, 2, 2]   # v1, v2, rollback, redone

    listing = retouch("schedule", "list", env=env).stdout
    assert "often: every 3s: retouch reprocess" in listing and "last run:" in listing and " ok" in listing
    metrics = _metrics(metrics_port)
    assert time.time() - metrics['retouch_schedule_last_run_timestamp_seconds{schedule="often"}'] < 60
    assert metrics['retouch_schedule_period_seconds{schedule="often"}'] == PERIOD
    assert metrics['retouch_schedule_last_run_result{result="ok",schedule="often"}'] == 1
    assert r.exists("redbeat:often")
    retouch("schedule", "remove", "often", env=env)
    assert not r.exists("redbeat:often")   # beat sends it no more
    assert "no schedules" in retouch("schedule", "list", env=env).stdout


def test_a_turn_whose_previous_run_is_going_skips(cluster_env, bucket, s3, start_workers, tmp_path):
    """The previous run's job is still going (never finishes here: its job has
    no images and is not sealed): the worker's turn skips and names it."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    env = cluster_env
    retouch("schedule", "add", "held", "--cron", "0 3 * * *", "--", "reprocess", f"s3://{bucket}/in", "--out",
            f"s3://{bucket}/out", "--only-stale", env=env)
    r = redis.Redis.from_url(env["RETOUCH_REDIS_URL"])
    store = JobStore(r)
    store.create("previousjob1", {"created": time.time(), "input": f"s3://{bucket}/in",
                                  "output": f"s3://{bucket}/out", "sealed": False, "batches": 0})
    r.hset(LAST, "held", json.dumps({"schedule": "held", "time": time.time() - 100, "result": "ok",
                                      "jobs": ["previousjob1"]}))
    workers = start_workers(env, "--cpu")
    workers.wait_ready(["cpu"], env["RETOUCH_REDIS_URL"])
    Celery(broker=env["RETOUCH_REDIS_URL"]).send_task("retouch.scheduled", args=["held"], queue="cpu")
    run = _wait("the turn", lambda: (runs(r, "held") or [None])[0], 60)
    assert run["result"] == "skipped" and "previous run still going (job previousjob1)" in run["message"]
    assert "skipped: previous run still going" in retouch("schedule", "list", env=env).stdout
    # once that job is finished, the next turn runs (nothing is stale here: 0 selected)
    store.set_meta("previousjob1", finished_at=time.time(), sealed=True)
    Celery(broker=env["RETOUCH_REDIS_URL"]).send_task("retouch.scheduled", args=["held"], queue="cpu")
    run = _wait("the next turn", lambda: len(runs(r, "held")) >= 2 and runs(r, "held")[0], 60)
    assert run["result"] == "ok" and run["selected"] == 0 and run["jobs"] == [], run
