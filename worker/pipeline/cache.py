"""Models load once per process and are reused across images.

A worker pinned to one GPU keeps one ``ModelCache``; every task on that worker
asks it for the detector, the upscalers and the learned inpainters, so weights
are loaded once and stay on their device. The
cache is an explicit object (no module global), passed in from the edge.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from worker import inpaint, upscale
from worker.detect import TextDetector
from worker.pipeline.lineage import weights_digest

log = logging.getLogger(__name__)


class ModelCache:
    """Lazily built models keyed by (kind, name, options). Thread-safe.

    ``on_load(kind, name, seconds)`` is called after each load (metrics hook)."""

    def __init__(self, device: str = "auto", model_dir: str | None = None,
                 on_load: Callable[[str, str, float], None] | None = None):
        self.device = device
        self.model_dir = model_dir
        self.on_load = on_load
        self._models: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def get(self, kind: str, name: str, build: Callable[[], Any], key: tuple = ()) -> Any:
        """The cached model, or ``build()`` once and cache it."""
        full = (kind, name) + tuple(key)
        with self._lock:
            if full in self._models:
                return self._models[full]
            start = time.perf_counter()
            model = build()
            seconds = time.perf_counter() - start
            self._models[full] = model
        log.info("loaded %s %s in %.2fs", kind, name, seconds)
        if self.on_load:
            self.on_load(kind, name, seconds)
        return model

    def detector(self):
        """The text detector (PP-OCRv4 DBNet via onnxruntime) on this cache's device."""
        return self.get("detector", TextDetector.name, lambda: TextDetector(device=self.device))

    def upscaler(self, name: str, options=None):
        """An upscaler from the registry (``worker.upscale``), built once per options."""
        options = options or upscale.UpscaleOptions(device=self.device, model_dir=self.model_dir)
        # keyed by the weights' sha256 too: a model replaced in the store (`retouch models add --replace`)
        # loads afresh instead of the old weights staying in a long-lived worker
        return self.get("upscaler", name, lambda: upscale.create(name, options),
                        key=(options.device, options.tile, options.half, options.model_dir,
                             weights_digest(name, options.model_dir)))

    def inpainter(self, name: str, device: str) -> inpaint.ModelInpainter:
        """A learned inpainter from the store (``worker.inpaint``), loaded once per
        device and kept there. Raises UnknownVariantError if it is not installed."""
        info = inpaint.get(name, self.model_dir)
        if info.factory is None:
            raise inpaint.UnknownVariantError(f"inpaint variant {name!r} is built in, not a model")
        options = inpaint.LoadOptions(device=device, model_dir=self.model_dir)
        return self.get("inpainter", name, lambda: info.factory(options),
                        key=(device, self.model_dir, weights_digest(name, self.model_dir)))

    def loaded(self) -> list[str]:
        return [f"{k[0]}:{k[1]}" for k in self._models]
