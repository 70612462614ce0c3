"""Forward hooks that pool a layer's output to one vector per sample, as the final layer's features are.

Pooling (a pure function, :func:`pool_layer_output`): (B, C, H, W) and higher -> mean over the
spatial dims; (B, N, D) token sequences (ViTs) -> mean over tokens; (B, C) as is. A tuple output
(transformers' layers return ``(hidden_states, ...)``) is read through its first element.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from ..utils.errors import DecompValueError

__all__ = ["LayerOutputError", "pool_layer_output", "LayerCapture"]


class LayerOutputError(DecompValueError):
    """A layer's output cannot be pooled into one vector per sample."""


def pool_layer_output(name: str, output) -> torch.Tensor:
    """(B, C) float32 pooled activations of one layer's output; raises naming the layer otherwise."""
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.ndim < 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise LayerOutputError(
            f"layer {name!r} outputs {shape}, not a tensor of shape (B, C, ...); pick a module whose output "
            f"is a feature map, token sequence or vector (e.g. a block, not a loss or a dict).")
    if output.ndim == 2:
        pooled = output
    elif output.ndim == 3:  # (B, tokens, D): average the tokens, as ViT heads do with mean pooling
        pooled = output.mean(dim=1)
    else:
        pooled = output.mean(dim=tuple(range(2, output.ndim)))
    return pooled.float()


class LayerCapture:
    """Pooled outputs of named modules, one batch at a time.

    Use as ``with LayerCapture(network, names) as capture: model(x); pooled = capture.take()``;
    the hooks are removed when the block exits, whatever happens inside. A module called several
    times in one forward (a shared ReLU) keeps its last call's output. ``activation``, when given, is
    applied to each output before pooling (``F.relu`` reads a batch norm as the ReLU after it sees it).
    """

    def __init__(self, network: nn.Module, names: list[str],
                 activation: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.network = network
        self.names = list(names)
        self.activation = activation
        self._pooled: dict[str, torch.Tensor] = {}
        self._handles = []

    def _hook(self, name: str):
        def hook(module, args, output):
            self._pooled[name] = pool_layer_output(name, output if self.activation is None else self.activation(output))
        return hook

    def __enter__(self) -> "LayerCapture":
        try:
            for name in self.names:
                self._handles.append(self.network.get_submodule(name).register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pooled.clear()

    def take(self) -> dict[str, torch.Tensor]:
        """This batch's pooled outputs (name -> (B, C)); raises for a layer the forward never reached."""
        missing = [name for name in self.names if name not in self._pooled]
        if missing:
            raise LayerOutputError(
                f"layers {missing} produced no output in the forward pass (the model's features do not go "
                f"through them); pick modules on the path to the final layer.")
        pooled, self._pooled = self._pooled, {}
        return pooled
