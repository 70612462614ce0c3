"""Which layers to look inside: module names, timm ``feature_info`` names and shortcuts.

Names are those ``model.named_modules()`` prints (``layer2.1``, ``blocks.11``), relative to the
wrapped network (``adapter.model``). ``final`` is the pooled input of the final linear layer (what
``analyze`` uses today); ``all-blocks`` is every block output (see :func:`block_names`).
"""

from __future__ import annotations

import difflib

import torch.nn as nn

from ..utils.errors import DecompValueError

__all__ = ["FINAL", "ALL_BLOCKS", "resolve_layers", "block_names", "layer_choices", "UnknownLayerError"]

FINAL = "final"
ALL_BLOCKS = "all-blocks"


class UnknownLayerError(DecompValueError):
    """A layer name matches no module of the model."""


def _network(model_or_adapter) -> nn.Module:
    return getattr(model_or_adapter, "model", model_or_adapter)


def _is_container_of_blocks(module: nn.Module) -> bool:
    """A Sequential / ModuleList whose every child has children of its own (blocks, not conv+bn)."""
    if not isinstance(module, (nn.Sequential, nn.ModuleList)):
        return False
    children = list(module.children())
    return bool(children) and all(any(True for _ in child.children()) for child in children)


def block_names(model_or_adapter) -> list[str]:
    """Every block of the network, in forward order.

    A block is a child of the innermost Sequential/ModuleList holding only composite modules: the
    ``layerN.i`` of ResNets, ``blocks.i`` of ViTs, ``stages.s.blocks.i`` of ConvNeXt, ``encoder.layer.i``
    of transformers' ViT. "Innermost" skips stage lists whose items contain such a list themselves.
    """
    network = _network(model_or_adapter)
    containers = [name for name, module in network.named_modules() if name and _is_container_of_blocks(module)]
    innermost = [c for c in containers if not any(other.startswith(c + ".") for other in containers)]
    names = []
    for container in innermost:
        names.extend(f"{container}.{child}" for child, _ in network.get_submodule(container).named_children())
    order = {name: i for i, (name, _) in enumerate(network.named_modules())}
    return sorted(names, key=order.__getitem__)


def _feature_info_names(network: nn.Module) -> dict[str, str]:
    """timm's ``feature_info`` entries: ``feature_info.N`` -> module name (for ``features_only`` users)."""
    info = getattr(network, "feature_info", None)
    if not isinstance(info, list):
        return {}
    return {f"feature_info.{i}": entry["module"] for i, entry in enumerate(info)
            if isinstance(entry, dict) and entry.get("module")}


def layer_choices(model_or_adapter) -> list[str]:
    """Every name :func:`resolve_layers` accepts, in forward order (what ``--list-layers`` prints)."""
    network = _network(model_or_adapter)
    modules = [name for name, _ in network.named_modules() if name]
    return [FINAL, ALL_BLOCKS, *_feature_info_names(network), *modules]


def resolve_layers(model_or_adapter, names) -> list[str]:
    """Module names for ``names`` (module names, ``feature_info.N``, ``all-blocks``, ``final``).

    Returns unique names in forward order with ``final`` (when asked for) last. Raises
    :class:`UnknownLayerError` listing close matches for a name the model does not have.

    Example:
        >>> resolve_layers(adapter, ["layer1.0", "final"])  # doctest: +SKIP
        ['layer1.0', 'final']
    """
    if isinstance(names, str):
        names = [names]
    network = _network(model_or_adapter)
    modules = {name: i for i, (name, _) in enumerate(network.named_modules()) if name}
    aliases = _feature_info_names(network)
    chosen: list[str] = []
    for name in names:
        if name == FINAL:
            chosen.append(FINAL)
        elif name == ALL_BLOCKS:
            blocks = block_names(network)
            if not blocks:
                raise UnknownLayerError(
                    f"{ALL_BLOCKS}: found no blocks (Sequential/ModuleList of composite modules) in "
                    f"{type(network).__name__}; name the layers instead (list them with --list-layers).")
            chosen.extend(blocks)
        elif name in modules:
            chosen.append(name)
        elif name in aliases:
            chosen.append(aliases[name])
        else:
            close = difflib.get_close_matches(name, [*modules, *aliases, FINAL, ALL_BLOCKS], n=5, cutoff=0.6)
            hint = f" Close matches: {', '.join(close)}." if close else ""
            raise UnknownLayerError(
                f"layer {name!r} is not a module of {type(network).__name__}.{hint} List every layer name with "
                f"`hf-decomp analyze --model MODEL --list-layers` (also accepted by selectivity) (or hf_decomp.layers.layer_choices(adapter)).")
    unique = list(dict.fromkeys(chosen))
    inner = sorted((n for n in unique if n != FINAL), key=modules.__getitem__)
    return inner + ([FINAL] if FINAL in unique else [])
