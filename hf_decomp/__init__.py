"""hf-decomp: find and use class-specific features in image classifiers.

Implements "Decomposing the Deep: Finding Class Specific Filters in Deep CNNs" (Badola et al.) for
timm and transformers classifiers whose last layer is one linear layer over pooled features.

Importing the package loads nothing heavy: each public name imports its module on first use (PEP 562),
so ``hf-decomp --help`` starts without torch. ``import hf_decomp.models`` (or the first use of
``load_classifier``) registers the CIFAR ResNets in timm.
"""

from __future__ import annotations

import importlib

from .utils.version import __version__  # noqa: F401  (re-exported)

# public name -> module that defines it (imported on first use)
_LAZY = {
    "AnalysisMetrics": ".analysis.results",
    "AnalysisResult": ".analysis.run",
    "AnalysisSettings": ".analysis.settings",
    "analyze": ".analysis.run",
    "evaluate_decomposition": ".analysis.run",
    "gather_statistics": ".analysis.run",
    "get_criterion": ".method.criteria",
    "list_criteria": ".method.criteria",
    "register_criterion": ".method.criteria",
    "InfluentialIndices": ".method.indices",
    "coverage_per_class": ".method.selection",
    "select_from_statistics": ".method.selection",
    "top_k_per_class": ".method.selection",
    "ClassStatistics": ".method.statistics",
    "ClassifierAdapter": ".models",
    "load_classifier": ".models",
    "DecomposedLinear": ".portable.decomposed_head",
    "FinetuneSettings": ".recovery.settings",
    "RefitSettings": ".recovery.settings",
    # hf_decomp.hub imports transformers and registers the Auto classes
    "DecompConfig": ".hub",
    "DecompConfigError": ".hub",
    "DecomposedForImageClassification": ".hub",
    "load_indices": ".hub",
    "push_indices": ".hub",
    "push_to_hub": ".hub",
}

__all__ = sorted(_LAZY)
_SUBPACKAGES = ("analysis", "commands", "data", "explore", "hub", "layers", "method", "metrics", "models", "passes",
                "portable", "recovery", "specialize", "studies", "utils")


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    if name in _SUBPACKAGES:  # `import hf_decomp; hf_decomp.models` as with an eager package
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'hf_decomp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))
