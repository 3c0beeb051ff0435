"""The picker architectures (method.md §2): ResNet8, ResNet16 and the plain conv31/63/127 stacks.

Every network maps a normalized micrograph (N, 1, H, W) to a per-pixel logit map (N, 1, h, w) through a stack
of layers (``features``) and a 1×1 ``classifier``; no sigmoid.  ``forward(x, dense=...)`` runs it strided or
dense from the same weights (see ``layers``).  ``width`` is the receptive field and ``stride`` the total
stride in strided mode.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError
from .layers import ConvLayer, ResidualBlock


class PickerNet(nn.Module):
    """A fully convolutional feature stack plus a 1×1 classifier to one logit channel."""

    def __init__(self, layers: list[nn.Module], n_features: int) -> None:
        super().__init__()
        self.features = nn.ModuleList(layers)
        self.classifier = nn.Conv2d(n_features, 1, 1)
        self.width, self.stride = _receptive_field(layers)

    def forward(self, x: torch.Tensor, dense: bool = False, out_stride: int | None = None) -> torch.Tensor:
        """Logits of ``x`` (N, 1, H, W) at output stride ``out_stride``: 1 (= ``dense``), the network's own
        stride (default: strided), or a divisor between (layers past it run dilated instead of strided)."""
        return self.classifier(self.embed(x, dense, out_stride))

    def embed(self, x: torch.Tensor, dense: bool = False, out_stride: int | None = None) -> torch.Tensor:
        """The feature map the classifier reads, (N, n_features, h, w), on the same grid as :meth:`forward`;
        a ``width`` × ``width`` crop gives one feature vector (h = w = 1)."""
        target = 1 if dense else (out_stride or self.stride)
        taken, fill = 1, None
        for layer in self.features:
            if fill is None and taken * layer.stride > target:
                fill = 1
            x = layer(x, fill)
            if fill is None:
                taken *= layer.stride
            else:
                fill *= layer.stride
        return x


def _receptive_field(layers: list[nn.Module]) -> tuple[int, int]:
    width, stride = 1, 1
    for layer in layers:
        for extent, step in layer.span():
            width += extent * stride
            stride *= step
    return width, stride


def resnet8(units: int = 32) -> PickerNet:
    """ResNet8 (receptive field 71, stride 4)."""
    u = units
    layers = [ConvLayer(1, u, 7, stride=2), ResidualBlock(u, u, dilation=2),
              ResidualBlock(u, 2 * u, dilation=2, stride=2), ResidualBlock(2 * u, 2 * u, dilation=2),
              ConvLayer(2 * u, 4 * u, 5)]
    return PickerNet(layers, 4 * u)


def resnet16(units: int = 32) -> PickerNet:
    """ResNet16 (receptive field 91, stride 4)."""
    u = units
    layers = [ConvLayer(1, u, 7), ResidualBlock(u, u, stride=2),
              ResidualBlock(u, u), ResidualBlock(u, u), ResidualBlock(u, u),
              ResidualBlock(u, 2 * u, stride=2), ResidualBlock(2 * u, 2 * u), ResidualBlock(2 * u, 2 * u),
              ConvLayer(2 * u, 4 * u, 5)]
    return PickerNet(layers, 4 * u)


def convnet(kernels: list[int], units: int = 32, batch_norm: bool = True) -> PickerNet:
    """Plain conv stack: every layer but the last has stride 2; channels double after each non-final layer."""
    layers: list[nn.Module] = []
    nin, nout = 1, units
    for i, k in enumerate(kernels):
        last = i == len(kernels) - 1
        layers.append(ConvLayer(nin, nout, k, stride=1 if last else 2, activation="prelu",
                                batch_norm=batch_norm))
        nin, nout = nout, (nout if last else 2 * nout)
    return PickerNet(layers, nin)


ARCHITECTURES = {
    "resnet8": resnet8,
    "resnet16": resnet16,
    "conv31": lambda units=32, **kw: convnet([7, 5, 5], units, **kw),
    "conv63": lambda units=32, **kw: convnet([7, 5, 5, 5], units, **kw),
    "conv127": lambda units=32, **kw: convnet([7, 5, 5, 5, 5], units, **kw),
}


def build(architecture: str, units: int, **options) -> PickerNet:
    """Build an untrained network by name (``resnet8``, ``resnet16``, ``conv31``, ``conv63``, ``conv127``).

    Raises:
        ModelError: the name is unknown.
    """
    try:
        factory = ARCHITECTURES[architecture]
    except KeyError:
        raise ModelError(f"unknown architecture '{architecture}' (known: {', '.join(ARCHITECTURES)})") from None
    return factory(units=units, **options)
