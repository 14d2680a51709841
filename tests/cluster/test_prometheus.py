"""A real Prometheus scrapes a real ``retouch worker --metrics-port`` (two
simulated GPU workers and a cpu worker, multiprocess metrics) while a small
job runs on real Redis and SeaweedFS.

During the job the endpoint shows non-zero mask confidence, coverage, stage
duration and selection counts, and the job's own progress series; after it,
Prometheus' totals equal the job's manifest and records, and every dashboard
query and rule runs through Prometheus' HTTP API (tests/monitoring/promlib.py
says what "returns data" means for alerts)."""

from __future__ import annotations

import collections
import json
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clusterlib import retouch, wait_job

# promlib (the Prometheus runner and query checks) lives with the monitoring tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "monitoring"))
from promlib import (PROMETHEUS, check_everything, free_port, scrape_config, start_prometheus,  # noqa: E402
                     stop, wait_for)

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

CLUSTER_EMPTY = {
    "retouch_schedule_last_run_timestamp_seconds": "no schedule here (tests/cluster/test_schedules.py has them)",
    "retouch_schedule_created_timestamp_seconds": "no schedule here", "retouch_schedule_period_seconds": "no schedule",
    "retouch_schedule_last_run_result": "no schedule here", "retouch_stale_outputs": "no schedule here",
    "retouch:schedule_since_last_run:seconds": "no schedule here", "retouch:schedule_period:seconds": "no schedule",
    "retouch_gpu_memory_used_bytes": "CPU-only machine (GPUs simulated)",
    "retouch_gpu_memory_total_bytes": "CPU-only machine (GPUs simulated)",
    "retouch:gpu_memory_used:ratio": "CPU-only machine (GPUs simulated)",
    "retouch_job_images": "exists only while a job is active: asserted during the job below",
}


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict = collections.defaultdict(dict)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


def total(samples: dict, name: str) -> float:
    return sum(samples.get(name, {}).values())


def s3_json(s3, url: str):
    bucket, key = url[5:].split("/", 1)
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()


