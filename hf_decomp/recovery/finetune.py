"""Fine-tuning of the whole decomposed network (the paper's recovery step), with ``accelerate``.

Backbone and decomposed head are trained together on a labelled split: SGD with Nesterov momentum,
linear warm-up then cosine decay to zero, the usual augmentation (CIFAR-sized inputs: 4-pixel
pad-and-crop + horizontal flip; larger inputs: timm's training transform), checkpoints as
safetensors (``save_pretrained``). The result is a
:class:`~hf_decomp.portable.modeling_decomp.DecomposedForImageClassification`.

Recovery uses knowledge distillation from the full model (its soft labels carry what the full head
knew; on the training set both are ~99 % correct, so hard labels alone say little). The learning
rate is small (0.01, the CIFAR ResNets' own mid-training rate): the network is already trained, only
the head's sparsity is new. Every choice is made on a validation split (``val_split``): the model
returned is the best one on it, the refit head before training included, so fine-tuning never ends
below its starting point on validation. For networks whose batch-norm statistics drift under the new
head (ResNet-56 collapsed at lr 0.01 in an earlier run), ``freeze_bn``, ``clip_grad``,
``backbone_lr_scale`` and ``head_warmup`` are available; they are untested on ResNet-56 here.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import transforms
from tqdm.auto import tqdm

from ..data import ImageSplit
from ..data.labels import to_model_labels
from ..data.loader import ImageBatchCollator, default_num_workers
from ..data.preprocessing import batch_to_device
from ..passes.evaluation import correct_predictions, count_correct
from ..passes.features import make_accelerator
from ..utils.errors import DecompValueError
from ..utils.files import atomic_write_json, normalize_permissions
from ..utils.settings import resolve_renamed
from .refit import check_labelled

__all__ = ["FinetuneResult", "finetune", "training_transform", "evaluate_model",
           "cosine_schedule"]

logger = logging.getLogger(__name__)

FINETUNE_RENAMED = {"out_dir": "out", "checkpoint_every": "save_every", "batch_size": "train_batch_size"}


@dataclass
class FinetuneResult:
    """The fine-tuned model and what happened (``history``: per logged step, ``metrics``: final)."""

    model: torch.nn.Module
    metrics: dict
    history: list[dict] = field(default_factory=list)
    out_dir: Path | None = None


def training_transform(adapter, augment: bool = True):
    """PIL -> tensor with augmentation: pad-crop + flip for inputs up to 64 px, else timm's training transform."""
    if not augment:
        return adapter.transform
    _, height, width = adapter.input_size
    if max(height, width) <= 64:
        return transforms.Compose([transforms.Resize((height, width)),
                                   transforms.RandomCrop((height, width), padding=max(height, width) // 8),
                                   transforms.RandomHorizontalFlip(), adapter.transform])
    data_config = adapter.config.get("data_config")
    if data_config:
        from timm.data import create_transform

        return create_transform(**data_config, is_training=True)
    return transforms.Compose([transforms.RandomHorizontalFlip(), adapter.transform])


def cosine_schedule(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine from 1 to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate_model(model, split: ImageSplit, transform, accelerator=None, batch_size: int = 256,
                   num_workers: int | None = None) -> dict:
    """Top-1 accuracy (percent) of a model returning ``.logits`` on a labelled split."""
    from ..data import device_batches, make_dataloader

    accelerator = accelerator or make_accelerator()
    loader = accelerator.prepare_data_loader(
        make_dataloader(split, transform, batch_size, num_workers, device=accelerator.device), device_placement=False)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=accelerator.device)
    total = torch.zeros((), dtype=torch.long, device=accelerator.device)
    for batch in tqdm(device_batches(loader, accelerator.device),
                      total=None if split.streaming else len(loader), desc=f"evaluate [{split.split}]",
                      leave=False, disable=not accelerator.is_local_main_process):
        if batch["pixel_values"].shape[0] == 0:
            continue
        logits = model(pixel_values=batch["pixel_values"]).logits
        labels = to_model_labels(batch["labels"], split)
        correct += correct_predictions(logits, labels).sum()
        total += labels.numel()
    model.train(was_training)
    correct, total = int(accelerator.reduce(correct, "sum")), int(accelerator.reduce(total, "sum"))
    if total == 0:
        raise DecompValueError(f"{split.name} [{split.split}] has no readable labelled images to evaluate on")
    return {"accuracy": 100.0 * correct / total, "samples": total}


def _train_mode(model, freeze_bn: bool) -> None:
    """Training mode; with ``freeze_bn`` the batch-norm layers normalise with their running statistics."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def _param_groups(model, lr: float, weight_decay: float, backbone_lr_scale: float) -> list[dict]:
    """Backbone weights (decayed), backbone norms/biases (not decayed), head (not decayed: its sparsity is the model)."""
    groups = {"backbone_decay": [], "backbone_no_decay": [], "head": []}
    for name, param in model.named_parameters():
        if name.startswith("head.") or "kept_weight" in name:
            groups["head"].append(param)
        elif param.ndim > 1:
            groups["backbone_decay"].append(param)
        else:
            groups["backbone_no_decay"].append(param)
    return [{"params": groups["backbone_decay"], "weight_decay": weight_decay, "lr": lr * backbone_lr_scale,
             "name": "backbone"},
            {"params": groups["backbone_no_decay"], "weight_decay": 0.0, "lr": lr * backbone_lr_scale,
             "name": "backbone"},
            {"params": groups["head"], "weight_decay": 0.0, "lr": lr, "name": "head"}]


def finetune(
    model,
    train_split: ImageSplit,
    *,
    transform,
    eval_split: ImageSplit | None = None,
    eval_transform=None,
    val_split: ImageSplit | None = None,
    eval_every: int | None = None,
    val_start_accuracy: float | None = None,
    epochs: float = 1.0,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    warmup_fraction: float = 0.05,
    train_batch_size: int | None = None,
    num_workers: int | None = None,
    out: str | Path | None = None,
    save_every: int | None = None,
    log_every: int = 20,
    seed: int = 0,
    teacher=None,
    distill: float = 0.0,
    temperature: float = 4.0,
    freeze_bn: bool = False,
    clip_grad: float | None = None,
    backbone_lr_scale: float = 1.0,
    head_warmup: float = 0.0,
    accelerator=None,
    **renamed,
) -> FinetuneResult:
    """Train the whole decomposed model (backbone and head) with cross-entropy for ``epochs`` epochs.

    Args:
        model: a ``DecomposedForImageClassification`` (see ``DecomposedForImageClassification.from_classifier``), or any
            module whose ``forward(pixel_values=..., labels=...)`` returns ``.loss`` and ``.logits``.
        train_split: labelled training split (shuffled here with ``seed``).
        transform: PIL -> tensor with augmentation (see :func:`training_transform`).
        eval_split / eval_transform: evaluated once, after training, on the model returned (the test split).
        val_split: evaluated before training and every ``eval_every`` steps (and at the end); the
            model returned (and saved) is the one best on it (early stopping; ties keep the earlier).
        val_start_accuracy: the model's validation accuracy before training when already known (the
            refit head's, measured on cached features): saves one pass over ``val_split``.
        epochs: may be fractional (0.5 = half an epoch).
        lr, momentum, weight_decay, warmup_fraction: SGD (Nesterov) with warm-up then cosine decay.
        train_batch_size: images per training step (default 128).
        out: where ``checkpoint-<step>/`` (every ``save_every`` steps), the final model
            (``save_pretrained``: config.json + model.safetensors) and ``finetune.json`` go.
        seed: data order, augmentation and any random initialisation; the same seed gives the same
            model on the same hardware (torch's deterministic algorithms are switched on meanwhile).
        teacher / distill / temperature: knowledge distillation from the full model (a
            ``ClassifierAdapter``, frozen): loss = (1 - distill) * CE + distill * T^2 *
            KL(softmax(teacher / T) || softmax(student / T)). ``distill=0`` is plain cross-entropy.
        freeze_bn: batch-norm layers keep their running statistics (eval mode) while training, so the
            student normalises as the eval-mode teacher does.
        clip_grad: clip the total gradient norm to this value.
        backbone_lr_scale: the backbone's learning rate is ``lr`` times this (the head's is ``lr``).
        head_warmup: fraction of the steps during which only the head trains.
        renamed: the old names ``out_dir=`` (now ``out=``), ``checkpoint_every=`` (now ``save_every=``) and
            ``batch_size=`` (now ``train_batch_size=``), with one FutureWarning.

    Returns:
        :class:`FinetuneResult` with the trained model (on CPU, eval mode).
    """
    if train_split.label_column is None:
        raise DecompValueError(f"Fine-tuning needs a labelled training split, but {train_split.name} "
                               f"[{train_split.split}] has no label column. Pass a labelled split "
                               f"(--stats-split) or name its column with --label-column.")
    if train_split.streaming:
        raise DecompValueError("Fine-tuning needs a sized, shuffleable split; drop --streaming.")
    if not epochs > 0:
        raise DecompValueError(f"epochs={epochs} must be > 0")
    if not 0.0 <= distill <= 1.0 or (distill > 0 and teacher is None):
        raise DecompValueError(f"distill={distill} must be in [0, 1] and needs a teacher (the full model)")
    if not 0.0 <= head_warmup < 1.0 or backbone_lr_scale < 0 or (clip_grad is not None and not clip_grad > 0):
        raise DecompValueError(f"head_warmup={head_warmup} must be in [0, 1), backbone_lr_scale="
                               f"{backbone_lr_scale} >= 0 and clip_grad={clip_grad} > 0")
    names = resolve_renamed("finetune", renamed, FINETUNE_RENAMED,
                            {"out": out, "save_every": save_every, "train_batch_size": train_batch_size})
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _finetune(model, train_split, transform=transform, eval_split=eval_split, eval_transform=eval_transform,
                         val_split=val_split, eval_every=eval_every, val_start_accuracy=val_start_accuracy,
                         epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         warmup_fraction=warmup_fraction,
                         batch_size=128 if names["train_batch_size"] is None else names["train_batch_size"],
                         num_workers=num_workers, out_dir=names["out"], checkpoint_every=names["save_every"],
                         log_every=log_every, seed=seed, teacher=teacher, distill=distill, temperature=temperature,
                         freeze_bn=freeze_bn, clip_grad=clip_grad, backbone_lr_scale=backbone_lr_scale,
                         head_warmup=head_warmup, accelerator=accelerator)
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _finetune(model, train_split, *, transform, eval_split, eval_transform, val_split, eval_every,
              val_start_accuracy, epochs, lr,
              momentum, weight_decay, warmup_fraction, batch_size, num_workers, out_dir, checkpoint_every,
              log_every, seed, teacher, distill, temperature, freeze_bn, clip_grad, backbone_lr_scale,
              head_warmup, accelerator) -> FinetuneResult:
    accelerator = accelerator or make_accelerator()
    torch.manual_seed(seed)  # augmentation in the main process (num_workers=0) and any fresh weights
    generator = torch.Generator().manual_seed(seed)  # data order and the workers' seeds
    num_workers = default_num_workers(accelerator.device) if num_workers is None else num_workers
    # augmentations run on uint8 in the workers; normalisation per batch on the device (batch_to_device)
    loader = DataLoader(train_split.dataset, batch_size=batch_size, shuffle=True, generator=generator,
                        num_workers=num_workers, drop_last=True, pin_memory=accelerator.device.type == "cuda",
                        collate_fn=ImageBatchCollator(transform, train_split.image_column, train_split.label_column))
    optimizer = torch.optim.SGD(_param_groups(model, lr, weight_decay, backbone_lr_scale),
                                lr=lr, momentum=momentum, nesterov=momentum > 0)
    model, prepared_optimizer, loader = accelerator.prepare(model, optimizer, loader)
    # steps of this process's (sharded) loader; the scheduler is stepped once per step, on every process
    total_steps = max(1, int(round(epochs * len(loader))))
    warmup = max(1, int(warmup_fraction * total_steps))
    head_only = int(head_warmup * total_steps)

    def backbone_factor(s: int) -> float:
        return 0.0 if s < head_only else cosine_schedule(s - head_only, total_steps - head_only, warmup)

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [backbone_factor, backbone_factor, lambda s: cosine_schedule(s, total_steps, warmup)])
    optimizer = prepared_optimizer
    if distill > 0:
        teacher = teacher.to(accelerator.device).eval()
        teacher.requires_grad_(False)
    out_dir = Path(out_dir) if out_dir is not None else None
    val_transform = eval_transform or transform

    validation, best_state, best_step = [], None, 0

    def validate(at_step: int, known: float | None = None) -> None:
        nonlocal best_state, best_step
        accuracy = known if known is not None else evaluate_model(
            model, val_split, val_transform, accelerator=accelerator, num_workers=num_workers)["accuracy"]
        validation.append({"step": at_step, "accuracy": accuracy})
        if best_state is None or accuracy > max(v["accuracy"] for v in validation[:-1]):
            best_step = at_step
            best_state = {k: v.detach().to("cpu", copy=True)
                          for k, v in accelerator.unwrap_model(model).state_dict().items()}
        _train_mode(model, freeze_bn)

    history, step, started = [], 0, time.time()
    running_loss, running_correct, running_seen = 0.0, 0, 0
    if val_split is not None:
        validate(0, val_start_accuracy)
    bar = tqdm(total=total_steps, desc="fine-tune", disable=not accelerator.is_local_main_process)
    _train_mode(model, freeze_bn)
    while step < total_steps:
        for batch in loader:
            batch = batch_to_device(batch, accelerator.device)
            labels = to_model_labels(batch["labels"], train_split)  # the model's class order
            check_labelled(labels, int(model.config.num_labels) if hasattr(model, "config") else labels.max() + 1,
                           "fine-tuning")
            output = model(pixel_values=batch["pixel_values"], labels=labels)
            loss = output.loss
            if distill > 0:
                with torch.no_grad():
                    target = teacher.classifier(teacher.forward_features(batch["pixel_values"])).float()
                soft = F.kl_div(F.log_softmax(output.logits.float() / temperature, 1),
                                F.log_softmax(target / temperature, 1), log_target=True, reduction="batchmean")
                loss = (1 - distill) * loss + distill * temperature ** 2 * soft
            accelerator.backward(loss)
            if clip_grad is not None:
                accelerator.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            running_loss += float(loss.detach()) * labels.numel()
            running_correct += count_correct(output.logits, labels)
            running_seen += labels.numel()
            bar.update(1)
            if step % log_every == 0 or step == total_steps:
                history.append({"step": step, "lr": scheduler.get_last_lr()[-1], "loss": running_loss / running_seen,
                                "train_accuracy": 100.0 * running_correct / running_seen,
                                "seconds": time.time() - started})
                bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", acc=f"{history[-1]['train_accuracy']:.1f}")
                running_loss, running_correct, running_seen = 0.0, 0, 0
            if val_split is not None and eval_every and step % eval_every == 0 and step < total_steps:
                validate(step)
            if out_dir is not None and checkpoint_every and step % checkpoint_every == 0 and step < total_steps:
                _save(accelerator, model, out_dir / f"checkpoint-{step}")
            if step >= total_steps:
                break
    bar.close()
    train_seconds = time.time() - started
    if val_split is not None:
        validate(total_steps)
    model = accelerator.unwrap_model(model)
    if best_state is not None:
        model.load_state_dict(best_state)
    metrics = {"steps": total_steps, "epochs": epochs, "batch_size": batch_size, "lr": lr,
               "distill": distill, "temperature": temperature if distill > 0 else None,
               "weight_decay": weight_decay, "freeze_bn": freeze_bn, "clip_grad": clip_grad,
               "backbone_lr_scale": backbone_lr_scale, "head_warmup": head_warmup, "seed": seed,
               "num_processes": accelerator.num_processes,
               "train_samples_seen": total_steps * batch_size * accelerator.num_processes,
               "seconds": train_seconds, "seconds_per_epoch": train_seconds / epochs}
    if val_split is not None:
        metrics["validation"] = {"history": validation, "best_step": best_step,
                                 "accuracy": max(v["accuracy"] for v in validation),
                                 "samples": evaluate_samples(val_split)}
    if eval_split is not None:
        metrics["eval"] = evaluate_model(model, eval_split, eval_transform, accelerator=accelerator,
                                         num_workers=num_workers)
    model = model.to("cpu").eval()
    if out_dir is not None:
        _save(accelerator, model, out_dir)  # every process: _save waits for all of them
        if accelerator.is_main_process:
            atomic_write_json(out_dir / "finetune.json", {"metrics": metrics, "history": history})
    return FinetuneResult(model=model, metrics=metrics, history=history, out_dir=out_dir)


def evaluate_samples(split: ImageSplit) -> int | None:
    return split.num_rows


def _save(accelerator, model, directory: Path) -> None:
    """``save_pretrained`` through a staging folder: a kill mid-save never leaves half-written files."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=directory, prefix=".saving-"))
        try:
            accelerator.unwrap_model(model).save_pretrained(staging, safe_serialization=True)
            normalize_permissions(staging)  # save_pretrained's safetensors are 0600
            for path in staging.iterdir():
                os.replace(path, directory / path.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
