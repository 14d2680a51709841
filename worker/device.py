"""Which device and precision learned models run on, and how much memory is free.

A worker pinned to one GPU sees it as ``cuda:0`` (CUDA_VISIBLE_DEVICES is set
by whoever starts the worker); ``auto`` means that GPU if torch sees one, else
the CPU. Nothing here reads the environment or settings: the device string
comes in from the edge (``--device``, ``Settings.device``).
"""

from __future__ import annotations

import logging
import re

from worker.errors import RetouchError

log = logging.getLogger(__name__)

_CUDA = re.compile(r"^cuda(?::(\d+))?$")


class DeviceError(RetouchError):
    """A device string that is malformed or names a GPU that is not there."""


def resolve_device(spec: str) -> str:
    """``"auto" | "cpu" | "cuda" | "cuda:N"`` -> ``"cpu"`` or ``"cuda:N"``.

    ``auto`` picks ``cuda:0`` when torch can use a GPU, else ``cpu``. Raises
    DeviceError naming the value if it is malformed or the GPU index does not exist."""
    spec = (spec or "auto").strip().lower()
    if spec == "cpu":
        return "cpu"
    if spec == "auto":
        return "cuda:0" if _cuda_count() > 0 else "cpu"
    match = _CUDA.match(spec)
    if not match:
        raise DeviceError(f"device {spec!r} is not one of auto, cpu, cuda:N")
    index = int(match.group(1) or 0)
    count = _cuda_count()
    if index >= count:
        raise DeviceError(f"device {spec!r}: only {count} CUDA device(s) visible to this process")
    return f"cuda:{index}"


def _cuda_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # pragma: no cover - a broken CUDA install means "no GPU" here
        log.warning("torch cannot query CUDA; using the CPU", exc_info=True)
        return 0


def choose_dtype(device: str, half: bool | str = False, supports_half: bool = True, supports_bf16: bool = True):
    """The torch dtype to run a model in.

    CPU: always float32 (fp16 convolutions are slow there and bf16 gains little
    on CPUs without AMX). CUDA: ``half=False`` or ``"fp32"`` -> float32; ``half=True`` or
    ``"fp16"`` -> float16 when the model supports it; ``"bf16"`` -> bfloat16
    when the GPU supports it (wider range, so models that overflow in fp16 keep
    working), else float16; ``"auto"`` -> float16 for models that support it
    (what Real-ESRGAN ships for), else bfloat16 if possible, else float32."""
    import torch

    if not device.startswith("cuda") or not half or half == "fp32":
        return torch.float32
    bf16_ok = supports_bf16 and torch.cuda.is_bf16_supported()
    if half == "bf16":
        return torch.bfloat16 if bf16_ok else (torch.float16 if supports_half else torch.float32)
    if half in (True, "fp16", "auto"):
        if supports_half:
            return torch.float16
        return torch.bfloat16 if bf16_ok else torch.float32
    raise DeviceError(f"precision {half!r} is not one of fp32, fp16, bf16, auto")


def free_memory(device: str) -> int:
    """Bytes that a model may use now: free GPU memory on ``cuda:N`` (as the
    driver reports it, plus what torch's allocator holds cached), available RAM
    on the CPU."""
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":")[1]) if ":" in device else 0
        free, _total = torch.cuda.mem_get_info(index)
        cached = torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
        return int(free + max(0, cached))
    import psutil

    return int(psutil.virtual_memory().available)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocator out-of-memory error (CUDA or CPU)."""
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_cached(device: str) -> None:
    """Give torch's cached GPU blocks back before retrying with a smaller tile."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
