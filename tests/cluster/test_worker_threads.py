"""`retouch worker` gives each child process its thread budget, and the child
applies it (the figures it prints are read back from torch and OpenCV in the
child; BLAS sizes come from the child's environment)."""

from __future__ import annotations

import re
import time

from worker import threads


def _wait_for(workers, pattern: str, count: int, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.findall(pattern, workers.log.read_text())
        if len(found) >= count:
            return found
        assert workers.proc.poll() is None, workers.log.read_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not printed {count} times: {workers.log.read_text()[-3000:]}")


def test_default_budget_is_usable_cores_over_processes(cluster_env, start_workers):
    workers = start_workers(cluster_env, "--cpu", "--cpu-concurrency", "2")
    expected = threads.budget(2, threads.usable_cores())
    line = _wait_for(workers, r"retouch worker: .*", 1)[0]
    assert f"; {expected} threads per process ({threads.usable_cores()} usable cores, 2 processes)" in line
    children = _wait_for(workers, r"retouch worker cpu\d\.\S+: threads (\d+) \(torch (\d+), opencv (\d+), "
                                  r"blas (\S+)\)", 2)
    assert children == [(str(expected),) * 4] * 2
    for child in workers.children():
        assert child.environ()["OPENBLAS_NUM_THREADS"] == str(expected)


def test_setting_overrides_the_budget(cluster_env, start_workers):
    workers = start_workers({**cluster_env, "RETOUCH_THREADS": "3"}, "--cpu")
    line = _wait_for(workers, r"retouch worker: .*", 1)[0]
    assert "; 3 threads per process (" in line and "set by --threads/RETOUCH_THREADS" in line
    assert _wait_for(workers, r"retouch worker cpu\.\S+: threads (\d+) \(torch (\d+), opencv (\d+), "
                              r"blas (\S+)\)", 1) == [("3", "3", "3", "3")]
    (child,) = workers.children()
    assert child.environ()["OMP_NUM_THREADS"] == "3"
