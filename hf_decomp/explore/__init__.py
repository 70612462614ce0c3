"""``hf-decomp explore``: an interactive Gradio view of a decomposition (Image, Class and Model tabs)."""

from .source import ExploredModel, open_explored

__all__ = ["ExploredModel", "open_explored", "Explorer", "build_app", "launch"]


def __getattr__(name: str):
    if name in ("Explorer", "build_app", "launch"):  # gradio is imported only when the app is built
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'hf_decomp.explore' has no attribute {name!r}")
