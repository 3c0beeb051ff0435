"""The one place streampick chooses where tensors live: CUDA when present, else the CPU, said loudly."""
from __future__ import annotations

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
