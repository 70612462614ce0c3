"""hf-decomp: find and use class-specific features in image classifiers.

Implements "Decomposing the Deep: Finding Class Specific Filters in Deep CNNs" (Badola et al.) for
timm and transformers classifiers whose last layer is one linear layer over pooled features.
"""

__version__ = "0.1.0"

from .analysis.run import AnalysisResult, analyze, evaluate_decomposition, gather_statistics  # noqa: E402
from .method.indices import InfluentialIndices  # noqa: E402
from .method.selection import coverage_per_class, select_from_statistics, top_k_per_class  # noqa: E402
from .method.statistics import ClassStatistics  # noqa: E402
from .models import ClassifierAdapter, load_classifier  # noqa: E402
from .portable.decomposed_head import DecomposedLinear  # noqa: E402

__all__ = [
    "AnalysisResult",
    "ClassStatistics",
    "ClassifierAdapter",
    "DecomposedLinear",
    "InfluentialIndices",
    "analyze",
    "coverage_per_class",
    "evaluate_decomposition",
    "gather_statistics",
    "load_classifier",
    "select_from_statistics",
    "top_k_per_class",
    # hf_decomp.hub, imported on first use (it imports transformers and registers the Auto classes)
    "DecompConfig",
    "DecomposedForImageClassification",
    "load_indices",
    "push_indices",
    "push_to_hub",
]

_HUB_NAMES = ("DecompConfig", "DecomposedForImageClassification", "load_indices", "push_indices", "push_to_hub")


def __getattr__(name: str):
    if name in _HUB_NAMES:
        from . import hub

        return getattr(hub, name)
    raise AttributeError(f"module 'hf_decomp' has no attribute {name!r}")
