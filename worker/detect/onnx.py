"""The ONNX models that ship inside ``rapidocr-onnxruntime``, and where they run."""

from __future__ import annotations

import logging
from importlib.util import find_spec
from pathlib import Path

from worker.errors import RetouchError
from worker.threads import current as thread_budget

log = logging.getLogger(__name__)

MODEL_FILE = "ch_PP-OCRv4_det_infer.onnx"


class ModelNotFoundError(RetouchError):
    """A PP-OCRv4 ONNX file (detector or recogniser) is missing from the installed packages."""


def shipped_model_path(name: str = MODEL_FILE) -> Path:
    """Path of a PP-OCRv4 model (detection by default) inside rapidocr-onnxruntime."""
    spec = find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError("rapidocr-onnxruntime is not installed; it carries the text-detection model")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: model missing from rapidocr-onnxruntime")
    return path


def onnx_providers(device: str) -> list[str]:
    """CUDA when asked for (or ``auto`` and present), else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device.startswith("cuda"):
        log.warning("device %s requested but onnxruntime has no CUDA provider; detecting on CPU", device)
    return ["CPUExecutionProvider"]


def onnx_session(path: Path, device: str, threads: int = 0):
    """An onnxruntime session for ``path`` on ``device`` (``cuda:N`` picks the
    GPU); ``threads``: intra-op threads, 0 for this process's budget
    (:mod:`worker.threads`), else onnxruntime's default."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    threads = threads or thread_budget()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    device_id = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    providers = onnx_providers(device)
    provider_options = [{"device_id": device_id} if p == "CUDAExecutionProvider" else {} for p in providers]
    return ort.InferenceSession(str(path), options, providers=providers, provider_options=provider_options)
