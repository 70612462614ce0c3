"""``specialize``: from a classifier and a class subset to a pruned, recovered specialist.

1. the chosen classes' training images and test images in memory, the test images cut into two
   seeded stratified halves (:func:`~hf_decomp.metrics.crossfit.stratified_halves`);
2. a criterion scores every channel group once (:mod:`.criteria`), saved so a resumed run reuses it;
3. Torch-Pruning to the multiply-add budget by an allocation rule (:mod:`.pruning`), only the chosen
   classes' head rows kept, batch norms recalibrated on the training images;
4. distillation from the full model restricted to the classes, a recipe fixed in advance,
   checkpointed per epoch (:mod:`.distill`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from ..data import ImageSplit
from ..metrics.crossfit import stratified_halves
from ..utils.files import atomic_write_file
from .criteria import CriterionInputs, score_groups
from .distill import DistillRecipe, distill_specialist, evaluate_accuracy
from .importance import GroupScores
from .pruning import CUSTOMIZED_PRUNERS, prepare_for_pruning, prune_to_budget, restrict_head
from .recovery import class_rows, load_class_images

__all__ = ["SpecialistData", "load_specialist_data", "restricted_network", "criterion_scores_cached",
           "build_specialist", "recalibrate_batchnorm", "parameter_count"]


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class SpecialistData:
    """The chosen classes' images (normalised, in memory) with labels as positions in ``class_ids``."""

    class_ids: list[int]
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    half_a: torch.Tensor  # row indices into ``test``
    half_b: torch.Tensor

    def halves(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        pixels, labels = self.test
        return {"half_a": (pixels[self.half_a], labels[self.half_a]),
                "half_b": (pixels[self.half_b], labels[self.half_b])}


def load_specialist_data(train_split: ImageSplit, test_split: ImageSplit, class_ids: Sequence[int], transform, *,
                         train_per_class: int | None = None, half_seed: int = 0, seed: int = 0) -> SpecialistData:
    """Decode the chosen classes' images once; ``train_per_class`` takes a seeded subset per class."""
    generator = torch.Generator().manual_seed(seed)
    train_rows = []
    for c, rows in sorted(class_rows(train_split, class_ids).items()):
        rows = torch.tensor(rows)
        if train_per_class is not None:
            rows = rows[torch.randperm(rows.numel(), generator=generator)[:train_per_class]].sort().values
        train_rows += rows.tolist()
    test_rows = [r for rows in class_rows(test_split, class_ids).values() for r in rows]
    train = load_class_images(train_split, train_rows, class_ids, transform)
    test = load_class_images(test_split, sorted(test_rows), class_ids, transform)
    half_a, half_b = stratified_halves(test[1], half_seed)
    return SpecialistData(list(class_ids), train, test, half_a, half_b)


def restricted_network(model: nn.Module, class_ids: Sequence[int]) -> nn.Module:
    """A prunable copy of ``model`` whose head keeps only the chosen classes' rows (also the teacher)."""
    return restrict_head(prepare_for_pruning(model), class_ids).eval()


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, pixels: torch.Tensor, batch_size: int = 500) -> nn.Module:
    """Re-estimate every batch norm's running statistics on ``pixels`` (pruning changed what feeds them).

    One pass in train mode with a cumulative average (``momentum=None``).
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


def criterion_scores_cached(criterion: str, network: nn.Module, input_size, data: SpecialistData, *,
                            k1_fraction: float = 0.25, batch_size: int = 256,
                            folder: str | Path | None = None) -> GroupScores:
    """The criterion's group scores on ``network``, read from ``folder`` when an earlier run saved them."""
    path = Path(folder) / f"scores-{criterion}.safetensors" if folder is not None else None
    if path is not None and path.is_file():
        return {k: v.to(torch.float64) for k, v in load_file(path).items()}
    inputs = CriterionInputs(model=network, input_size=input_size, pixels=data.train[0], labels=data.train[1],
                             customized_pruners=CUSTOMIZED_PRUNERS, k1_fraction=k1_fraction, batch_size=batch_size)
    scores = score_groups(criterion, inputs)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_file(path, lambda p: save_file({k: v.contiguous() for k, v in scores.items()}, p,
                                                metadata={"criterion": criterion}))
    return scores


def build_specialist(network: nn.Module, scores: GroupScores, budget: float, data: SpecialistData, recipe: DistillRecipe,
                     *, input_size, full_macs: int, allocation: str = "global", seed: int = 0,
                     folder: str | Path | None = None, progress: bool = True) -> tuple[nn.Module, dict]:
    """Prune ``network`` (restricted, unpruned) to ``budget`` by ``scores``, recalibrate, distil from it.

    Returns the specialist and ``{"pruning_ratio", "macs", "macs_fraction", "params", "history",
    "test_accuracy", "half_a", "half_b"}`` (accuracies in percent, the last epoch's).
    Saved in ``folder`` after every epoch; ``result.json`` there marks a finished run.
    """
    folder = Path(folder) if folder is not None else None
    pruned, info = prune_to_budget(network, input_size, budget, scores=scores, allocation=allocation,
                                   reference_macs=full_macs)
    recalibrate_batchnorm(pruned, data.train[0])
    teacher = copy.deepcopy(network).eval()
    student, history = distill_specialist(pruned, teacher, data.train, data.halves(), recipe, seed=seed,
                                          checkpoint_dir=folder, progress=progress)
    # training keeps the pruned shapes, so prune_to_budget's MAC count still holds
    info.update(params=parameter_count(student), history=history, test_accuracy=evaluate_accuracy(student, *data.test),
                half_a=history[-1]["half_a"], half_b=history[-1]["half_b"])
    if folder is not None:
        atomic_write_file(folder / "result.json", lambda p: p.write_text(json.dumps(info, indent=1)))
    return student, info
