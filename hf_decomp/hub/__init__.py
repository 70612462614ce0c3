"""Decomposed models as Hugging Face models: config, model, model card, Hub upload and download.

Importing this package registers ``DecompConfig`` / ``DecomposedForImageClassification`` (and the class
specialists' ``SpecialistConfig`` / ``SpecialistForImageClassification``) with ``AutoConfig`` and
``AutoModelForImageClassification``, so
``AutoModelForImageClassification.from_pretrained(folder)`` and ``pipeline(...)`` work with local code.
Registration only adds entries: it changes no class, so the portable classes behave the same whether or
not this package was imported (bad files raise ``DecompConfigError``; ``save_pretrained`` writes the
same files; ``save_decomposed_model`` adds the indices and the model card).
"""

from transformers import AutoConfig, AutoModelForImageClassification

from ..portable.configuration_decomp import DecompConfig, DecompConfigError
from ..portable.configuration_specialist import SpecialistConfig
from ..portable.modeling_decomp import DecomposedClassifierOutput, DecomposedForImageClassification
from ..portable.modeling_specialist import SpecialistForImageClassification
from .export import build_decomposed_model, save_decomposed_model, write_extras
from .model_card import render_model_card
from .push import load_indices, push_indices, push_to_hub

AutoConfig.register(DecompConfig.model_type, DecompConfig, exist_ok=True)
AutoModelForImageClassification.register(DecompConfig, DecomposedForImageClassification, exist_ok=True)
AutoConfig.register(SpecialistConfig.model_type, SpecialistConfig, exist_ok=True)
AutoModelForImageClassification.register(SpecialistConfig, SpecialistForImageClassification, exist_ok=True)

__all__ = [
    "DecompConfig",
    "DecompConfigError",
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
