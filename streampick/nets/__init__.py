"""Picker networks: architectures, strided/dense evaluation, checkpoints and Topaz weight import."""
from .architectures import ARCHITECTURES, PickerNet, build
from .checkpoint import Model, ModelCard, find_topaz_pretrained, load_model, prepare_for_inference, save_model

__all__ = ["ARCHITECTURES", "PickerNet", "build", "Model", "ModelCard", "find_topaz_pretrained", "load_model",
           "prepare_for_inference", "save_model"]
