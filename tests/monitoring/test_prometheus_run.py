"""A real Prometheus scrapes ``retouch run --metrics-port`` while it restores
the bundled samples (plus one corrupt file): the endpoint shows non-zero mask,
stage and selection counts mid-run; afterwards Prometheus' totals equal the
sidecars and the decision log; every dashboard query and every rule runs
through Prometheus' API (see promlib.check_everything for what "returns data"
means for alerts)."""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from promlib import ROOT, check_everything, free_port, scrape_config, stop, wait_for

pytestmark = pytest.mark.prometheus

# Series an embedded run cannot have, and why (the cluster test covers them).
EMBEDDED_EMPTY = {
    "retouch_schedule_last_run_timestamp_seconds": "no schedule here (tests/cluster/test_schedules.py has them)",
    "retouch_schedule_created_timestamp_seconds": "no schedule here", "retouch_schedule_period_seconds": "no schedule",
    "retouch_schedule_last_run_result": "no schedule here", "retouch_stale_outputs": "no schedule here",
    "retouch:schedule_since_last_run:seconds": "no schedule here", "retouch:schedule_period:seconds": "no schedule",
    "retouch_queue_depth": "no broker in an embedded run",
    "retouch:queue_depth:sum": "no broker", "retouch:queue_depth:deriv15m": "no broker",
    "retouch_tasks_in_flight": "no Celery tasks", "retouch_task_retries_total": "no Celery tasks",
    "retouch_task_redeliveries_total": "no Celery tasks",
    "retouch_job_images": "no job store in an embedded run",
    "up": "the dashboard's worker panel selects job=retouch-worker; this target is job=retouch-run",
    "retouch_worker_processes": "no worker in an embedded run",
    "retouch_gpu_memory_used_bytes": "CPU-only machine", "retouch_gpu_memory_total_bytes": "CPU-only machine",
    "retouch:gpu_memory_used:ratio": "CPU-only machine",
}


def scrape(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = collections.defaultdict(float)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name] += s.value
    return out


