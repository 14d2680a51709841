"""Lineage: the fingerprint changes with each part, and the causes name
exactly the part that changed (no servers: the parts are plain values and a
model store's manifest)."""

from __future__ import annotations

from worker.models.manifest import Manifest
from worker.pipeline import graph
from worker.pipeline.lineage import BUILTIN, causes, lineage, weights_digest
from worker.pipeline.plan import Plan


def test_fingerprint_changes_with_each_part_and_causes_name_it():
    base = dict(input_sha256="a" * 64, plan="p1", models={"up": "w1", "telea": BUILTIN}, code={"upscale": "1"})
    rec = lineage(**base)
    assert rec == lineage(**base)   # deterministic
    for part, value in (("input_sha256", "b" * 64), ("plan", "p2"), ("models", {"up": "w2", "telea": BUILTIN}),
                        ("code", {"upscale": "2"})):
        assert lineage(**{**base, part: value})["fingerprint"] != rec["fingerprint"], part
    now = dict(input_changed=False, plan="p1", models={"up": "w1", "telea": None}, code={"upscale": "1"})
    assert causes(rec, **now) == []   # a built-in variant has no weights to change
    assert causes(rec, **{**now, "models": {"up": "w2"}}) == ["model=up"]
    assert causes(rec, **{**now, "models": {"up": None}}) == ["model=up"]   # removed from the store
    assert causes(rec, **{**now, "code": {"upscale": "2"}}) == ["code=upscale"]
    assert causes(rec, **{**now, "input_changed": True, "plan": "p2"}) == ["input", "plan"]


def test_weights_digest_reads_the_manifest(tmp_path):
    m = Manifest(tmp_path)
    m.put({"name": "up", "task": "upscale", "architecture": "x", "scale": 2, "backend": "spandrel", "file": "up.pth",
           "sha256": "1" * 64, "licence": "t", "source": "t"})
    m.put({"name": "multi", "task": "upscale", "architecture": "x", "scale": 2, "backend": "ncnn", "file": "a.bin",
           "sha256": "2" * 64, "licence": "t", "source": "t",
           "files": [{"file": "a.bin", "sha256": "2" * 64}, {"file": "a.param", "sha256": "3" * 64}]})
    m.save()
    assert weights_digest("up", str(tmp_path)) == "1" * 64
    multi = weights_digest("multi", str(tmp_path))
    assert len(multi) == 64 and multi != "2" * 64            # every file counts
    assert weights_digest("lanczos", str(tmp_path)) is None  # built in
    assert weights_digest("up", None) is None


def test_code_versions_are_those_of_the_plans_stages():
    assert graph.code_versions(Plan(ops=["upscale"], upscale="lanczos")) == {"upscale": "1"}
    assert set(graph.code_versions(Plan(ops=["remove-text"]))) == {s.name for s in graph.stages_for(
        Plan(ops=["remove-text"]))}
