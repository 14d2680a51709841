"""Metrics on fresh registries: bulk histogram equals one-by-one observation,
bounded labels are enforced, the embedded pipeline's observations match its
record, and the textfile round-trips."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from monitoring.metrics import CONFIDENCE_BUCKETS, STATUSES, Metrics, _observe_many


def value(registry, metric, **labels) -> float:
    v = registry.get_sample_value(metric, labels)
    return 0.0 if v is None else v


def test_bulk_histogram_equals_observe_one_by_one():
    rng = np.random.default_rng(0)
    # include values exactly on bucket bounds: "le" means <=, the edge belongs to the lower bucket
    samples = np.concatenate([rng.random(3000), np.array(CONFIDENCE_BUCKETS), [0.0, 0.0]])
    bulk, single = CollectorRegistry(), CollectorRegistry()
    h_bulk = Histogram("h", "h", buckets=CONFIDENCE_BUCKETS, registry=bulk)
    h_single = Histogram("h", "h", buckets=CONFIDENCE_BUCKETS, registry=single)
    _observe_many(h_bulk, samples)
    for s in samples:
        h_single.observe(float(s))
    for bound in [*(str(b) for b in CONFIDENCE_BUCKETS), "+Inf"]:
        assert value(bulk, "h_bucket", le=bound) == value(single, "h_bucket", le=bound), bound
    assert value(bulk, "h_count") == len(samples)
    assert value(bulk, "h_sum") == pytest.approx(value(single, "h_sum"))


def test_observe_mask_counts_samples_and_one_coverage():
    reg = CollectorRegistry()
    m = Metrics(reg)
    m.observe_mask(np.array([0.1, 0.5, 0.96, 1.0], dtype=np.float32), 0.02)
    m.observe_mask(np.array([], dtype=np.float32), 0.0)  # nothing detected: coverage still observed
    assert value(reg, "retouch_mask_confidence_count") == 4
    assert value(reg, "retouch_mask_confidence_bucket", le="0.95") == 2
    assert value(reg, "retouch_mask_coverage_ratio_count") == 2
    assert value(reg, "retouch_mask_coverage_ratio_bucket", le="0.02") == 2


@pytest.mark.parametrize("conf, cov", [([0.5, 1.2], 0.1), ([0.5, np.nan], 0.1), ([0.5], -0.3)])
def test_observe_mask_refuses_values_outside_unit_interval(conf, cov):
    m = Metrics(CollectorRegistry())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.observe_mask(np.array(conf), cov)


def test_labels_stay_bounded():
    reg = CollectorRegistry()
    m = Metrics(reg)
    m.selection("inpaint", "telea", "thin-strokes-smooth")
    m.observe_stage("upscale", "realesr-animevideov3-x4", "cuda:0", 0.5)
    with pytest.raises(ValueError, match="reason"):
        m.selection("inpaint", "telea", "thin strokes (3.8 px) on smooth ground")  # a free-form reason
    with pytest.raises(ValueError, match="variant"):
        m.observe_stage("detect", "photos/2024/IMG_0001.jpg", "cpu", 0.1)  # an image key
    with pytest.raises(ValueError, match="status"):
        m.image_finished("done")
    with pytest.raises(ValueError, match=">= 0"):
        m.observe_stage("detect", "ppocrv4-det", "cpu", -1.0)
    assert value(reg, "retouch_model_selections_total", stage="inpaint", variant="telea",
                 reason="thin-strokes-smooth") == 1
    assert value(reg, "retouch_stage_duration_seconds_count", stage="upscale",
                 variant="realesr-animevideov3-x4", device="cuda:0") == 1


def test_every_status_is_a_series_from_the_start():
    reg = CollectorRegistry()
    m = Metrics(reg)
    for status in STATUSES:
        assert reg.get_sample_value("retouch_images_total", {"status": status}) == 0.0
    m.image_finished("failed")
    assert value(reg, "retouch_images_total", status="failed") == 1


def test_gpu_gauges_stay_empty_on_cpu():
    reg = CollectorRegistry()
    m = Metrics(reg)
    m.sample_gpu()
    names = {s.name for fam in reg.collect() for s in fam.samples}
    assert not any(n.startswith("retouch_gpu_memory") for n in names)


def test_task_counters_and_in_flight():
    reg = CollectorRegistry()
    m = Metrics(reg)
    m.task_started("tasks.detect")
    m.task_started("tasks.detect")
    m.task_done("tasks.detect")
    m.task_retried("tasks.detect")
    m.task_redelivered("tasks.upscale")
    assert value(reg, "retouch_tasks_in_flight", task="tasks.detect") == 1
    assert value(reg, "retouch_task_retries_total", task="tasks.detect") == 1
    assert value(reg, "retouch_task_redeliveries_total", task="tasks.upscale") == 1


def test_textfile_round_trips(tmp_path):
    reg = CollectorRegistry()
    m = Metrics(reg)
    m.model_loaded("detector", "ppocrv4-det", 1.5)
    m.image_finished("ok")
    path = tmp_path / "retouch.prom"
    m.write_textfile(path)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(path.read_text()) for s in fam.samples}
    assert samples[("retouch_images_total", (("status", "ok"),))] == 1
    assert samples[("retouch_model_load_seconds_count", (("kind", "detector"), ("name", "ppocrv4-det")))] == 1


def test_embedded_pipeline_observations_match_its_record(overlaid, detector):
    """restore() through the real steps: the metrics say what the sidecar record says."""
    from orchestration.local import restore
    from worker.pipeline.plan import Plan
    from worker.io import Image
    from worker.pipeline.cache import ModelCache

    reg = CollectorRegistry()
    m = Metrics(reg)
    cache = ModelCache(device="cpu", on_load=m.model_loaded)
    cache.get("detector", detector.name, lambda: detector)  # the session's detector, loaded once
    _clean, degraded, _truth = overlaid["coffee"]
    img = Image(rgb=degraded, name="coffee.png")
    out = restore(img, Plan(ops=["remove-text", "upscale"], scale=2, upscale="lanczos"), cache, metrics=m)
    rec = out.record
    for d in rec["decisions"]:
        assert value(reg, "retouch_model_selections_total", stage=d["stage"], variant=d["variant"],
                     reason=d["rule"]) == 1
    assert value(reg, "retouch_mask_coverage_ratio_count") == 1
    assert value(reg, "retouch_mask_coverage_ratio_sum") == pytest.approx(rec["mask"]["coverage"])
    assert 0 < value(reg, "retouch_mask_confidence_count") <= 4096  # the step's capped subsample
    assert value(reg, "retouch_model_load_seconds_count", kind="detector", name=detector.name) == 1
    for stage, seconds in rec["timings"].items():
        total = sum(s.value for fam in reg.collect() for s in fam.samples
                    if s.name == "retouch_stage_duration_seconds_sum" and s.labels["stage"] == stage)
        assert total == pytest.approx(seconds, abs=1e-3), stage
