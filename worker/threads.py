"""Thread budgets: how many threads one process's compute libraries may use.

Every library here sizes its pool for the whole machine by default
(onnxruntime intra-op, torch, OpenCV, ncnn, BLAS), so N worker processes on
C cores run N x C threads and fight over the cores. A worker process instead
gets ``usable_cores() // processes`` threads, for all of them alike.

``usable_cores`` counts the cores this process may actually run on: its CPU
affinity, capped by a cgroup CPU quota (cgroup v2 ``cpu.max``, v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), never ``os.cpu_count()``,
which a container reports as the host's.

:func:`apply` sets the budget in this process (torch, OpenCV, threadpoolctl
when installed) and records it, so the onnxruntime sessions and ncnn nets
built later in the process use it too (a thread pool is per process, like
the budget). BLAS libraries read their variables once, at load: whoever
starts a worker process passes :func:`env_for` in its environment.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = "/sys/fs/cgroup"
BLAS_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                  "VECLIB_MAXIMUM_THREADS")

_budget: int | None = None


def cgroup_quota(root: str | Path = CGROUP_ROOT) -> float | None:
    """The CPU quota in cores under ``root`` (a cgroup mount), or None when
    there is none (``max`` / ``-1``) or no cgroup file is readable there.

    cgroup v2: ``root/cpu.max`` holds ``"<quota> <period>"`` or ``"max <period>"``.
    cgroup v1: ``root/cpu/cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` (also
    under ``cpu,cpuacct``)."""
    root = Path(root)
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        parts = v2.split()
        if len(parts) == 2 and parts[0] != "max":
            return _ratio(parts[0], parts[1])
        return None
    for folder in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        quota, period = _read(root / folder / "cpu.cfs_quota_us"), _read(root / folder / "cpu.cfs_period_us")
        if quota is not None and period is not None:
            return _ratio(quota, period)
    return None


def usable_cores(root: str | Path = CGROUP_ROOT, affinity: set[int] | None = None) -> int:
    """Cores this process may use: its affinity (``os.sched_getaffinity``
    unless given), capped by the cgroup quota under ``root``, rounded down
    (a 1.5-core quota gives 1: a second thread would be throttled), at least 1."""
    cores = len(affinity if affinity is not None else os.sched_getaffinity(0))
    quota = cgroup_quota(root)
    if quota is not None:
        cores = min(cores, int(quota))
    return max(1, cores)


def budget(processes: int, cores: int | None = None) -> int:
    """Threads per process when ``processes`` share ``cores`` (default
    :func:`usable_cores`): ``cores // processes``, at least 1."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1 but is {processes}")
    return max(1, (cores if cores is not None else usable_cores()) // processes)


def env_for(threads: int) -> dict[str, str]:
    """Environment variables that size the BLAS/OpenMP pools, read when those
    libraries load: set them in a child process's environment before it starts."""
    return {name: str(threads) for name in BLAS_VARIABLES}


def apply(threads: int) -> dict[str, int | str]:
    """Set this process's budget to ``threads`` in every library it uses and
    return what each now reports (the values read back, not the request)."""
    global _budget
    if threads < 1:
        raise ValueError(f"threads must be at least 1 but is {threads}")
    _budget = threads
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    report: dict[str, int | str] = {"threads": threads, "torch": torch.get_num_threads(),
                                    "opencv": cv2.getNumThreads()}
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        report["blas"] = os.environ.get("OMP_NUM_THREADS", "unset")
    else:
        threadpool_limits(limits=threads)
        report["blas"] = threads
    return report


def current() -> int | None:
    """The budget :func:`apply` set in this process, or None (library defaults)."""
    return _budget


def describe(report: dict) -> str:
    """One line: ``threads 1 (torch 1, opencv 1, blas 1)``."""
    rest = ", ".join(f"{k} {v}" for k, v in report.items() if k != "threads")
    return f"threads {report['threads']} ({rest})"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None
