"""Recovery of a pruned specialist: distillation from the restricted full model, resumable per epoch.

The recipe is fixed in advance (:class:`DistillRecipe`): SGD with Nesterov momentum, a cosine
schedule to zero, the last epoch's weights. Nothing is chosen on the images whose accuracy is
reported; the per-epoch accuracies are recorded for the curves only.

Training images live in memory as normalised tensors (a CIFAR-10 class subset is at most 15,000
images): each epoch only draws a permutation and the augmentation (random crop with 4 pixels of
zero padding in normalised space, i.e. the mean colour, and a horizontal flip). The teacher sees
the same augmented batch. Epoch e's randomness comes from ``seed`` and ``e`` alone, so a run resumed
from the checkpoint of epoch e continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..utils.errors import DecompValueError
from ..utils.files import atomic_write_file, atomic_write_json

__all__ = ["DistillRecipe", "augment_batch", "distill_specialist", "evaluate_accuracy"]

_STATE = "distill_state.safetensors"
_HISTORY = "distill_history.json"


@dataclass(frozen=True)
class DistillRecipe:
    """The recovery recipe, fixed before any run (not tuned on test images)."""

    epochs: int = 10
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    temperature: float = 4.0
    distill: float = 0.9  # weight of the KL to the teacher; the rest is cross-entropy with the labels
    augment: bool = True

    def __post_init__(self):
        if self.epochs < 0:
            raise DecompValueError(f"--epochs {self.epochs} must be >= 0")
        if not self.lr > 0:
            raise DecompValueError(f"--lr {self.lr} must be > 0")
        if not 0.0 <= self.distill <= 1.0:
            raise DecompValueError(f"--distill {self.distill} must be in [0, 1] (weight of the teacher's KL)")
        if self.batch_size < 1:
            raise DecompValueError(f"--batch-size {self.batch_size} must be >= 1")


def augment_batch(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop of the zero-padded batch back to its size, then a random horizontal flip, per image."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    flip = torch.rand(b, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


@torch.inference_mode()
def evaluate_accuracy(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy (percent) of ``model`` on in-memory images."""
    model.eval()
    correct = 0
    for start in range(0, pixels.shape[0], batch_size):
        logits = model(pixels[start:start + batch_size].contiguous(memory_format=torch.channels_last))
        correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    return 100.0 * correct / max(1, labels.numel())


def _optimizer(model: nn.Module, recipe: DistillRecipe) -> torch.optim.SGD:
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]  # norms and biases: no weight decay
    return torch.optim.SGD([{"params": decay, "weight_decay": recipe.weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=recipe.lr, momentum=recipe.momentum, nesterov=True)


def _save_state(folder: Path, model: nn.Module, optimizer, history: list[dict], recipe: DistillRecipe) -> None:
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, p in enumerate(params):
        buffer = optimizer.state.get(p, {}).get("momentum_buffer")
        if buffer is not None:
            tensors[f"momentum.{i}"] = buffer.detach().contiguous()
    # weights, momentum and history in one file renamed into place: a kill leaves the previous epoch whole
    # (the JSON beside it is a readable copy; resuming reads the state file alone)
    record = {"recipe": asdict(recipe), "history": history}
    atomic_write_file(folder / _STATE, lambda p: save_file(tensors, p, metadata={"run": json.dumps(record)}))
    atomic_write_json(folder / _HISTORY, record)


def _load_state(folder: Path, model: nn.Module, optimizer, recipe: DistillRecipe) -> list[dict]:
    """The history so far, with ``model`` and ``optimizer`` restored; [] when there is nothing to resume."""
    state = folder / _STATE
    if not state.is_file():
        return []
    with safe_open(state, "pt") as handle:
        saved = json.loads((handle.metadata() or {}).get("run", "{}"))
    if saved.get("recipe") != asdict(recipe):
        raise DecompValueError(f"{folder} holds a run with another recipe ({saved.get('recipe')}); resume with the "
                               f"same settings or give a new --out.")
    tensors = load_file(state)
    if [h["epoch"] for h in saved["history"]] != list(range(len(saved["history"]))):
        raise DecompValueError(f"{state} is inconsistent; delete {folder} to start the run again.")
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, p in enumerate(params):
        if f"momentum.{i}" in tensors:
            optimizer.state[p]["momentum_buffer"] = tensors[f"momentum.{i}"].clone()
    return saved["history"]


def distill_specialist(student: nn.Module, teacher: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
                       evaluations: Mapping[str, tuple[torch.Tensor, torch.Tensor]], recipe: DistillRecipe, *,
                       seed: int = 0, checkpoint_dir: str | Path | None = None,
                       progress: bool = True) -> tuple[nn.Module, list[dict]]:
    """Train ``student`` (in place) for ``recipe.epochs`` epochs; return it and the per-epoch history.

    Args:
        teacher: the full model restricted to the chosen classes (same logit order as the student).
        train: (pixels, labels) of the chosen classes' training images, labels as positions.
        evaluations: name -> (pixels, labels) measured after every epoch (epoch 0: before training).
        checkpoint_dir: the state after each epoch is saved there and a later call resumes from it.
    """
    pixels, labels = train
    student = student.to(memory_format=torch.channels_last)
    teacher = teacher.eval().to(memory_format=torch.channels_last)
    optimizer = _optimizer(student, recipe)
    steps_per_epoch = math.ceil(pixels.shape[0] / recipe.batch_size)
    total = max(1, steps_per_epoch * recipe.epochs)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    history = _load_state(folder, student, optimizer, recipe) if folder is not None else []
    if not history:
        history = [{"epoch": 0, "loss": None, **{k: evaluate_accuracy(student, *v) for k, v in evaluations.items()}}]
        if folder is not None:
            _save_state(folder, student, optimizer, history, recipe)
    t = recipe.temperature
    bar = tqdm(total=recipe.epochs * steps_per_epoch, initial=(len(history) - 1) * steps_per_epoch,
               desc="distill", unit="step", disable=not progress, leave=False)
    for epoch in range(len(history), recipe.epochs + 1):
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(pixels.shape[0], generator=generator)
        student.train()
        running, seen = 0.0, 0
        for i in range(steps_per_epoch):
            step = (epoch - 1) * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
            idx = order[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            x = pixels[idx]
            if recipe.augment:
                x = augment_batch(x, generator)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                soft = F.log_softmax(teacher(x) / t, dim=1)
            logits = student(x)
            kl = F.kl_div(F.log_softmax(logits / t, dim=1), soft, log_target=True, reduction="batchmean") * t * t
            loss = recipe.distill * kl + (1.0 - recipe.distill) * F.cross_entropy(logits, labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item() * idx.numel()
            seen += idx.numel()
            bar.update(1)
        history.append({"epoch": epoch, "loss": running / seen,
                        **{k: evaluate_accuracy(student, *v) for k, v in evaluations.items()}})
        bar.set_postfix({k: f"{v:.2f}" for k, v in history[-1].items() if k not in ("epoch", "loss")})
        if folder is not None:
            _save_state(folder, student, optimizer, history, recipe)
    bar.close()
    return student.eval().to(memory_format=torch.contiguous_format), history
