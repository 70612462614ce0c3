"""A recovered decomposed head, end to end: load model and data, hold out validation, select + correct +
refit (every choice made on validation), score on the test split once; save it; describe it for a card.

What ``hf-decomp refit`` and ``hf-decomp finetune`` run before they print.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import default_eval_split, load_image_split
from ..data.holdout import hold_out
from ..data.labels import align_labels, to_model_labels
from ..metrics.crossfit import crossfit_choice, half_standard_error, stratified_halves
from ..models import load_classifier
from ..passes import feature_cache
from ..passes.evaluation import accuracy_percent
from ..utils.checks import check_k
from ..utils.errors import DecompValueError
from .refit import check_labelled, check_refit_criterion, decompose_head
from .settings import FinetuneSettings, RefitSettings

__all__ = ["build_recovered_head", "save_recovered_head", "card_metrics", "finetune_recovered_head"]


def _cached(adapter, split, cache_dir, batch_size, num_workers):
    directory = None if cache_dir is None else Path(cache_dir) / split.split
    # looked up at call time: tests replace feature_cache.cached_features to prove no features are computed
    return feature_cache.cached_features(adapter, split, directory=directory, batch_size=batch_size,
                                         num_workers=num_workers)


def _check_rows_align(split, labels, features_labels) -> None:
    """Cached features index the split's rows only when every image was read (none skipped)."""
    if features_labels.numel() != labels.numel() or not torch.equal(features_labels, labels):
        raise DecompValueError(
            f"{split.name} [{split.split}]: {labels.numel() - features_labels.numel()} images could not be read, so "
            f"rows cannot be held out by index; name a validation split with --val-split NAME.")


@torch.no_grad()
def _test_half_estimate(heads, keeps, test_x, test_y, weight, bias, seed: int) -> dict:
    """The candidate (``keep``) chosen on one seeded, class-stratified half of the test split and read on the
    other, both ways, averaged: an estimate no choice was made on, beside the validation choice (which the
    pretrained CIFAR checkpoints' memorised training images cannot make honestly)."""
    half_a, half_b = stratified_halves(test_y, seed)
    names = [str(k) for k in keeps]
    on_a = {n: accuracy_percent(h(test_x[half_a]), test_y[half_a]) for n, h in zip(names, heads)}
    on_b = {n: accuracy_percent(h(test_x[half_b]), test_y[half_b]) for n, h in zip(names, heads)}
    choice = crossfit_choice(on_a, on_b)
    full = [accuracy_percent(test_x[h] @ weight.T + bias, test_y[h]) for h in (half_a, half_b)]
    return {"protocol": "test-half-crossfit", "seed": seed, "sizes": [len(half_a), len(half_b)],
            "half_a": on_a, "half_b": on_b, **choice, "full_accuracy": sum(full) / 2,
            "standard_error": half_standard_error(choice["accuracy"], min(len(half_a), len(half_b)))}


