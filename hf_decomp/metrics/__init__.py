"""``evaluate`` metric modules shipped with hf-decomp.

evaluate's Hub metrics need the network; a module loaded from a local path works offline::

    import evaluate, hf_decomp.metrics
    metric = evaluate.load(hf_decomp.metrics.path("decomposition"))
    metric.compute(predictions=[0, 1], full_predictions=[0, 0], references=[0, 1])
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..utils.errors import DecompValueError

__all__ = ["path", "load", "shared", "METRICS"]

METRICS = ("decomposition",)


def path(name: str) -> str:
    """The folder of the packaged metric module ``name`` (give it to ``evaluate.load``)."""
    if name not in METRICS:
        raise DecompValueError(f"Unknown hf-decomp metric {name!r}; available: {', '.join(METRICS)}")
    return str(Path(str(resources.files(__name__).joinpath(name))))


def load(name: str = "decomposition", **kwargs):
    """``evaluate.load(path(name), **kwargs)``: the metric, loaded offline from the package."""
    import evaluate

    return evaluate.load(path(name), **kwargs)


_loaded: dict = {}


def shared(name: str = "decomposition"):
    """One in-memory instance per process (loading a module costs ~0.1 s; studies score many sets)."""
    if name not in _loaded:
        _loaded[name] = load(name, keep_in_memory=True)
    return _loaded[name]
