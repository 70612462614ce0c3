"""Statistics of many layers in one pass over the data (the final layer's features included)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..data import ImageSplit
from ..models import ClassifierAdapter
from ..passes.features import FeaturePass, make_accelerator
from ..passes.resumable import check_labels, pass_checkpoint, resumable_pass
from ..utils.checks import resolve_k
from ..utils.errors import DecompValueError
from .capture import LayerCapture
from .names import FINAL, resolve_layers
from .statistics import LayerStatistics

__all__ = ["gather_layer_statistics", "layer_widths", "resolve_k"]  # resolve_k: from utils.checks


@torch.no_grad()
def layer_widths(adapter: ClassifierAdapter, layers: list[str]) -> dict[str, int]:
    """Channels of each layer's pooled output, from one forward of a blank input (and checks its shape)."""
    inner = [name for name in layers if name != FINAL]
    widths = {}
    if inner:
        device = adapter.weight.device
        probe = torch.zeros(1, *adapter.input_size, device=device, dtype=adapter.weight.dtype)
        with LayerCapture(adapter.model, inner) as capture, torch.inference_mode():
            adapter.forward_features(probe)
            pooled = capture.take()
        widths.update({name: int(pooled[name].shape[1]) for name in inner})
    if FINAL in layers:
        widths[FINAL] = adapter.num_features
    return {name: widths[name] for name in layers}


def gather_layer_statistics(
    adapter: ClassifierAdapter,
    split: ImageSplit,
    layers: Iterable[str],
    k1_values: Iterable[int | float] = (5,),
    accelerator=None,
    batch_size: int = 256,
    num_workers: int | None = None,
    *,
    mass_fractions: Iterable[float] = (),
    rank_histograms: bool = False,
    checkpoints=None,
    run_key: dict | None = None,
    channels_last: bool = False,
    decode: str = "cpu",
    return_info: bool = False,
):
    """Per-layer :class:`LayerStatistics` (a :class:`~hf_decomp.method.statistics.ClassStatistics`) in one pass.

    Args:
        layers: names for :func:`~hf_decomp.layers.resolve_layers` (module names, ``all-blocks``, ``final``).
        k1_values: per sample votes; an int is used as is in every layer, a float in (0, 1) is that
            fraction of each layer's width; or a dict {resolved layer name: k1 values} per layer.
        mass_fractions: Psi_k fractions whose count histograms to keep (selectivity).
        rank_histograms: keep (C, d, d) rank counts per layer (fractional-k selection; narrow layers only).
        checkpoints / run_key / channels_last / decode: as :func:`~hf_decomp.analysis.run.gather_statistics`.
        return_info: also return the pass counters (rows, skipped, resized, nonfinite_samples).

    Returns:
        {layer name: statistics} in forward order (``final`` last), on the CPU; with ``return_info``,
        ``(statistics, info)``. The forward hooks are removed when the pass ends, also on errors.

    Example:
        >>> stats = gather_layer_statistics(adapter, split, ["all-blocks", "final"], k1_values=(0.1,))  # doctest: +SKIP
        >>> stats["layer3.2"].histogram(6).shape  # doctest: +SKIP
        torch.Size([10, 64])
    """
    accelerator = accelerator or make_accelerator()
    names = resolve_layers(adapter, list(layers))
    if not names:
        raise DecompValueError("no layers given; name at least one (e.g. 'final' or 'all-blocks')")
    per_layer = dict(k1_values) if isinstance(k1_values, dict) else None
    k1_values = None if per_layer is not None else list(k1_values)
    widths = layer_widths(adapter, names)
    stats = {
        name: LayerStatistics(adapter.num_classes, width,
                              sorted({resolve_k("k1", k, width, name)
                                      for k in (per_layer.get(name, ()) if per_layer is not None else k1_values)}),
                              device=accelerator.device, mass_fractions=mass_fractions,
                              rank_histograms=rank_histograms)
        for name, width in widths.items()}
    inner = [name for name in names if name != FINAL]
    tensors = {f"{name}/{key}": tensor for name, layer in stats.items() for key, tensor in layer.state_dict().items()}
    nonfinite = torch.zeros((), dtype=torch.int64, device=accelerator.device)
    tensors["nonfinite_samples"] = nonfinite  # of the final features, as gather_statistics reports
    feature_pass = FeaturePass(adapter, split, accelerator, batch_size, num_workers,
                               f"layer statistics [{split.split}]", channels_last=channels_last, decode=decode)
    layout = {name: [layer.num_features, list(layer.k1_values)] for name, layer in stats.items()}
    checkpoint = pass_checkpoint(checkpoints, "layer-statistics", adapter, split, accelerator, batch_size,
                                  num_workers, {"layers": layout, "mass_fractions": sorted(set(mass_fractions)),
                                                "rank_histograms": rank_histograms, **(run_key or {})})
    capture = LayerCapture(adapter.model, inner)

    on_cpu = accelerator.device.type == "cpu"

    def accumulate(features, labels):
        check_labels(labels, adapter.num_classes, split)
        pooled = capture.take()
        # dozens of tiny (B, d) updates per batch: on a busy CPU, intra-op threads waiting on each other
        # made them 20-50x slower than one thread (measured under load); the network keeps its threads
        threads = torch.get_num_threads()
        if on_cpu and threads > 1:
            torch.set_num_threads(1)
        try:
            nonfinite.add_((~torch.isfinite(features).all(dim=1)).sum())
            for name in inner:
                stats[name].update(pooled[name], labels)
            if FINAL in stats:
                stats[FINAL].update(features, labels)
        finally:
            if on_cpu and threads > 1:
                torch.set_num_threads(threads)

    with capture:  # hooks removed on exit, also when the pass fails
        info = resumable_pass(feature_pass, checkpoint, accumulate, tensors, split, accelerator)
    result = {name: layer.to("cpu") for name, layer in stats.items()}
    return (result, info) if return_info else result
