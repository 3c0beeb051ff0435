"""The one place streampick chooses where tensors live (CUDA when present, else the CPU, said loudly) and in
which precision the network runs (bfloat16 where the hardware computes it natively, else float32)."""
from __future__ import annotations

import functools
import logging

import torch

from .errors import ConfigError

log = logging.getLogger(__name__)


def select_device(requested: str = "auto") -> torch.device:
    """Resolve ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` to a device and log the choice.

    Raises:
        ConfigError: ``cuda`` was asked for but no CUDA device is usable, or the name is unknown.
    """
    name = (requested or "auto").strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: '{requested}' requested but torch sees no CUDA device")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device: unknown device '{requested}' ({err})") from None
    if device.type == "cuda":
        log.warning("scoring on GPU %s (%s)", device, torch.cuda.get_device_name(device))
    else:
        log.warning("scoring on CPU with %d threads (no CUDA device in use)", torch.get_num_threads())
    return device


PRECISIONS = ("auto", "float32", "bfloat16")


@functools.lru_cache(maxsize=8)
def scoring_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The dtype the network's convolutions run in on ``device``.

    ``auto`` is bfloat16 where the hardware has native bfloat16 arithmetic (a CPU with AVX512-BF16 or AMX, a
    CUDA device with bf16 support) and float32 elsewhere: ~2.5x faster on such CPUs, and on simulated and
    real micrographs the AP is unchanged within 0.002 (docs/benchmarks.md).  Inputs, score maps and
    everything after scoring stay float32.

    Raises:
        ConfigError: an unknown precision name.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"picking.precision: must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else _cpu_has_native_bf16()
        precision = "bfloat16" if native else "float32"
    log.info("network precision on %s: %s", device, precision)
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def _cpu_has_native_bf16() -> bool:
    try:  # oneDNN's own test for AVX512-BF16 / AMX; private, so guard it
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