def test_prometheus_scrapes_workers_during_a_job(cluster_env, bucket, s3, start_workers, archive_photos, tmp_path):
    import torch

    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed (make system-deps)")
    assert not torch.cuda.is_available(), "on a GPU machine, drop the GPU entries from CLUSTER_EMPTY"
    photos = archive_photos(10, seed=7)
    for name, data in photos.items():
        s3.put_object(Bucket=bucket, Key=f"in/{name}", Body=data)
    s3.put_object(Bucket=bucket, Key="in/zz-truncated.jpg", Body=photos[sorted(photos)[0]][:300])
    n_images = len(photos) + 1

    env = {**cluster_env, "RETOUCH_SIMULATE_GPUS": "1"}
    port = free_port()
    workers = start_workers(env, "--gpus", "0,1", "--cpu-concurrency", "1", "--metrics-port", str(port))
    workers.wait_ready(["gpu.0", "gpu.1", "cpu"], env["RETOUCH_REDIS_URL"])
    prom = start_prometheus(tmp_path / "prometheus", scrape_config({"retouch-worker": f"127.0.0.1:{port}"}))
    try:
        wait_for(prom.targets_up, 30, "Prometheus to scrape the worker")
        job = retouch("submit", f"s3://{bucket}/in", "--out", f"s3://{bucket}/out", "--ops", "remove-text,upscale",
                      "--scale", "2", "--no-hallucination", "--batch-size", "4", env=env).stdout.strip()

        # during the job: non-zero counts on the workers' endpoint, and this job's progress series
        def mid_job():
            m = scrape(port)
            progress = {dict(k)["status"]: v for k, v in m.get("retouch_job_images", {}).items()
                        if dict(k)["job"] == job}
            busy = all(total(m, n) > 0 for n in ("retouch_mask_confidence_count", "retouch_mask_coverage_ratio_count",
                                                  "retouch_stage_duration_seconds_count",
                                                  "retouch_model_selections_total"))
            unfinished = progress and progress["ok"] + progress["failed"] + progress["skipped"] < n_images
            return (m, progress) if busy and unfinished else None

        mid, progress = wait_for(mid_job, 180, "non-zero counts while the job runs", interval=0.2)
        assert total(mid, "retouch_jobs_active") == 1
        assert total(mid, "retouch_images_total") < n_images

        last = wait_job(env, job, timeout=240)
        assert f"{n_images - 1} done, 1 failed" in last, last
        status = json.loads(retouch("status", job, "--json", env=env).stdout)
        manifest = [json.loads(line) for line in s3_json(s3, status["manifest"]).splitlines() if line.strip()]
        statuses = collections.Counter(line["status"] for line in manifest)

        # Prometheus has scraped the final figures (images are counted by the job's last task)
        wait_for(lambda: prom.value("sum(retouch_images_total)") == n_images, 60, "final totals in Prometheus")
        time.sleep(3)  # a few rule evaluations on the final data
        at = time.time()
        check_everything(prom, at, CLUSTER_EMPTY)

        def by(expr: str, *labels: str) -> dict:
            return {tuple(r["metric"].get(k, "") for k in labels): float(r["value"][1]) for r in prom.query(expr, at)}

        # totals equal the manifest ...
        assert by("sum by (status) (retouch_images_total)", "status") == \
            {(s,): float(statuses.get(s, 0)) for s in ("ok", "failed", "skipped")}
        records = [json.loads(s3_json(s3, line["record"])) for line in manifest if line["record"]]
        assert len(records) == statuses["ok"]
        # ... and its records: one selection per decision (reason = the decision's rule), one stage
        # observation per timing, one coverage observation per detection
        decisions = collections.Counter((d["stage"], d["variant"], d["rule"]) for r in records for d in r["decisions"])
        assert by("sum by (stage, variant, reason) (retouch_model_selections_total)", "stage", "variant", "reason") \
            == {k: float(v) for k, v in decisions.items()}
        # ... and a log search: the workers' JSON decision lines of this job, counted by the same labels
        logged = collections.Counter()
        for line in workers.log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"model_selection"' in line:
                entry = json.loads(line)
                if entry.get("event") == "model_selection" and entry.get("job") == job:
                    logged[(entry["stage"], entry["variant"], entry["rule"])] += 1
        assert logged == decisions
        stages = collections.Counter(s for r in records for s in r["timings"] if s != "total")
        assert by("sum by (stage) (retouch_stage_duration_seconds_count)", "stage") == \
            {(k,): float(v) for k, v in stages.items()}
        coverages = [r["mask"]["coverage"] for r in records if "mask" in r]
        assert prom.value("sum(retouch_mask_coverage_ratio_count)", at) == len(coverages)
        assert prom.value("sum(retouch_mask_coverage_ratio_sum)", at) == pytest.approx(sum(coverages), abs=1e-3)
        # queue depth was seen non-zero while the job was queued, and is back to zero
        assert prom.value("max_over_time(sum(retouch_queue_depth)[5m:1s])", at) > 0
        assert prom.value("sum(retouch_queue_depth)", at) == 0
        # the job's series went away with the job; the workers are up, nothing in flight
        assert prom.query(f'retouch_job_images{{job="{job}"}}', at) == []
        assert prom.value("retouch_jobs_active", at) == 0
        assert prom.value('up{job="retouch-worker"}', at) == 1
        assert prom.value("sum(retouch_tasks_in_flight)", at) == 0
        assert prom.value("retouch_worker_processes", at) == 4  # supervisor + gpu.0 + gpu.1 + cpu
        assert not prom.query('ALERTS{alertname="RetouchWorkerDown"}')

        # stop the workers: the target goes down and the worker-down alert goes pending (its `for` is 2m)
        workers.stop()
        wait_for(lambda: prom.query('ALERTS{alertname="RetouchWorkerDown", alertstate="pending"}'), 30,
                 "RetouchWorkerDown pending after the workers stopped")
        assert prom.value('up{job="retouch-worker"}') == 0
    finally:
        stop(prom.proc)