def build_recovered_head(model: str | None = None, dataset: str | None = None, *,
                         settings: RefitSettings | None = None, purpose: str | None = None, **overrides):
    """Load model and data, hold out validation, select + correct + refit (choices on validation).

    Args:
        model / dataset: shortcuts for ``settings.model`` / ``settings.dataset`` (they win when given).
        settings: a :class:`~hf_decomp.recovery.settings.RefitSettings` (or ``FinetuneSettings``); every
            keyword argument of the same name overrides it (old names such as ``method=`` warn once).
        purpose: the command named in errors (default: the settings' command).

    Returns (adapter, fit split, validation split, test split, head, metrics). ``metrics``'
    ``full_accuracy`` / ``decomposed_accuracy`` / ``rho`` are on the test split; ``validation`` holds
    the same on the validation split and every candidate tried (one per ``keep`` for ``pruning``);
    ``settings`` the settings used.
    """
    overrides.update({name: value for name, value in (("model", model), ("dataset", dataset)) if value is not None})
    s = type(settings or RefitSettings()).with_overrides(settings, overrides, function="build_recovered_head")
    purpose = purpose or s.COMMAND
    (model, dataset, weights, criterion, k1, k2, stats_split, eval_split, limit, eval_limit, label_map, seed,
     cache_dir, batch_size, num_workers) = (s.model, s.dataset, s.weights, s.criterion, s.k1, s.k2, s.stats_split,
                                             s.eval_split, s.limit, s.eval_limit, s.label_map, s.seed, s.cache_dir,
                                             s.batch_size, s.num_workers)
    refits = check_refit_criterion(criterion).refits  # an unknown name is refused naming the known ones
    adapter = load_classifier(model or "cifar10_resnet20", checkpoint=weights)
    check_k("k2", k2, adapter.num_features)  # before the features are computed
    check_k("k1", k1, adapter.num_features)
    eval_split = eval_split or default_eval_split(dataset)
    s.check_val_split_is_not(eval_split)  # before any image is read
    split_kwargs = dict(streaming=s.streaming, image_column=s.image_column, label_column=s.label_column, seed=seed)
    train = load_image_split(dataset, stats_split, limit=limit, **split_kwargs)
    if train.label_column is None:
        check_labelled(None, adapter.num_classes, purpose)
    test = load_image_split(dataset, eval_split, limit=eval_limit, **split_kwargs)

    def aligned(split):  # labels read in the model's class order from here on
        return align_labels(split, adapter.label_names, label_map, model=f"model {adapter.name!r}")

    (train, train_labels), (test, test_labels) = aligned(train), aligned(test)
    held = hold_out(train, str(s.val_split), dataset=dataset, **{**split_kwargs, "seed": s.val_seed})
    if held.fit_rows is None:  # a named validation split, loaded by hold_out
        held.validation = aligned(held.validation)[0]
    train_x, train_y = _cached(adapter, train, cache_dir, batch_size, num_workers)
    if held.fit_rows is not None:
        raw = torch.as_tensor(list(train.dataset[train.label_column]))
        _check_rows_align(train, to_model_labels(raw, train), train_y)
        fit_x, fit_y = train_x[held.fit_rows], train_y[held.fit_rows]
        val_x, val_y = train_x[held.validation_rows], train_y[held.validation_rows]
    else:
        fit_x, fit_y = train_x, train_y
        val_x, val_y = _cached(adapter, held.validation, cache_dir, batch_size, num_workers)
    weight, bias = adapter.weight.detach().float().cpu(), adapter.bias.detach().float().cpu()
    candidates, heads_tried, head, best = [], [], None, -1.0
    for fraction in (s.keep if refits else [None]):
        candidate = decompose_head(weight, bias, fit_x, fit_y, criterion=criterion, k2=k2, k1=k1,
                                   bias_correction=s.bias_correction, refit=True, max_iter=s.max_iter,
                                   **({} if fraction is None else {"keep": fraction}))
        with torch.no_grad():
            val_accuracy = accuracy_percent(candidate(val_x), val_y)
        candidates.append({"keep": fraction, "validation_accuracy": val_accuracy})
        heads_tried.append(candidate)
        if val_accuracy > best:
            head, best = candidate, val_accuracy
    chosen = next(c for c in candidates if c["validation_accuracy"] == best)
    with torch.no_grad():
        val_full = accuracy_percent(val_x @ weight.T + bias, val_y)
    test_x, test_y = _cached(adapter, test, cache_dir, batch_size, num_workers)  # the test split, read once, at the end
    with torch.no_grad():
        full = accuracy_percent(test_x @ weight.T + bias, test_y)
        decomposed = accuracy_percent(head(test_x), test_y)
        test_halves = _test_half_estimate(heads_tried, [c["keep"] for c in candidates], test_x, test_y, weight,
                                          bias, s.val_seed)
    memorised = s.memorised_validation(train.split) if held.fit_rows is not None else None
    metrics = {"model": adapter.name, "method": criterion, "k": k2, "bias_correction": s.bias_correction,
               "keep": chosen["keep"], "val_split": {**held.description, "memorised": memorised is not None,
                                                     **({"note": memorised} if memorised else {})},
               "train_samples": int(fit_y.numel()), "eval_split": test.split, "eval_samples": int(test_y.numel()),
               "validation": {"samples": int(val_y.numel()), "full_accuracy": val_full, "decomposed_accuracy": best,
                              "rho": best / val_full if val_full else None, "candidates": candidates,
                              "memorised": memorised is not None},
               "full_accuracy": full, "decomposed_accuracy": decomposed, "rho": decomposed / full if full else None,
               "multiply_adds": {"full": weight.numel(), "decomposed": head.multiply_adds},
               "test_halves": test_halves,
               "labels": {train.split: train_labels, test.split: test_labels}, "settings": s.to_dict()}
    return adapter, held.fit, held.validation, test, head, metrics


