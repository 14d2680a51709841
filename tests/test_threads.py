"""Thread budgets (worker.threads): cores from cgroup files and affinity, and
the budget reaching every library a worker process builds."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import pytest
import torch

from worker import threads

MODELS = Path(os.environ.get("RETOUCH_MODEL_DIR", Path.home() / ".cache" / "retouch" / "models"))


def _cgroup(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    return tmp_path


@pytest.mark.parametrize("files,quota", [
    ({"cpu.max": "150000 100000"}, 1.5),                                      # v2, 1.5 cores
    ({"cpu.max": "max 100000"}, None),                                        # v2, no limit
    ({"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, 3.0),   # v1
    ({"cpu,cpuacct/cpu.cfs_quota_us": "50000", "cpu,cpuacct/cpu.cfs_period_us": "100000"}, 0.5),
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),      # v1, no limit
    ({}, None),                                                               # no cgroup files
    ({"cpu.max": "garbage"}, None),
])
def test_cgroup_quota_reads_v1_and_v2(tmp_path, files, quota):
    assert threads.cgroup_quota(_cgroup(tmp_path, files)) == quota


def test_usable_cores_is_affinity_capped_by_the_quota_rounded_down(tmp_path):
    eight = set(range(8))
    assert threads.usable_cores(_cgroup(tmp_path / "a", {"cpu.max": "max 100000"}), eight) == 8
    assert threads.usable_cores(_cgroup(tmp_path / "b", {"cpu.max": "250000 100000"}), eight) == 2
    assert threads.usable_cores(_cgroup(tmp_path / "c", {"cpu.max": "400000 100000"}), {0, 3}) == 2
    assert threads.usable_cores(_cgroup(tmp_path / "d", {"cpu.max": "20000 100000"}), eight) == 1  # 0.2 core
    assert threads.usable_cores(tmp_path / "none", {5}) == 1


def test_usable_cores_of_this_process_never_exceeds_its_affinity():
    assert 1 <= threads.usable_cores() <= len(os.sched_getaffinity(0))


def test_budget_divides_cores_by_processes():
    assert threads.budget(1, 8) == 8
    assert threads.budget(2, 8) == 4
    assert threads.budget(3, 8) == 2
    assert threads.budget(4, 2) == 1     # never 0
    with pytest.raises(ValueError, match="processes must be at least 1 but is 0"):
        threads.budget(0, 8)


@pytest.fixture
def restore_budget():
    before = (torch.get_num_threads(), cv2.getNumThreads(), threads._budget)
    yield
    torch.set_num_threads(before[0])
    cv2.setNumThreads(before[1])
    threads._budget = before[2]


def test_apply_sets_torch_opencv_and_the_sessions_and_nets_built_after_it(restore_budget):
    from worker.detect import TextDetector
    from worker.upscale.ncnn_backend import NcnnNet

    report = threads.apply(1)
    assert (report["torch"], report["opencv"]) == (1, 1)
    assert (torch.get_num_threads(), cv2.getNumThreads(), threads.current()) == (1, 1, 1)
    detector = TextDetector(device="cpu")
    assert detector.session.get_session_options().intra_op_num_threads == 1
    net = NcnnNet(MODELS / "ncnn" / "realesr-animevideov3-x2.param", MODELS / "ncnn" / "realesr-animevideov3-x2.bin")
    assert net.net.opt.num_threads == 1
    # an explicit count still wins over the process budget
    assert TextDetector(device="cpu", threads=2).session.get_session_options().intra_op_num_threads == 2


def test_env_for_sizes_every_blas_pool():
    env = threads.env_for(3)
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
