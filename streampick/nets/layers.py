"""Building blocks of the picker networks, each able to run *strided* or *dense* ("filled").

A network is run in one of two modes from the same weights:

* strided (``fill=None``): every layer uses its own stride; the output map is the input subsampled by the
  network's total stride.  This is the fast mode.
* dense (``fill=k``, the running stride so far): every stride becomes a dilation of later layers, so the output
  map has the input's resolution.  Strided output ``(i, j)`` equals dense output ``(s*i, s*j)`` for total
  stride ``s``, which is what makes fast and dense scoring comparable.

Convolutions are *valid* (no padding): the caller pads the image once by half the receptive field.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv(conv: nn.Conv2d, x: torch.Tensor, stride: int, dilation: int, fill: int | None) -> torch.Tensor:
    if fill is None:
        return F.conv2d(x, conv.weight, conv.bias, stride=stride, dilation=dilation)
    return F.conv2d(x, conv.weight, conv.bias, stride=1, dilation=dilation * fill)


class ConvLayer(nn.Module):
    """conv k×k (valid) → optional batch norm → activation (ReLU, PReLU or none)."""

    def __init__(self, nin: int, nout: int, kernel: int, *, stride: int = 1, dilation: int = 1,
                 activation: str | None = "relu", batch_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(nin, nout, kernel, stride=stride, dilation=dilation, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(nout) if batch_norm else None
        self.act = {"relu": nn.ReLU(), "prelu": nn.PReLU(nout), None: nn.Identity()}[activation]
        self.stride, self.dilation, self.kernel = stride, dilation, kernel

    def span(self) -> list[tuple[int, int]]:
        """(effective kernel extent − 1, stride) of each spatial operation, for receptive-field bookkeeping."""
        return [(self.dilation * (self.kernel - 1), self.stride)]

    def forward(self, x: torch.Tensor, fill: int | None = None) -> torch.Tensor:
        x = _conv(self.conv, x, self.stride, self.dilation, fill)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)


class ResidualBlock(nn.Module):
    """conv3×3 (nin→nin) → ReLU → conv3×3 (nin→nout, dilation d, stride s); skip = the centre-cropped
    input (a 1×1 projection when the width changes, else subsampled by s); add; ReLU."""

    def __init__(self, nin: int, nout: int, *, dilation: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(nin, nin, 3)
        self.conv1 = nn.Conv2d(nin, nout, 3, dilation=dilation, stride=stride)
        self.proj = nn.Conv2d(nin, nout, 1, stride=stride, bias=False) if nin != nout else None
        self.dilation, self.stride = dilation, stride

    def span(self) -> list[tuple[int, int]]:
        return [(2, 1), (2 * self.dilation, self.stride)]

    def forward(self, x: torch.Tensor, fill: int | None = None) -> torch.Tensor:
        step = 1 if fill is None else fill
        h = F.relu(_conv(self.conv0, x, 1, 1, fill))
        h = _conv(self.conv1, h, self.stride, self.dilation, fill)
        edge = step * (1 + self.dilation)
        skip = x[:, :, edge:-edge, edge:-edge]
        if self.proj is not None:
            skip = F.conv2d(skip, self.proj.weight, stride=1 if fill is not None else self.stride)
        elif self.stride > 1 and fill is None:
            skip = skip[:, :, ::self.stride, ::self.stride]
        return F.relu(h + skip)
