"""Model files: our own checkpoints (weights + model card) and Topaz's pretrained detectors.

A streampick checkpoint is one ``.pt`` file holding ``{"format", "card", "state_dict"}`` and nothing but
plain types and tensors, so it loads with ``torch.load(weights_only=True)``; the card says everything needed
to use the weights (architecture, units, pixel size at training, particle diameter, threshold, version,
training data, metrics).  Topaz's pretrained detector files (``resnet16_u64.sav`` ...) are plain state dicts
in a slightly different key layout; ``load_model("topaz:resnet16_u64")`` finds them inside an installed
``topaz-em`` *without importing it* (its CLI needs torchvision).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ModelError
from ..io.atomic import atomic_write_bytes, atomic_write_text
from .architectures import PickerNet, build

FORMAT = "streampick-model/1"


def shipped_models_folder() -> Path:
    """Where the shipped models are: ``streampick/_models`` in an installed package (setup.py maps the
    checkout's top-level ``models/`` there), else the checkout's ``models/`` (source tree, editable install)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "_models"
    return installed if installed.is_dir() else package.parent / "models"


SHIPPED_MODELS = shipped_models_folder()
_TOPAZ_NAME = re.compile(r"^(resnet8|resnet16)_u(32|64)$")


@dataclass
class ModelCard:
    """What a set of weights is and how to use it."""

    name: str
    architecture: str
    units: int
    batch_norm: bool = False
    pixel_size: float | None = None  # Å/px of the images it was trained on (the working scale)
    particle_diameter: float | None = None  # Å
    threshold: float | None = None  # default score threshold (logit)
    smoothing: float = 0.0  # Å: σ of the Gaussian the score map is smoothed with before extraction; 0: none
    version: str = "1"
    source: str = "streampick"
    training_data: str = ""
    metrics: dict = field(default_factory=dict)
    command: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelCard":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelError(f"model card has unknown keys: {', '.join(sorted(unknown))}")
        smoothing = data.get("smoothing", 0.0)
        if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing < float("inf"):
            raise ModelError(f"model card: smoothing must be a length in Å ≥ 0, got {smoothing!r}")
        return cls(**data)


@dataclass
class Model:
    """A network ready to score, with its card."""

    net: PickerNet
    card: ModelCard


def save_model(path: str | Path, model: Model) -> None:
    """Write ``model`` as a streampick checkpoint plus a human-readable ``<path>.card.json`` beside it."""
    path = Path(path)
    buffer = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.net.state_dict().items()}
    torch.save({"format": FORMAT, "card": model.card.to_dict(), "state_dict": state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_text(path.with_suffix(".card.json"), json.dumps(model.card.to_dict(), indent=2) + "\n")


def load_model(spec: str | Path, device: torch.device | str = "cpu") -> Model:
    """Resolve and load a model on ``device``, ready to score (:func:`prepare_for_inference`).

    ``spec`` is one of: a streampick checkpoint path (``.pt``); a Topaz state-dict path (``.sav``);
    ``topaz:NAME`` (a pretrained detector inside an installed ``topaz-em``, e.g. ``topaz:resnet16_u64``);
    or the name of a model shipped in ``models/`` (``$STREAMPICK_MODELS`` is searched first).

    Raises:
        ModelError: the spec cannot be resolved, or the file is not a loadable model.
    """
    spec = str(spec)
    if spec.startswith("topaz:"):
        model = _load_topaz(find_topaz_pretrained(spec.split(":", 1)[1]))
    else:
        path = resolve_model_path(spec)
        model = _load_topaz(path) if path.suffix == ".sav" else _load_checkpoint(path)
    return prepare_for_inference(model, device)


def prepare_for_inference(model: Model, device: torch.device | str | None = None) -> Model:
    """Make ``model`` ready to score, in place, and return it: on ``device`` (default: where its weights are),
    in eval mode, and on a CPU with its convolution weights in channels_last memory format, which oneDNN
    convolves much faster: 1.3-2x on one 1024² image (resnet8_u32, resnet16_u64; bfloat16 and float32; e.g.
    resnet16_u64 in bfloat16 on one thread 3.4 s against 7.6 s with contiguous weights and channels_last
    images, the format ``score_batch`` used before).  On CUDA the weights stay contiguous.

    ``load_model`` calls this; call it on a network you build or train yourself before picking with it.
    Scoring (``score.score_batch``) never changes a network: it feeds images in the weights' own format.
    Training wants contiguous weights (bfloat16 training is faster so), which ``train`` restores.
    """
    device = torch.device(device) if device is not None else next(model.net.parameters()).device
    model.net.to(device).eval()
    if device.type == "cpu":
        model.net.to(memory_format=torch.channels_last)
    return model


def model_version(model: Model) -> str:
    """The version string stamped on every result of ``model`` (and the key workers cache it under)."""
    card = model.card
    return card.version if card.source == "topaz" else f"{card.name}:{card.version}"


def resolve_model_path(spec: str) -> Path:
    """The checkpoint file a model name or path refers to (``$STREAMPICK_MODELS`` first, then the shipped
    models); raises ModelError when there is none."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    for folder in [os.environ.get("STREAMPICK_MODELS"), SHIPPED_MODELS]:
        if folder and (Path(folder) / f"{spec}.pt").is_file():
            return Path(folder) / f"{spec}.pt"
    shipped = sorted(p.stem for p in SHIPPED_MODELS.glob("*.pt"))
    raise ModelError(f"model '{spec}': no such file, and no shipped model of that name in {SHIPPED_MODELS} "
                     f"(shipped: {', '.join(shipped) or 'none'})")


def _read_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file; all mean "not loadable"
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"{path}: not a loadable weights file ({first_line})") from None


def _load_checkpoint(path: Path) -> Model:
    data = _read_state(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelError(f"{path}: not a streampick checkpoint (expected format '{FORMAT}')")
    card = ModelCard.from_dict(data["card"])
    net = build(card.architecture, card.units, **({"batch_norm": card.batch_norm}
                                                   if card.architecture.startswith("conv") else {}))
    _load_state(net, data["state_dict"], path)
    return Model(net, card)


def _load_state(net: PickerNet, state: dict, path: Path) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        summary = " ".join(str(err).split())[:300]
        raise ModelError(f"{path}: weights do not fit the architecture ({summary})") from None


def find_topaz_pretrained(name: str) -> Path:
    """Path of Topaz's pretrained detector ``name`` (e.g. ``resnet16_u64``) inside an installed topaz-em.

    Raises:
        ModelError: topaz-em is not installed or has no such model.
    """
    if not _TOPAZ_NAME.match(name):
        raise ModelError(f"topaz:{name}: unknown Topaz model (known: resnet8_u32, resnet8_u64, "
                         "resnet16_u32, resnet16_u64)")
    spec = importlib.util.find_spec("topaz")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"topaz:{name}: topaz-em is not installed "
                         "(pip install --no-deps topaz-em, or pass the .sav file's path)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "pretrained" / "detector" / f"{name}.sav"
        if path.is_file():
            return path
    raise ModelError(f"topaz:{name}: not found in the installed topaz-em")


def topaz_to_streampick_keys(state: dict) -> dict:
    """Rename a Topaz detector's state dict (``features.features.<i>.…``) to ours (``features.<i>.…``)."""
    renamed = {}
    for key, value in state.items():
        if key.startswith("features.features."):
            key = key[len("features."):]
        elif not key.startswith("classifier."):
            raise ModelError(f"unexpected key '{key}' in a Topaz state dict")
        renamed[key] = value
    return renamed


def infer_topaz_architecture(state: dict) -> tuple[str, int]:
    """(architecture, units) of a Topaz ResNet detector, read from its state dict's layout."""
    indices = {int(k.split(".")[2]) for k in state if k.startswith("features.features.")}
    first = state.get("features.features.0.conv.weight")
    if first is None or not indices:
        raise ModelError("state dict has no Topaz feature layers")
    depth = max(indices) + 1
    architecture = {5: "resnet8", 9: "resnet16"}.get(depth)
    if architecture is None:
        raise ModelError(f"Topaz state dict with {depth} feature layers is not resnet8 or resnet16")
    return architecture, int(first.shape[0])


def _load_topaz(path: Path) -> Model:
    state = _read_state(path)
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a state dict (a model saved by 'topaz train' is a pickled module; "
                         "re-save its state_dict)")
    architecture, units = infer_topaz_architecture(state)
    net = build(architecture, units)
    _load_state(net, topaz_to_streampick_keys(state), path)
    card = ModelCard(name=path.stem, architecture=architecture, units=units, source="topaz",
                     version=f"topaz:{path.stem}", training_data="Topaz pretrained detector (Bepler et al. 2019)")
    return Model(net, card)
