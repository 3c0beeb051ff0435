"""The optional autoencoder regularizer (``streampick train --autoencoder W``; Topaz's option of the same name).

A small decoder reconstructs each training crop from the one feature vector the picker's classifier reads
for it (:meth:`~streampick.nets.architectures.PickerNet.embed` of a receptive-field crop), and
W × the reconstruction's mean squared error per pixel is added to the PU loss.  The features must then
describe the whole crop, not only what separates the few labelled particles from the rest: a regularizer
for very sparse labels (Bepler et al. 2019 report that it helps when very few particles are labelled).
Topaz sums the squared error over the pixels of each crop instead of averaging it, so a Topaz weight W
corresponds to ours W × (reconstructed pixels), e.g. × 3969 for its 63² reconstruction of a resnet8 crop.

Measured (simulated set: 6 micrographs of 1024² at 2 Å/px, 256² at the 8 Å/px working scale; 4 train with 5,
14 or ~90 labelled particles, 2 held out against the full truth; resnet8_u32 from scratch, GE-binomial,
4 × 50 updates of 64 crops, 3 seeds): the best held-out AP with W = 0.3, 1 or 3 was within the seeds' spread
(±0.03) of W = 0 at every label count (5 labels: 0.853 at W = 0, 0.81-0.85 with; 14: 0.834, 0.81-0.85;
~90: 0.870 and 0.870 at W = 1).  With 14 labels it raised the AP after the first 50 updates (0.48 → 0.63 at
W = 3) but not the best.  So no gain shown on this easy synthetic data; its value on real micrographs with
very few labels is untested here.  Each update costs ~1.4-1.8x as much on a CPU (resnet8_u32, batch 256:
0.28 s → ~0.4-0.5 s on one thread).

The decoder lives beside the network during training and is dropped afterwards: it is never part of the
picker's state dict, so a checkpoint trained with it is the same picker as one trained without.

Shape: a linear layer turns the feature vector into a ``seed`` × ``seed`` map of 8·units channels
(seed = ⌈width / 16⌉); three transposed convolutions (kernel 4, stride 2, each halving the channels, with
batch norm and ReLU) and a fourth to one channel double it four times to ≥ width, and the centre ``width``
× ``width`` is the reconstruction.  (A 3×3 convolution to one channel at full size, or batch norm there,
would each cost more than all the rest on a CPU.)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DEPTH = 4  # upsampling stages: the seed map doubles this many times


class CropDecoder(nn.Module):
    """Feature vectors (N, n_features[, 1, 1]) → reconstructed crops (N, 1, width, width).

    Args:
        n_features: the picker's feature channels (its classifier's input).
        width: the crop size, the picker's receptive field.
        units: channels of the last hidden stage (the first has 2**(DEPTH - 1) × as many).
    """

    def __init__(self, n_features: int, width: int, units: int = 16) -> None:
        super().__init__()
        self.width = width
        self.seed_size = math.ceil(width / 2**DEPTH)
        channels = [units * 2**(DEPTH - 1 - i) for i in range(DEPTH)] + [1]
        self.seed = nn.Linear(n_features, channels[0] * self.seed_size**2)
        stages: list[nn.Module] = []
        for nin, nout in zip(channels[:-2], channels[1:-1]):
            stages += [nn.ConvTranspose2d(nin, nout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(nout),
                       nn.ReLU()]
        stages.append(nn.ConvTranspose2d(channels[-2], 1, 4, stride=2, padding=1))
        self.upsample = nn.Sequential(*stages)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.seed(features.flatten(1)))
        x = self.upsample(x.view(x.shape[0], -1, self.seed_size, self.seed_size))
        start = (x.shape[-1] - self.width) // 2
        return x[:, :, start:start + self.width, start:start + self.width]


def build_decoder(net: nn.Module, seed: int = 0) -> CropDecoder:
    """A decoder for ``net``'s crops, initialized from ``seed`` without touching torch's global generator,
    on the device of ``net``'s weights."""
    device = next(net.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = CropDecoder(net.classifier.in_channels, net.width)
    return decoder.to(device)


def reconstruction_error(decoder: CropDecoder, features: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
    """Mean squared error per pixel of the decoder's reconstruction of ``crops`` (N, 1, w, w) from their
    feature vectors, in float32."""
    return F.mse_loss(decoder(features).float(), crops.float())
