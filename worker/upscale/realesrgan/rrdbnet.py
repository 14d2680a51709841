"""RRDBNet (ESRGAN / Real-ESRGAN x4plus generator), written for this project.

Parameter names follow the reference implementation (``conv_first``,
``body.N.rdbK.convM``, ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``,
``conv_last``) so a state dict converted from the ncnn files is also a valid
upstream checkpoint (spandrel recognises it), and vice versa.

Input: float tensor (N, 3, H, W), RGB in [0, 1]. Output: (N, 3, 4H, 4W), about
[0, 1] (not clipped). Only the x4 layout (no pixel-unshuffle front end) is
built here: that is what the shipped weights are.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from worker.models.convert_ncnn import conv_keys


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs with dense connections; output = 0.2 * conv5 + input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.leaky_relu(self.conv1(x), 0.2)
        x2 = F.leaky_relu(self.conv2(torch.cat((x, x1), 1)), 0.2)
        x3 = F.leaky_relu(self.conv3(torch.cat((x, x1, x2), 1)), 0.2)
        x4 = F.leaky_relu(self.conv4(torch.cat((x, x1, x2, x3), 1)), 0.2)
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        # Residual scaling 0.2 keeps the very deep stack stable (ESRGAN paper).
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Three residual dense blocks inside one more scaled residual."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """x4 RRDBNet: ``num_block`` RRDBs, two nearest x2 upsamplings with convs."""

    scale = 4

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 23,
                 num_grow_ch: int = 32):
        super().__init__()
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = F.leaky_relu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


def from_state_dict(state: dict) -> RRDBNet:
    """Build an RRDBNet sized from ``state`` (block count, widths) and load it.

    Raises ValueError naming the missing/unexpected keys if ``state`` is not an
    x4 RRDBNet."""
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("body.")}
    num_block = max(blocks) + 1 if blocks else 0
    first = state["conv_first.weight"]
    net = RRDBNet(num_in_ch=first.shape[1], num_out_ch=state["conv_last.weight"].shape[0],
                  num_feat=first.shape[0], num_block=num_block,
                  num_grow_ch=state["body.0.rdb1.conv1.weight"].shape[0] if num_block else 32)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"not an x4 RRDBNet state dict: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return net