def test_prometheus_scrapes_an_embedded_run(tmp_path, prometheus):
    import torch

    assert not torch.cuda.is_available(), "on a GPU machine, drop the GPU entries from EMBEDDED_EMPTY"
    inputs = tmp_path / "in"
    inputs.mkdir()
    # three copies of each sample, so the run spans several 1 s scrapes even with
    # warm caches and a Prometheus slow to make its first scrape on a loaded
    # machine (rate() needs a sample before and after an increment; with two
    # copies every "ok" increment once landed before the first scrape)
    for copy in ("a", "b", "c"):
        for sample in sorted((ROOT / "examples").glob("*.*")):
            if sample.suffix in (".jpg", ".png"):
                shutil.copy(sample, inputs / f"{copy}-{sample.name}")
    # first in walk order, a large picture: it holds the first "ok" increment back
    # for seconds, so Prometheus has scraped a sample before it even under load
    # (once, a whole batch of small samples finished before the first scrape)
    from PIL import Image
    with Image.open(ROOT / "examples" / "astronaut-caption.jpg") as im:
        im.resize((im.width * 4, im.height * 4), Image.Resampling.LANCZOS).save(inputs / "0-large.png")
    # last in walk order: an increment before the first scrape is invisible to rate()/increase()
    (inputs / "zz-broken.jpg").write_bytes(b"not a jpeg")
    n_files = len(list(inputs.iterdir()))
    out = tmp_path / "out"
    port = free_port()
    prom = prometheus(scrape_config({"retouch-run": f"127.0.0.1:{port}"}))
    run = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "run", str(inputs), "--out", str(out),
                            "--ops", "remove-text,upscale", "--scale", "2", "--no-hallucination",
                            "--metrics-port", str(port), "--metrics-hold", "60", "--no-progress"],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # mid-run: the endpoint already counts confidences, coverage, stages and selections
        mid = wait_for(lambda: (lambda m: m if (m["retouch_mask_confidence_count"] > 0
                                                and m["retouch_mask_coverage_ratio_count"] > 0
                                                and m["retouch_stage_duration_seconds_count"] > 0
                                                and m["retouch_model_selections_total"] > 0) else None)(scrape(port)),
                       120, "non-zero counts on /metrics", interval=0.2)
        assert mid["retouch_images_total"] < n_files, "caught only after the batch: no mid-run view"
        # rate() needs a sample from before an increment: Prometheus has one from mid-run
        wait_for(lambda: prom.value('min_over_time(sum(retouch_images_total{status="ok"})[5m:1s])')
                 < n_files - 1, 60, "a Prometheus sample taken before the last image finished")
        # after the batch: Prometheus holds the final totals
        wait_for(lambda: prom.value("sum(retouch_images_total)") == n_files, 180,
                 "Prometheus to scrape the final totals")
        time.sleep(3)  # a few rule evaluations on the final data
        at = time.time()
        results = check_everything(prom, at, EMBEDDED_EMPTY)
        assert run.poll() is None, "the run must still serve metrics while we query"
    finally:
        stop(run)
    sidecars = [json.loads(p.read_text()) for p in out.rglob("*.json")]
    assert len(sidecars) == n_files - 1

    def by(expr: str, *labels: str) -> dict:
        return {tuple(r["metric"].get(k, "") for k in labels): float(r["value"][1]) for r in prom.query(expr, at)}

    assert by("retouch_images_total", "status") == {("ok",): n_files - 1, ("failed",): 1, ("skipped",): 0}
    # selections: Prometheus == sidecar decisions == the decision log (same rule strings)
    from_sidecars = collections.Counter((d["stage"], d["variant"], d["rule"]) for s in sidecars for d in s["decisions"])
    from_log = collections.Counter((d["stage"], d["variant"], d["rule"]) for d in map(
        json.loads, (out / "retouch-decisions.jsonl").read_text().splitlines()) if d.get("event") == "model_selection")
    from_prom = by("sum by (stage, variant, reason) (retouch_model_selections_total)", "stage", "variant", "reason")
    assert from_prom == {k: float(v) for k, v in from_sidecars.items()} == {k: float(v) for k, v in from_log.items()}
    # stages: one observation per timing in a sidecar; mask: one coverage per detection
    stages = collections.Counter(stage for s in sidecars for stage in s["timings"] if stage != "total")
    assert by("sum by (stage) (retouch_stage_duration_seconds_count)", "stage") == \
        {(k,): float(v) for k, v in stages.items()}
    detections = [s["mask"]["coverage"] for s in sidecars if "mask" in s]
    assert prom.value("retouch_mask_coverage_ratio_count", at) == len(detections)
    assert prom.value("retouch_mask_coverage_ratio_sum", at) == pytest.approx(sum(detections), abs=1e-3)
    assert prom.value("retouch_mask_confidence_count", at) > 0
    # the dashboard sees it too: throughput and selections are non-zero, 1 failure in the failure panel
    ok_rate = by('sum by (status) (rate(retouch_images_total[5m])) * 60', "status")
    assert ok_rate[("ok",)] > 0 and ok_rate[("failed",)] > 0
    assert prom.value('sum(increase(retouch_images_total{status="failed"}[5m]))', at) == pytest.approx(1, rel=0.5)
    # 1 in 14 images failed: above the alert's 5% (its thresholds are unit-tested by promtool)
    # (rate() extrapolates and may miss increments before the first scrape: not exactly 1/5)
    assert 0.05 < prom.value("retouch:image_failure_ratio:rate15m", at) <= 0.5
    # live, Prometheus holds the alert pending exactly when its traffic guard (0.01 images/s) also holds
    pending = prom.query('ALERTS{alertname="RetouchFailureRatioHigh", alertstate="pending"}', at)
    assert bool(pending) == (prom.value("retouch:images:rate15m", at) > 0.01)
    assert any(r for e, r in results.items() if "retouch_mask_confidence_bucket" in e)


def test_the_checks_fail_on_bad_promql_and_on_missing_data(tmp_path, prometheus, monkeypatch):
    """Control for check_everything: an invalid query or a panel without data is reported."""
    import json as _json

    import promlib

    prom = prometheus(scrape_config({"retouch-run": f"127.0.0.1:{free_port()}"}))  # nothing listens there
    with pytest.raises(AssertionError, match="parse error"):
        prom.query("sum by (le (retouch_images_total)")
    dash = tmp_path / "grafana-dashboard.json"
    dash.write_text(_json.dumps({"panels": [{"title": "t", "targets": [{"expr": "retouch_images_total"}]}]}))
    deploy = tmp_path
    (deploy / "rules.yml").write_text((promlib.DEPLOY / "rules.yml").read_text())
    monkeypatch.setattr(promlib, "DEPLOY", deploy)
    with pytest.raises(AssertionError, match="panel 't': no data"):
        check_everything(prom, time.time(), {})
