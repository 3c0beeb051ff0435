"""streampick: live cryo-EM particle picking with a positive-unlabeled CNN.

The few names a script needs::

    import streampick

    micrograph = streampick.read_micrograph("mic.mrc")          # validated, float32, with pixel size
    model = streampick.load_model("topaz:resnet16_u64")         # or a .pt checkpoint / .sav file
    picks = streampick.pick_micrograph(micrograph, model, target_pixel_size=8.0, radius="70A")
    picks.x, picks.y, picks.score                                 # original pixels, logits, best first

Names are imported on first use, so ``import streampick`` stays light (no torch) for the monitor and CLI.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "read_micrograph": "streampick.io.micrograph",
    "Micrograph": "streampick.io.micrograph",
    "load_model": "streampick.nets.checkpoint",
    "prepare_for_inference": "streampick.nets.checkpoint",
    "pick_micrograph": "streampick.pick",
    "Picks": "streampick.picks",
    "StreampickError": "streampick.errors",
    "MicrographError": "streampick.errors",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'streampick' has no attribute {name!r}")
