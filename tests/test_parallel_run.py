"""`retouch run --jobs N`: several images at once, each in its own process,
with the same outputs, sidecars and decisions as one at a time; a process
that dies fails only the image it held; ``auto`` picks processes only where
they pay."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image as PILImage

from orchestration import parallel
from orchestration.cli import main
from orchestration.local import Outcome, discover, run_batch
from worker.pipeline.cache import ModelCache
from worker.pipeline.plan import Plan

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _samples(folder: Path) -> Path:
    folder.mkdir()
    for f in EXAMPLES.iterdir():
        if f.suffix in (".jpg", ".png"):
            shutil.copy(f, folder / f.name)
    return folder


def _decisions(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / "retouch-decisions.jsonl").read_text().splitlines()]
    return sorted((json.dumps({k: v for k, v in d.items() if k not in ("ts",)}, sort_keys=True) for d in lines))


def test_two_at_once_write_what_one_at_a_time_writes(tmp_path, capsys):
    src = _samples(tmp_path / "in")
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["run", str(src), "--out", str(one), "--save-masks", "--no-progress", "--jobs", "1"]) == 0
    assert main(["run", str(src), "--out", str(two), "--save-masks", "--no-progress", "--jobs", "2"]) == 0
    assert "4 restored" in capsys.readouterr().out
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    for rel in files:
        if rel.suffix in (".jpg", ".png"):   # outputs and masks: byte for byte
            assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel
        elif rel.name.endswith(".json") and rel.name != "retouch-decisions.jsonl":
            a, b = json.loads((one / rel).read_text()), json.loads((two / rel).read_text())
            for record in (a, b):   # what differs: the wall times and the output folder
                record.pop("timings")
                record["output"].pop("path")
                record.pop("artifacts", None)
            assert a == b, rel
    # every decision of the child processes reached the run's decision log
    assert _decisions(one) and _decisions(one) == _decisions(two)


def crash_on_boom(source: Path, root: Path, plan: Plan, options: dict) -> Outcome:
    """A restore whose process dies on ``boom.png`` (as one killed by the kernel would)."""
    if source.name == "boom.png":
        os._exit(9)
    return parallel.restore_one(source, root, plan, options)


def test_a_process_that_dies_fails_only_its_image(tmp_path):
    src = _samples(tmp_path / "in")
    shutil.copy(src / "rocket-stamp.png", src / "boom.png")
    out = tmp_path / "out"
    files = discover([src])
    plan = Plan(inpaint="telea")
    seen: list[str] = []
    report = run_batch(files, out, plan, ModelCache(device="cpu"), max_pixels=10**8,
                       on_done=lambda o: seen.append(o.source.name),
                       execute=lambda items, options, finished: parallel.run_parallel(
                           items, 2, options, finished, model_dir=None, device="cpu", work=crash_on_boom))
    by_name = {o.source.name: o for o in report.outcomes}
    assert [o.source for o in report.outcomes] == [f for f, _ in files]        # the batch's order
    assert sorted(seen) == sorted(by_name)                                      # each image reported once
    assert by_name["boom.png"].status == "failed"
    assert by_name["boom.png"].error == f"{src / 'boom.png'}: the process restoring it died (killed, out of " \
                                        "memory or a crash)"
    assert all(o.status == "ok" for name, o in by_name.items() if name != "boom.png"), report.outcomes
    for name in by_name:
        if name != "boom.png":
            assert (out / name).is_file()


def _image(path: Path, side: int) -> Path:
    PILImage.new("RGB", (side, side), (90, 120, 150)).save(path)
    return path


def test_auto_runs_several_only_where_it_pays(tmp_path):
    big = [_image(tmp_path / f"big{i}.png", 1500) for i in range(3)]      # 6.75 MP
    small = [_image(tmp_path / f"small{i}.png", 300) for i in range(5)]   # 0.45 MP
    assert parallel.auto_jobs(big, "cpu", cores=2) == 2
    assert parallel.auto_jobs(big, "cpu", cores=8) == 3                  # at most one per image
    assert parallel.auto_jobs(big[:1], "cpu", cores=8) == 1
    assert parallel.auto_jobs(small, "cpu", cores=8) == 1                 # processes cost more than they save
    assert parallel.auto_jobs(big, "cpu", cores=1) == 1
    assert parallel.auto_jobs(big, "cuda:0", cores=8) == 1                # one device, one model cache
    assert parallel.megapixels(big + [tmp_path / "missing.png"]) == pytest.approx(6.75)


@pytest.mark.parametrize("argv, message", [
    (["--jobs", "0"], "--jobs must be a positive number or auto but is '0'"),
    (["--jobs", "two"], "--jobs must be a positive number or auto but is 'two'"),
    (["--jobs", "2", "--metrics-textfile", "m.prom"], "--jobs above 1 and --metrics-*"),
])
def test_bad_jobs_is_one_line(tmp_path, capsys, argv, message):
    src = _samples(tmp_path / "in")
    assert main(["run", str(src), "--out", str(tmp_path / "out"), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
