"""``specialize(...)``: the Python API behind ``hf-decomp specialize``."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..data import load_image_split
from ..models import load_classifier
from ..portable.modeling_specialist import SpecialistForImageClassification
from ..utils.errors import DecompValueError
from .export import save_specialist
from .pipeline import finetune_specialist, parameter_count, prune_specialist, recover_specialist, subset_split
from .pruning import check_budget, count_macs, prepare_for_pruning, resolve_classes, restrict_head
from .recovery import accuracy, class_rows, latency_ms, load_class_images, split_rows
from .votes import gather_channel_votes

__all__ = ["specialize"]


def specialize(model_name: str, classes, macs: float, *, method: str = "class-aware", checkpoint=None,
               dataset: str | None = None, train_split: str = "train", eval_split: str = "test",
               train_per_class: int = 1000, val_per_class: int = 300, test_per_class: int | None = None,
               k1_fraction: float = 0.25,
               finetune_epochs: float = 0.0, lr: float = 0.01, baselines: bool = True, seed: int = 0,
               batch_size: int = 256, out_dir: str | Path | None = None, overwrite: bool = False) -> dict:
    """Prune ``model_name`` to ``macs`` of its multiply-adds for ``classes``; recover; compare; save.

    Returns ``{"model": SpecialistForImageClassification, "table": [...], "report": {...}}``; the
    table has the specialist, the full model restricted to the classes and (``baselines``) L1
    magnitude pruning at the same budget with the same recovery.
    """
    adapter = load_classifier(model_name, checkpoint=checkpoint)
    if adapter.source != "timm":
        raise DecompValueError(f"{model_name}: specialize prunes timm models (Torch-Pruning traces their modules); "
                               f"this one is a transformers model.")
    class_ids = resolve_classes(classes, adapter.label_names)
    model, input_size = adapter.model.eval(), adapter.input_size
    full_macs = count_macs(model, input_size)
    check_budget(restrict_head(prepare_for_pruning(model), class_ids), input_size, macs, full_macs)
    train_data = load_image_split(dataset, train_split)
    test_data = load_image_split(dataset, eval_split)
    train_rows, val_rows = split_rows(class_rows(train_data, class_ids), val_per_class, train_per_class, seed)
    train = load_class_images(train_data, train_rows, class_ids, adapter.transform)
    val = load_class_images(train_data, val_rows, class_ids, adapter.transform)
    test_rows = [r for rows in class_rows(test_data, class_ids).values() for r in rows[:test_per_class]]
    test = load_class_images(test_data, test_rows, class_ids, adapter.transform)

    def row(name, net, info=None, logits=None):
        result = {"name": name, "macs_fraction": (info or {}).get("macs_fraction", 1.0),
                  "macs": (info or {}).get("macs", full_macs), "params": parameter_count(net),
                  "latency_ms": {"batch1": latency_ms(net, input_size, 1), "batch64": latency_ms(net, input_size, 64)}}
        with torch.no_grad():
            result["val_accuracy"] = accuracy(logits(val[0]) if logits else net, None if logits else val[0], val[1],
                                              batch_size=batch_size)
            result["test_accuracy"] = accuracy(logits(test[0]) if logits else net, None if logits else test[0],
                                               test[1], batch_size=batch_size)
        return result

    table = [row("full model, restricted to the classes", model, logits=lambda x: model(x)[:, class_ids])]
    votes = gather_channel_votes(prepare_for_pruning(model), *train, len(class_ids), (k1_fraction,),
                                 batch_size=batch_size)[k1_fraction]
    methods = [method] + (["magnitude"] if baselines and method != "magnitude" else [])
    specialist = None
    for current in methods:
        pruned, info = prune_specialist(model, class_ids, macs, method=current, input_size=input_size,
                                        scores=votes if current == "class-aware" else None)
        recovered = recover_specialist(pruned, train)
        table.append({**row(f"{current}, head refit", recovered, info), "pruning_ratio": info["pruning_ratio"]})
        final = recovered
        if finetune_epochs > 0:
            final, metrics = finetune_specialist(recovered, adapter, class_ids,
                                                 subset_split(train_data, train_rows, class_ids),
                                                 epochs=finetune_epochs, lr=lr, seed=seed)
            table.append({**row(f"{current}, head refit + fine-tuning", final, info), "finetune": metrics})
        if current == method:
            specialist = copy.deepcopy(final)
    pretrained_cfg = dict(adapter.config.get("pretrained_cfg") or {})
    pretrained_cfg.update(num_classes=len(class_ids), label_names=[adapter.label_names[c] for c in class_ids])
    report = {"base_model": model_name, "class_ids": class_ids, "macs_budget": macs, "method": method,
              "full_macs": full_macs, "k1_fraction": k1_fraction, "train_per_class": train_per_class,
              "val_per_class": val_per_class, "test_per_class": test_per_class,
              "finetune_epochs": finetune_epochs, "lr": lr, "seed": seed,
              "test_images": int(test[1].numel())}
    exported = SpecialistForImageClassification.from_pruned(
        specialist, architecture=adapter.config.get("architecture"), pretrained_cfg=pretrained_cfg,
        class_ids=class_ids, label_names=adapter.label_names, base_model=model_name, macs_budget=macs,
        pruning_method=method, metrics={r["name"]: {k: v for k, v in r.items() if k != "finetune"} for r in table})
    if out_dir is not None:
        save_specialist(exported, out_dir, table, report, overwrite=overwrite)
    return {"model": exported, "table": table, "report": report}
