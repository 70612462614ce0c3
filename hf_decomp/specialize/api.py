"""``specialize(...)``: the Python API behind ``hf-decomp specialize``."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from ..data import load_image_split
from ..metrics.crossfit import crossfit_choice, half_standard_error
from ..models import load_classifier
from ..portable.modeling_specialist import SpecialistForImageClassification
from ..utils.errors import DecompValueError
from ..utils.files import check_output_dir
from .distill import evaluate_accuracy
from .export import save_specialist
from .pipeline import (
    build_specialist,
    criterion_scores_cached,
    load_specialist_data,
    parameter_count,
    restricted_network,
)
from .pruning import check_budget, count_macs, resolve_classes
from .recovery import one_thread_latency
from .settings import SpecializeSettings

__all__ = ["specialize", "resume_folder"]


def resume_folder(settings: SpecializeSettings) -> Path:
    """Where an unfinished run keeps its scores and per-epoch checkpoints (removed once the model is saved).

    One subfolder per combination of the settings that shape the networks, so a run with another
    budget, class subset or recipe starts afresh instead of resuming a different network.
    """
    shaping = {k: v for k, v in settings.to_dict().items() if k not in ("criterion", "out", "overwrite", "batch_size")}
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:12]
    out = Path(settings.out)
    return out.with_name(f"{out.name}.resume") / digest


def specialize(settings: SpecializeSettings | None = None, /, progress: bool = True, **kwargs) -> dict:
    """Prune a classifier to ``macs`` of its multiply-adds for ``classes``; distil; choose; save.

    Every criterion in ``settings.criterion`` is pruned by the same allocation and recovered by the
    same fixed recipe. With one criterion nothing is chosen, and the whole test subset is reported
    (protocol ``fixed-recipe``). With several, the one best on test half A is exported and its
    accuracy read on half B; the cross-fitted estimate (choose on A read B, choose on B read A,
    mean) is reported beside it (protocol ``test-half-crossfit``).

    Returns ``{"model", "table", "report"}``: the exported :class:`SpecialistForImageClassification`,
    one row per network (the full model restricted to the classes first) and the run's facts.
    """
    if settings is None:
        settings = SpecializeSettings.with_overrides(None, dict(kwargs))
    elif kwargs:
        raise TypeError(f"specialize() takes settings or keyword arguments, not both (got {sorted(kwargs)})")
    if settings.out is not None:
        check_output_dir(settings.out, settings.overwrite)
    adapter = load_classifier(settings.model, checkpoint=settings.weights)
    if adapter.source != "timm":
        raise DecompValueError(f"{settings.model}: specialize prunes timm models (Torch-Pruning traces their modules); "
                               f"this one is a transformers model.")
    class_ids = resolve_classes(settings.classes, adapter.label_names)
    model, input_size = adapter.model.eval(), adapter.input_size
    full_macs = count_macs(model, input_size)
    network = restricted_network(model, class_ids)
    check_budget(network, input_size, settings.macs, full_macs)
    folder = resume_folder(settings) if settings.out is not None else None
    phases = tqdm(total=2 + len(settings.criterion), desc="specialize", unit="phase", disable=not progress)
    phases.set_postfix_str("decoding images")
    data = load_specialist_data(load_image_split(settings.dataset, settings.stats_split),
                                load_image_split(settings.dataset, settings.eval_split), class_ids, adapter.transform,
                                train_per_class=settings.train_per_class, half_seed=settings.half_seed,
                                seed=settings.seed)
    halves = data.halves()
    full = {"name": "full model, restricted to the classes", "criterion": None, "macs": full_macs,
            "macs_fraction": 1.0, "params": parameter_count(model),
            "test_accuracy": evaluate_accuracy(network, *data.test),
            **{k: evaluate_accuracy(network, *v) for k, v in halves.items()}, "latency_ms": one_thread_latency(network, input_size)}
    phases.update(1)
    table, networks = [full], {}
    for criterion in settings.criterion:
        phases.set_postfix_str(f"{criterion}: scoring, pruning, distilling")
        scores = criterion_scores_cached(criterion, network, input_size, data, k1_fraction=settings.k1_fraction,
                                         batch_size=settings.batch_size, folder=folder)
        student, info = build_specialist(network, scores, settings.macs, data, settings.recipe(),
                                         input_size=input_size, full_macs=full_macs, allocation=settings.allocation,
                                         seed=settings.seed, folder=None if folder is None else folder / criterion,
                                         progress=progress)
        networks[criterion] = student
        table.append({"name": f"{criterion}, {settings.allocation} allocation, distilled", "criterion": criterion,
                      **{k: info[k] for k in ("macs", "macs_fraction", "params", "pruning_ratio", "test_accuracy",
                                              "half_a", "half_b", "history")},
                      "latency_ms": one_thread_latency(student, input_size)})
        phases.update(1)
    phases.set_postfix_str("saving")
    built = {row["criterion"]: row for row in table[1:]}
    if len(built) == 1:
        chosen = next(iter(built))
        protocol = {"protocol": "fixed-recipe", "reported_split": f"{settings.eval_split} (all images of the classes)",
                    "accuracy": built[chosen]["test_accuracy"], "full_accuracy": full["test_accuracy"]}
    else:
        choice = crossfit_choice({c: r["half_a"] for c, r in built.items()}, {c: r["half_b"] for c, r in built.items()})
        chosen = choice["chosen_on_a"]
        protocol = {"protocol": "test-half-crossfit", "reported_split": f"{settings.eval_split} half B",
                    "accuracy": built[chosen]["half_b"], "full_accuracy": full["half_b"], "crossfit": choice,
                    "crossfit_full_accuracy": (full["half_a"] + full["half_b"]) / 2,
                    "standard_error": half_standard_error(built[chosen]["half_b"], len(data.half_b))}
    report = {"settings": settings.to_dict(), "base_model": settings.model, "class_ids": class_ids,
              "label_names": [adapter.label_names[c] for c in class_ids], "full_macs": full_macs,
              "chosen_criterion": chosen, "train_images": int(data.train[1].numel()),
              "test_images": int(data.test[1].numel()), "half_sizes": [len(data.half_a), len(data.half_b)],
              "recipe": settings.recipe().__dict__, **protocol}
    pretrained_cfg = dict(adapter.config.get("pretrained_cfg") or {})
    pretrained_cfg.update(num_classes=len(class_ids), label_names=report["label_names"])
    exported = SpecialistForImageClassification.from_pruned(
        networks[chosen], architecture=adapter.config.get("architecture"), pretrained_cfg=pretrained_cfg,
        class_ids=class_ids, label_names=adapter.label_names, base_model=settings.model, macs_budget=settings.macs,
        pruning_method=chosen,
        metrics={r["name"]: {k: v for k, v in r.items() if k != "history"} for r in table})
    if settings.out is not None:
        save_specialist(exported, settings.out, table, report, overwrite=settings.overwrite)
        shutil.rmtree(folder.parent, ignore_errors=True)
    phases.update(1)
    phases.close()
    return {"model": exported, "table": table, "report": report}
