"""Backend speeds measured on this machine by ``retouch bench upscale``, kept
in the model store as ``backend-speeds.json`` (variant -> median seconds per
output megapixel on the CPU), so ``auto`` runs the backend that was fastest
here rather than on the machine the defaults were measured on."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from worker.files import atomic_write
from worker.models.store import default_model_dir

log = logging.getLogger(__name__)

FILENAME = "backend-speeds.json"


def load(model_dir: str | None) -> dict[str, float]:
    """``{variant: seconds per output MP}`` from the store (empty when never measured or unreadable)."""
    path = Path(model_dir or default_model_dir()) / FILENAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return {str(k): float(v) for k, v in data.get("cpu_seconds_per_output_mp", {}).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        log.warning("%s: unreadable, using the default backends", path)
        return {}


def save(model_dir: str | None, measured: dict[str, float], machine: str = "") -> Path:
    """Merge ``measured`` into the store's file (atomic write); returns its path."""
    path = Path(model_dir or default_model_dir()) / FILENAME
    merged = {**load(model_dir), **{k: round(float(v), 5) for k, v in measured.items()}}
    body = {"cpu_seconds_per_output_mp": dict(sorted(merged.items())), "machine": machine}
    atomic_write(path, (json.dumps(body, indent=2) + "\n").encode())
    return path