def save_recovered_head(head, adapter, metrics: dict, folder: str | Path) -> None:
    """indices.json + indices.safetensors, head.safetensors and metrics.json into ``folder``."""
    from safetensors.torch import save_file

    from ..method.indices import InfluentialIndices
    from ..utils.files import atomic_write_json

    folder = Path(folder)
    InfluentialIndices(sets=head.index_sets(), num_features=head.num_features, label_names=adapter.label_names,
                       metadata={"base_model": adapter.name, "method": metrics["method"], "k2": metrics["k"],
                                 "metrics": metrics}).save(folder)
    save_file({k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()},
              folder / "head.safetensors", metadata={"format": "hf-decomp-head/1"})
    atomic_write_json(folder / "metrics.json", metrics)


def card_metrics(metrics: dict, dataset: str | None, stats_split: str) -> dict:
    """What a fine-tuned model's card shows: its test accuracies, and the validation ones beside them."""
    from ..utils.paths import default_cifar10_dataset

    val = metrics["validation"]
    return {"full_accuracy": metrics["full_accuracy"], "decomposed_accuracy": metrics["finetuned_accuracy"],
            "rho": metrics["finetuned_rho"], "eval_dataset": dataset or default_cifar10_dataset(),
            "eval_split": metrics["eval_split"], "eval_samples": metrics["eval_samples"],
            "statistics_split": stats_split, "statistics_samples": metrics["train_samples"],
            "validation": {"split": metrics["val_split"], "samples": val["samples"],
                           "full_accuracy": val["full_accuracy"], "decomposed_accuracy": val["finetuned_accuracy"],
                           "rho": val["finetuned_accuracy"] / val["full_accuracy"] if val["full_accuracy"] else None,
                           "memorised": bool(val.get("memorised")),
                           **({"note": metrics["val_split"]["note"]} if val.get("memorised") else {})}}


def finetune_recovered_head(adapter, fit, validation, test, head, metrics: dict, *,
                            settings: FinetuneSettings | None = None, **overrides):
    """Fine-tune the whole decomposed network built from a :func:`build_recovered_head` head.

    ``settings`` (a :class:`~hf_decomp.recovery.settings.FinetuneSettings`; keyword arguments of the same
    names override it): ``eval_every`` (epochs) evaluates on ``validation`` and keeps the best model (0:
    keep the last); the test split is read once, at the end, for the chosen model. Returns (model,
    FinetuneResult, metrics) with ``metrics`` extended by the refit and fine-tuned accuracies (test and
    validation) and ``settings``.
    """
    from ..portable.modeling_decomp import DecomposedForImageClassification
    from .finetune import evaluate_model, finetune, training_transform

    s = FinetuneSettings.with_overrides(settings, overrides, function="finetune_recovered_head")
    model = DecomposedForImageClassification.from_classifier(adapter, head, selection_method=s.criterion, k2=s.k2)
    steps_per_epoch = max(1, (fit.num_rows or 0) // s.train_batch_size)
    every = max(1, round(s.eval_every * steps_per_epoch)) if s.eval_every else None
    result = finetune(model, fit, transform=training_transform(adapter, s.augment),
                      val_split=validation, eval_every=every, eval_transform=adapter.transform,
                      val_start_accuracy=metrics["validation"]["decomposed_accuracy"],
                      epochs=s.epochs, lr=s.lr, weight_decay=s.weight_decay,
                      train_batch_size=s.train_batch_size, num_workers=s.num_workers, out=None,
                      seed=s.seed, teacher=adapter if s.distill > 0 else None, distill=s.distill,
                      temperature=s.temperature, freeze_bn=s.freeze_bn, clip_grad=s.clip_grad,
                      backbone_lr_scale=s.backbone_lr_scale, head_warmup=s.head_warmup)
    model = result.model
    # the test split, read once, for the model chosen on validation
    final = evaluate_model(model, test, adapter.transform, num_workers=s.num_workers)["accuracy"]
    metrics["refit_accuracy"] = metrics["decomposed_accuracy"]
    metrics["finetune"] = result.metrics
    metrics["validation"]["refit_accuracy"] = metrics["validation"]["decomposed_accuracy"]
    metrics["validation"]["finetuned_accuracy"] = result.metrics["validation"]["accuracy"]
    metrics["finetuned_accuracy"] = final
    metrics["finetuned_rho"] = final / metrics["full_accuracy"] if metrics["full_accuracy"] else None
    metrics["settings"] = s.to_dict()
    model.config.metrics = card_metrics(metrics, s.dataset, s.stats_split)
    return model, result, metrics
