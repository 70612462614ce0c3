"""Model loading: every classifier becomes a :class:`ClassifierAdapter`."""

from .adapter import ClassifierAdapter, split_linear_head
from .cifar_resnet import CIFAR10_LABELS, CifarResNet
from .loading import ACCEPTED_MODEL_FORMS, adapt_timm_model, adapt_transformers_model, load_classifier

__all__ = [
    "ACCEPTED_MODEL_FORMS",
    "CIFAR10_LABELS",
    "ClassifierAdapter",
    "CifarResNet",
    "adapt_timm_model",
    "adapt_transformers_model",
    "load_classifier",
    "split_linear_head",
]
