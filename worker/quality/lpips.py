"""LPIPS (v0.1, AlexNet backbone), built offline from the model store.

The network is the ``lpips`` package's own ``LPIPS`` module, constructed with a
random trunk and no linear layers (so nothing is downloaded), then filled with:

- the AlexNet features from ``<model_dir>/lpips-alex-v0.1.safetensors``, written
  by :func:`worker.quality.lpips_weights.provision` (``make models`` /
  ``python -m orchestration.provision``);
- the v0.1 linear layers shipped inside the ``lpips`` package
  (``lpips/weights/v0.1/alex.pth``, loaded with ``weights_only=True``).

Usage::

    metric = LPIPS(model_dir)                 # raises LPIPSWeightsMissing if not provisioned
    d = metric.distance(a, b)                 # a, b: float32 HxWx3 RGB in [0, 1] -> float >= 0
    m = metric.distance_map(a, b)             # float32 HxW, mean(m) == distance(a, b)
    ds = metric.distances(list_a, list_b)     # list of floats (same-size pairs batched)

Distances follow the reference implementation's ``spatial=True`` mode: each
layer's map is bilinearly upsampled to the input size and summed, and the
distance is the mean of that map. On the reference images
(/work/shared/testdata/lpips/) this gives 0.722 and 0.138, like the official
implementation. The map lets a caller average LPIPS inside a mask.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from worker.errors import RetouchError

FILENAME = "lpips-alex-v0.1.safetensors"  # the converted AlexNet backbone in the model store

log = logging.getLogger(__name__)


class LPIPSWeightsMissing(RetouchError):
    """The model store has no converted AlexNet backbone for LPIPS."""


def linear_layers_path() -> Path:
    import lpips

    return Path(lpips.__file__).resolve().parent / "weights" / "v0.1" / "alex.pth"


def load_linear_layers() -> dict:
    """The LPIPS v0.1 AlexNet linear layers shipped in the ``lpips`` package
    (``lin{0..4}.model.1.weight``), loaded with ``weights_only=True``."""
    import torch

    return torch.load(linear_layers_path(), map_location="cpu", weights_only=True)


def _as_batch(images: list[np.ndarray]):
    import torch

    for i, img in enumerate(images):
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"LPIPS input {i} must be HxWx3 RGB, got shape {img.shape}")
    arr = np.stack([np.asarray(img, np.float32) for img in images])
    # [0, 1] -> [-1, 1], as the reference ``normalize=True``.
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2))) * 2.0 - 1.0


class LPIPS:
    """LPIPS v0.1 / AlexNet on ``device`` ("cpu", "cuda", "cuda:N").

    Raises :class:`LPIPSWeightsMissing` naming the file when the model store has
    not been provisioned."""

    def __init__(self, model_dir: str | os.PathLike, device: str = "cpu"):
        import torch
        from safetensors.torch import load_file

        path = Path(model_dir) / FILENAME
        if not path.is_file():
            raise LPIPSWeightsMissing(f"{path}: LPIPS AlexNet weights not found; run `make models` "
                                      "(or `python -m orchestration.provision`) to provision the model store")
        import lpips

        with warnings.catch_warnings():  # torchvision's deprecation notes about `pretrained=`
            warnings.simplefilter("ignore")
            net = lpips.LPIPS(net="alex", version="0.1", pretrained=False, pnet_rand=True, spatial=True,
                              verbose=False)
        state = net.state_dict()
        backbone = load_file(str(path))
        unknown = sorted(set(backbone) - set(state))
        if unknown:
            raise ValueError(f"{path}: unexpected tensors {unknown[:3]} (not lpips' AlexNet)")
        state.update(backbone)
        lins = load_linear_layers()
        state.update(lins)
        state.update({k.replace(f"lin{i}.", f"lins.{i}."): v for i in range(5) for k, v in lins.items()
                      if k.startswith(f"lin{i}.")})
        missing = [k for k in net.state_dict() if k.startswith("net.") and k not in backbone]
        if missing:
            raise ValueError(f"{path}: missing tensors {missing[:3]}")
        net.load_state_dict(state, strict=True)
        self.device = device
        self.net = net.to(device).eval()
        self.path = path
        self._torch = torch

    def distance_map(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Per-pixel LPIPS map, float32 HxW (>= 0), for one pair of float32
        HxWx3 images in [0, 1]. Raises ValueError if the shapes differ."""
        return self.distance_maps([a], [b])[0]

    def distance_maps(self, a: list[np.ndarray], b: list[np.ndarray]) -> list[np.ndarray]:
        """Maps for pairs ``a[i], b[i]``; pairs of the same size run as one batch."""
        if len(a) != len(b):
            raise ValueError(f"LPIPS needs pairs: got {len(a)} and {len(b)} images")
        for i, (x, y) in enumerate(zip(a, b)):
            if x.shape != y.shape:
                raise ValueError(f"LPIPS pair {i}: shapes differ, {x.shape} vs {y.shape}")
        out: list[np.ndarray | None] = [None] * len(a)
        groups: dict[tuple, list[int]] = {}
        for i, x in enumerate(a):
            groups.setdefault(x.shape, []).append(i)
        torch = self._torch
        for idx in groups.values():
            with torch.inference_mode():
                x = _as_batch([a[i] for i in idx]).to(self.device)
                y = _as_batch([b[i] for i in idx]).to(self.device)
                maps = self.net(x, y).float().cpu().numpy()[:, 0]
            for j, i in enumerate(idx):
                out[i] = maps[j].astype(np.float32)
        return out  # type: ignore[return-value]

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """LPIPS distance between two float32 HxWx3 images in [0, 1] (0 = identical)."""
        return float(self.distance_map(a, b).mean())

    def distances(self, a: list[np.ndarray], b: list[np.ndarray]) -> list[float]:
        """Batch form of :meth:`distance`."""
        return [float(m.mean()) for m in self.distance_maps(a, b)]
