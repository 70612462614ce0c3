"""Decomposed models as Hugging Face models: config, model, model card, Hub upload and download.

Importing this package registers ``DecompConfig`` / ``DecomposedForImageClassification`` with
``AutoConfig`` and ``AutoModelForImageClassification`` (and for ``trust_remote_code`` saving), so
``AutoModelForImageClassification.from_pretrained(folder)`` and ``pipeline(...)`` work with local code.
"""

from transformers import AutoConfig, AutoModelForImageClassification

from ..portable.configuration_decomp import DecompConfig
from ..portable.modeling_decomp import DecomposedClassifierOutput, DecomposedForImageClassification
from ..utils.errors import DecompValueError
from .export import build_decomposed_model, save_decomposed_model, write_extras
from .model_card import render_model_card
from .push import load_indices, push_indices, push_to_hub

AutoConfig.register(DecompConfig.model_type, DecompConfig, exist_ok=True)
AutoModelForImageClassification.register(DecompConfig, DecomposedForImageClassification, exist_ok=True)
# Saved folders carry configuration_decomp.py / modeling_decomp.py and an auto_map, so they also load
# with trust_remote_code=True where hf-decomp is not installed.
DecompConfig.register_for_auto_class()
DecomposedForImageClassification.register_for_auto_class("AutoModelForImageClassification")
DecomposedForImageClassification._save_extras_hook = staticmethod(write_extras)
# Bad config.json values raise hf-decomp's DecompValueError (a ValueError) when hf-decomp is installed.
DecompConfig.error_class = DecompValueError

__all__ = [
    "DecompConfig",
    "DecomposedClassifierOutput",
    "DecomposedForImageClassification",
    "build_decomposed_model",
    "load_indices",
    "push_indices",
    "push_to_hub",
    "render_model_card",
    "save_decomposed_model",
    "write_extras",
]
