"""Inside the network: statistics, influential sets and selectivity at any layer, many layers per pass."""

from .capture import LayerCapture, LayerOutputError, pool_layer_output
from .gather import gather_layer_statistics, layer_widths, resolve_k
from .names import ALL_BLOCKS, FINAL, UnknownLayerError, block_names, layer_choices, resolve_layers
from .statistics import LayerStatistics

__all__ = [
    "ALL_BLOCKS",
    "FINAL",
    "LayerCapture",
    "LayerOutputError",
    "LayerStatistics",
    "UnknownLayerError",
    "block_names",
    "gather_layer_statistics",
    "layer_choices",
    "layer_widths",
    "pool_layer_output",
    "resolve_k",
    "resolve_layers",
]
