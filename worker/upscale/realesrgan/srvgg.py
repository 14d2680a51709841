"""SRVGGNetCompact (Real-ESRGAN's compact VGG-style model, realesr-animevideov3),
written for this project.

A plain stack of 3x3 convs with per-channel PReLU at low resolution, a pixel
shuffle to the output size, plus the nearest-neighbour upsampled input (the
network only learns the residual). Parameter names follow the reference
(``body.0`` first conv, ``body.1`` its PReLU, ..., ``body.{2n+2}`` last conv).

Input: float tensor (N, 3, H, W) RGB in [0, 1]. Output: (N, 3, sH, sW), about
[0, 1] (not clipped).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SRVGGNetCompact(nn.Module):
    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_conv: int = 16,
                 upscale: int = 4):
        super().__init__()
        self.scale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


def from_state_dict(state: dict) -> SRVGGNetCompact:
    """Build an SRVGGNetCompact sized from ``state`` and load it.

    Raises ValueError if ``state`` is not an SRVGGNetCompact with PReLU."""
    convs = sorted(int(k.split(".")[1]) for k in state if k.startswith("body.") and k.endswith(".weight")
                   and state[k].ndim == 4)
    if not convs or convs[0] != 0:
        raise ValueError("not an SRVGGNetCompact state dict: no body.0 conv")
    first, last = state["body.0.weight"], state[f"body.{convs[-1]}.weight"]
    num_conv = len(convs) - 2
    num_out_ch = 3
    upscale = int(round((last.shape[0] / num_out_ch) ** 0.5))
    net = SRVGGNetCompact(num_in_ch=first.shape[1], num_out_ch=num_out_ch, num_feat=first.shape[0],
                          num_conv=num_conv, upscale=upscale)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"not an SRVGGNetCompact state dict: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return net
