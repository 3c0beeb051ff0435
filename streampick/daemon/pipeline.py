"""What the daemon does to one micrograph, as plain functions: identify, write outputs, build the message.

The engine (``streampick.pick``) does the picking; this module adds what streaming needs around it: the
content identity that makes "exactly once" independent of file names, the per-model-version output
folder (a re-pick with a new model or generation never overwrites older files), and the pick message
published for each committed result (schema in docs/protocol.md).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from ..io.coords import star_path, write_star, write_table
from ..pick import PickResult
from ..picks import Picks

_CHUNK = 1 << 22


def file_identity(path: str | Path) -> tuple[str, int]:
    """``("sha256:<hex>", size)`` of the file's bytes: the micrograph's identity, whatever its name."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return f"sha256:{digest.hexdigest()}", size


def version_folder(out_dir: Path, model_version: str, generation: int) -> Path:
    """``out_dir/<model version>[-r<generation>]``: one folder of outputs per model version and re-pick."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_version).strip("_") or "model"
    return out_dir / (safe if generation == 0 else f"{safe}-r{generation}")


def result_key(identity: str, model_version: str, generation: int) -> str:
    return f"{identity}/{model_version}/{generation}"


def write_outputs(result: PickResult, folder: Path, *, threshold: float, suffix: str) -> dict[str, str]:
    """Write one micrograph's STAR (picks ≥ threshold) and candidates table (every candidate); atomic."""
    star = star_path(result.path, folder, suffix)
    write_star(star, result.picks.above(threshold))
    candidates = folder / "candidates" / f"{result.path.stem}.txt"
    write_table(candidates, [(str(result.path), result.picks)])
    return {"star": str(star), "candidates": str(candidates)}


def picks_of(message: dict) -> Picks:
    picks = message["picks"]
    return Picks(np.asarray(picks["x"], dtype=float), np.asarray(picks["y"], dtype=float),
                 np.asarray(picks["score"], dtype=float))


def pick_message(*, seq: int, result: PickResult, identity: str, size: int, model_name: str,
                 model_version: str, generation: int, timestamps: dict, threshold: float, floor: float,
                 outputs: dict, repick: bool = False) -> dict:
    """The ``picks`` message for a committed result (``timestamps['published']`` is set when sent);
    ``repick`` marks a background re-pick (a new model version or a reprocess) rather than a new arrival."""
    picks = result.picks
    return {
        "schema": 1, "topic": "picks", "seq": seq, "key": result_key(identity, model_version, generation),
        "replay": False, "repick": repick,
        "micrograph": {"path": str(result.path), "name": result.path.stem, "identity": identity,
                       "size_bytes": size, "shape": list(result.shape), "pixel_size": result.pixel_size,
                       "working_pixel_size": result.scaled_pixel_size},
        "model": {"name": model_name, "version": model_version}, "generation": generation,
        "timestamps": dict(timestamps), "threshold": threshold, "floor": floor,
        "picks": {"x": np.round(picks.x, 2).tolist(), "y": np.round(picks.y, 2).tolist(),
                  "score": np.round(picks.score, 4).tolist()},
        "n_picks": int((picks.score >= threshold).sum()),
        "stats": {"normalization": result.gmm.as_dict(), "carbon_fraction": result.gmm.minor_weight,
                  "timings": {k: round(v, 4) for k, v in result.timings.items()}},
        "outputs": outputs,
    }
