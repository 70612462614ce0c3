"""``specialize``: from a classifier and a class subset to a pruned, recovered specialist.

1. votes of the chosen classes' training images at every batch norm (:mod:`.votes`);
2. Torch-Pruning to the multiply-add budget, keeping the most voted channels (:mod:`.pruning`), and
   only the chosen classes' rows of the head;
3. recovery: batch-norm recalibration (the per-layer bias correction) and head refit on the pruned
   backbone's cached features, then optional short fine-tuning distilled from the full model's
   logits restricted to the subset (:func:`hf_decomp.recovery.finetune.finetune`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import datasets
import torch
import torch.nn as nn

from ..data import ImageSplit
from ..models.adapter import ClassifierAdapter
from ..portable.modeling_specialist import SpecialistForImageClassification
from ..recovery.finetune import finetune, training_transform
from .pruning import count_macs, importance_of, prepare_for_pruning, prune_by_ratio, prune_to_budget, restrict_head
from .recovery import pooled_features, refit_linear_head

__all__ = ["prune_specialist", "recalibrate_batchnorm", "recover_specialist", "restricted_teacher", "subset_split",
           "finetune_specialist", "parameter_count"]


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prune_specialist(model: nn.Module, class_ids: Sequence[int], budget: float, *, method: str,
                     input_size: Sequence[int], scores: dict[str, torch.Tensor] | None = None,
                     ratio: float | None = None) -> tuple[nn.Module, dict]:
    """Prune a timm classifier to ``budget`` of its multiply-adds, keeping only ``class_ids``' head rows.

    ``ratio``: the per-group pruning ratio found for this budget by an earlier call (it does not
    depend on the method: every group loses the same number of channels), which skips the bisection.

    Returns the pruned model and facts: ``pruning_ratio``, ``macs``, ``macs_fraction``, ``full_macs``, ``params``.
    """
    full_macs = count_macs(model, input_size)
    prepared = restrict_head(prepare_for_pruning(model), class_ids)
    if ratio is None:
        pruned, info = prune_to_budget(prepared, input_size, budget, method=method, scores=scores,
                                       reference_macs=full_macs)
    else:
        pruned = prune_by_ratio(prepared, input_size, importance_of(method, scores), ratio)
        macs = count_macs(pruned, input_size)
        info = {"pruning_ratio": ratio, "macs": macs, "macs_fraction": macs / full_macs}
    info.update(full_macs=full_macs, params=parameter_count(pruned))
    return pruned.eval(), info


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, pixels: torch.Tensor, batch_size: int = 500) -> nn.Module:
    """Bias correction of every layer: re-estimate the batch norms' running statistics on ``pixels``.

    Pruning removes channels that fed each layer, so the stored means and variances no longer
    match; one pass in train mode with a cumulative average (``momentum=None``) refreshes them.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for start in range(0, pixels.shape[0], batch_size):
            model(pixels[start:start + batch_size])
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.eval()
    return model


def recover_specialist(pruned: nn.Module, train: tuple[torch.Tensor, torch.Tensor], *, recalibrate: bool = True,
                       weight_decay: float = 1e-3) -> nn.Module:
    """A copy of ``pruned`` with batch norms recalibrated and the head refit on ``train``'s cached features.

    ``weight_decay``: the refit's L2 penalty. A few images of two classes are often separable, and an
    unpenalised refit then grows its weights without bound (a head norm near 1,000 on 48 images per
    class), whose saturated logits make distilled fine-tuning diverge. 1e-3 was chosen on held-out
    training images (cat/dog, ResNet-20, budget 0.3): best refit and fine-tuned validation accuracy
    of {0, 1e-3, 1e-2}.
    """
    pruned = copy.deepcopy(pruned)
    if recalibrate:
        recalibrate_batchnorm(pruned, train[0])
    features = pooled_features(pruned, train[0])
    head = pruned.get_classifier()
    name = next(n for n, m in pruned.named_modules() if m is head)
    pruned.set_submodule(name, refit_linear_head(head, features, train[1], weight_decay=weight_decay))
    return pruned.eval()


def restricted_teacher(adapter: ClassifierAdapter, class_ids: Sequence[int]) -> ClassifierAdapter:
    """The full model as an adapter whose logits are only the chosen classes' (the distillation teacher)."""
    classifier = nn.Linear(adapter.num_features, len(class_ids), bias=True).to(adapter.weight.device)
    with torch.no_grad():
        classifier.weight.copy_(adapter.weight[list(class_ids)])
        classifier.bias.copy_(adapter.bias[list(class_ids)])
    return ClassifierAdapter(model=copy.deepcopy(adapter.model), classifier=classifier, features_fn=adapter.forward_features,
                             transform=adapter.transform, label_names=[adapter.label_names[c] for c in class_ids],
                             name=adapter.name, source=adapter.source, input_size=adapter.input_size,
                             config=adapter.config)


def subset_split(split: ImageSplit, rows: Sequence[int], class_ids: Sequence[int]) -> ImageSplit:
    """The given rows of ``split`` with labels renumbered as positions in ``class_ids``."""
    position = {c: i for i, c in enumerate(class_ids)}
    subset = split.dataset.select(list(rows)).cast_column(split.label_column, datasets.Value("int64"))
    subset = subset.map(lambda labels: {split.label_column: [position[v] for v in labels]}, batched=True,
                        input_columns=split.label_column, keep_in_memory=True)
    return ImageSplit(dataset=subset, name=split.name, split=f"{split.split}[classes {list(class_ids)}]",
                      image_column=split.image_column, label_column=split.label_column,
                      label_names=[(split.label_names or [])[c] if split.label_names else str(c) for c in class_ids],
                      streaming=False, subset=True)


def finetune_specialist(pruned: nn.Module, adapter: ClassifierAdapter, class_ids: Sequence[int],
                        train_split: ImageSplit, *, epochs: float = 1.0, lr: float = 0.01, distill: float = 0.9,
                        temperature: float = 4.0, batch_size: int = 128, seed: int = 0, num_workers: int = 0,
                        **facts) -> tuple[nn.Module, dict]:
    """Fine-tune the pruned network with :func:`~hf_decomp.recovery.finetune.finetune`, distilled from the restricted full model.

    ``train_split`` holds only the chosen classes (see :func:`subset_split`). Returns the fine-tuned
    timm network and finetune's metrics.
    """
    wrapped = SpecialistForImageClassification.from_pruned(
        copy.deepcopy(pruned), architecture=adapter.config.get("architecture"),
        pretrained_cfg={}, class_ids=list(class_ids), label_names=adapter.label_names, **facts)
    result = finetune(wrapped, train_split, transform=training_transform(adapter), epochs=epochs, lr=lr,
                      batch_size=batch_size, num_workers=num_workers, seed=seed,
                      teacher=restricted_teacher(adapter, class_ids), distill=distill, temperature=temperature)
    return result.model.backbone.eval(), result.metrics
