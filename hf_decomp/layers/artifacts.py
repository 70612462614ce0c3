"""Per-layer influential sets: Algorithm 1 at every layer, saved as ordinary indices artifacts.

Layout inside a results folder (the final layer's files stay where they always were)::

    indices.json, indices.safetensors          final layer
    layers/index.json                          {"format", "layers": {name: {"path", "width", "k1", "k2", ...}}}
    layers/<module name>/indices.json, ...     one folder per layer, same format, layer and width in metadata
"""

from __future__ import annotations

import json
from pathlib import Path

from ..method.indices import InfluentialIndices
from ..method.selection import select_from_statistics
from ..utils.errors import DecompFileError, DecompValueError
from ..utils.files import atomic_write_json
from .gather import resolve_k
from .names import FINAL

__all__ = ["LAYERS_DIR", "LAYER_INDEX_FORMAT", "layer_index_sets", "save_layer_indices", "layer_indices_dir",
           "available_layers"]

LAYERS_DIR = "layers"
LAYER_INDEX_JSON = "index.json"
LAYER_INDEX_FORMAT = "hf-decomp-layer-index/1"


def layer_index_sets(layer_stats: dict, label_names: list[str], *, k1, k2=None, coverage: float | None = None,
                     metadata: dict | None = None) -> dict[str, InfluentialIndices]:
    """Algorithm 1 sets of every layer: k1, k2 absolute or fractions of each layer's width; or coverage."""
    if (k2 is None) == (coverage is None):
        raise DecompValueError("give either k2 or coverage for the per-layer sets")
    result = {}
    for name, stats in layer_stats.items():
        width = stats.num_features
        layer_k1 = resolve_k("k1", k1, width, name)
        layer_k2 = None if k2 is None else resolve_k("k2", k2, width, name)
        empty = stats.empty_classes()
        if empty:
            raise DecompValueError(
                f"classes {[label_names[c] for c in empty]} have no samples in the statistics split, so layer "
                f"{name!r} has no sets for them (only the final layer has a label-free fallback); use a split "
                f"(or a larger --limit) with samples of every class.")
        sets, _ = select_from_statistics(stats, k1=layer_k1, k2=layer_k2, coverage=coverage)
        result[name] = InfluentialIndices(
            sets=sets, num_features=width, label_names=label_names,
            metadata={**(metadata or {}), "layer": name, "width": width, "k1": layer_k1, "k2": layer_k2,
                      "k1_requested": k1, "k2_requested": k2, "coverage": coverage,
                      "samples": stats.num_samples})
    return result


def save_layer_indices(out_dir: str | Path, layer_indices: dict[str, InfluentialIndices]) -> None:
    """Write one indices folder per layer and ``layers/index.json`` listing them (final layer excluded)."""
    root = Path(out_dir) / LAYERS_DIR
    entries = {}
    for name, indices in layer_indices.items():
        if name == FINAL:
            continue
        indices.save(root / name)
        meta = indices.metadata
        entries[name] = {"path": name, "width": indices.num_features, "k1": meta.get("k1"), "k2": meta.get("k2"),
                         "coverage": meta.get("coverage"),
                         "mean_set_size": indices.multiply_adds / indices.num_classes}
    atomic_write_json(root / LAYER_INDEX_JSON, {"format": LAYER_INDEX_FORMAT, "layers": entries})


def available_layers(out_dir: str | Path) -> list[str]:
    """Layers with saved sets in a results folder (``final`` first)."""
    index = Path(out_dir) / LAYERS_DIR / LAYER_INDEX_JSON
    if not index.is_file():
        return [FINAL]
    data = json.loads(index.read_text())
    if data.get("format") != LAYER_INDEX_FORMAT:
        raise DecompValueError(f"{index} has format {data.get('format')!r}; this version reads {LAYER_INDEX_FORMAT!r}")
    return [FINAL, *data["layers"]]


def layer_indices_dir(out_dir: str | Path, layer: str | None) -> Path:
    """The folder holding ``layer``'s indices in a results folder; raises listing the layers it has."""
    out_dir = Path(out_dir)
    if layer in (None, FINAL):
        return out_dir
    layers = available_layers(out_dir)
    if layer not in layers:
        raise DecompFileError(
            f"{out_dir} has no sets for layer {layer!r}; it has {', '.join(layers)}. Run "
            f"`hf-decomp analyze --layers {layer}` to compute them.")
    return out_dir / LAYERS_DIR / json.loads((out_dir / LAYERS_DIR / LAYER_INDEX_JSON).read_text())["layers"][layer]["path"]
