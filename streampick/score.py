"""Scoring: normalized micrographs in, per-pixel logit maps out (at the working scale).

Two modes from the same weights:

* fast (default): the network runs strided (one output per ``stride`` pixels), and the coarse map is
  upsampled bicubically to full resolution, which places each peak to sub-pixel accuracy of the coarse grid.
  Coarse pixel ``i`` is exactly dense pixel ``stride * i`` (see ``nets.layers``), so the upsampled map
  interpolates the dense map between exact samples.
* dense (``dense=True``): every stride becomes a dilation ("filled", as Topaz scores), ~8-18× the compute.

The image is padded once by half the receptive field with zeros (the normalized background mean), so map
pixel ``(y, x)`` scores the image pixel ``(y, x)``, and handed to the network in the memory format of its
weights.  Choosing that format is not done here: :func:`~streampick.nets.checkpoint.prepare_for_inference`
(called by ``load_model``) makes a model's weights channels_last on a CPU, once.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .nets.architectures import PickerNet


def memory_format(net: torch.nn.Module) -> torch.memory_format:
    """The memory format of ``net``'s convolution weights: ``torch.channels_last`` after
    :func:`~streampick.nets.checkpoint.prepare_for_inference` on a CPU, else ``torch.contiguous_format``.

    Judged on the first 4-D weight with more than one input channel and a kernel larger than 1×1 (for the
    others, e.g. the 1-channel first convolution, both formats are the same strides)."""
    for weight in net.parameters():
        if weight.dim() == 4 and weight.shape[1] > 1 and weight.shape[2] * weight.shape[3] > 1:
            channels_last = weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
            return torch.channels_last if channels_last else torch.contiguous_format
    return torch.contiguous_format


def score_batch(net: PickerNet, images: torch.Tensor, *, dense: bool = False,
                out_stride: int | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Logit maps for a batch of normalized images of one shape.

    Args:
        net: the picker network (eval mode), on the same device as ``images``; it is not modified.  Prepare it
            once with :func:`~streampick.nets.checkpoint.prepare_for_inference` (``load_model`` does) to score
            at full speed on a CPU.
        images: (B, H, W) float32 normalized micrographs at the working scale.
        dense: score every pixel exactly instead of strided + interpolated.
        out_stride: score every ``out_stride``-th pixel exactly (a divisor of the network's stride) and
            interpolate between; default the network's stride.
        dtype: the convolutions' precision (``device.scoring_dtype``); the returned map is float32.

    Returns:
        (B, H, W) float32 logits; ``out[b, y, x]`` scores the particle-centredness of pixel (y, x).
    """
    if images.dim() != 3:
        raise ValueError(f"expected (B, H, W) images, got shape {tuple(images.shape)}")
    height, width = images.shape[-2:]
    pad = net.width // 2
    # the image in the weights' memory format (channels_last once prepared for a CPU); the net is not changed
    x = F.pad(images.unsqueeze(1), (pad, pad, pad, pad)).contiguous(memory_format=memory_format(net))
    step = 1 if dense else (out_stride or net.stride)
    low_precision = dtype != torch.float32
    with torch.inference_mode(), torch.autocast(images.device.type, dtype=dtype, enabled=low_precision):
        logits = net(x, out_stride=step).float()
        if step == 1:
            return logits[:, 0, :height, :width].contiguous()
        return _upsample(logits, step, height, width)


def _upsample(coarse: torch.Tensor, stride: int, height: int, width: int) -> torch.Tensor:
    """Bicubic upsampling with coarse pixel i landing exactly on fine pixel stride*i; edge-replicated beyond."""
    rows, cols = coarse.shape[-2:]
    fine = F.interpolate(coarse, size=((rows - 1) * stride + 1, (cols - 1) * stride + 1), mode="bicubic",
                         align_corners=True)
    fine = fine[:, :, :height, :width]
    pad_bottom, pad_right = height - fine.shape[-2], width - fine.shape[-1]
    if pad_bottom > 0 or pad_right > 0:
        fine = F.pad(fine, (0, pad_right, 0, pad_bottom), mode="replicate")
    return fine[:, 0].contiguous()
