"""Save a specialist as a ``from_pretrained``-able folder: config, weights, code, image processor, card.

The folder loads with ``AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)``
and ``pipeline("image-classification", model=folder, trust_remote_code=True)`` where only transformers,
torch and timm are installed: ``save_pretrained`` copies the portable model code beside the weights.
"""

from __future__ import annotations

from pathlib import Path

from ..portable.modeling_specialist import SpecialistForImageClassification
from ..utils.files import atomic_write_json, atomic_write_text, staged_output_dir

__all__ = ["save_specialist", "render_specialist_card", "specialist_preprocessor"]

_PRIVATE_PRETRAINED_CFG_KEYS = ("file", "state_dict", "url", "hf_hub_filename")


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2f} %"


def specialist_preprocessor(config) -> dict:
    """The image processor config of the base model's eval transform.

    A 32x32 CIFAR model's timm transform is rescale + normalise, which ``ViTImageProcessor`` does
    without timm; any other model keeps timm's own transform (``TimmWrapperImageProcessor``).
    """
    cfg = config.pretrained_cfg or {}
    if tuple(cfg.get("input_size", ())[-2:]) == (32, 32):
        return {"image_processor_type": "ViTImageProcessor", "do_resize": False, "do_rescale": True,
                "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(cfg.get("mean", (0.5,) * 3)),
                "image_std": list(cfg.get("std", (0.5,) * 3)), "do_convert_rgb": True}
    return {"image_processor_type": "TimmWrapperImageProcessor", "architecture": config.architecture,
            "pretrained_cfg": cfg}


def render_specialist_card(config, table: list[dict], report: dict) -> str:
    """Markdown model card: the subset, the budget, how it was built and what was measured."""
    names = [config.id2label[i] for i in range(len(config.class_ids))]
    classes = ", ".join(f"{name} (id {c})" for name, c in zip(names, config.class_ids))
    rows = "\n".join(
        f"| {r['name']} | {r.get('macs_fraction', 1.0):.3f} | {r.get('params', '-')} | "
        f"{r.get('latency_ms', {}).get('batch1', float('nan')):.2f} | "
        f"{r.get('latency_ms', {}).get('batch64', float('nan')):.1f} | {_pct(r.get('test_accuracy'))} | "
        f"{_pct(r.get('half_a'))} | {_pct(r.get('half_b'))} |" for r in table)
    recipe = report["recipe"]
    chosen = next(r for r in table if r.get("criterion") == config.pruning_method)
    settings = report["settings"]
    if report["protocol"] == "fixed-recipe":
        protocol = (f"**Protocol: fixed recipe.** Nothing was chosen: one criterion, the recipe below fixed in advance, "
                    f"the last epoch's weights. Accuracy on all {report['test_images']} {settings['eval_split']} "
                    f"images of these classes: **{report['accuracy']:.2f} %**, the full model restricted to them "
                    f"**{report['full_accuracy']:.2f} %**.")
    else:
        crossfit = report["crossfit"]
        protocol = (f"**Protocol: test halves, cross-fitted.** The {settings['eval_split']} images of these classes were "
                    f"cut into two seeded halves stratified by class (seed {settings['half_seed']}). This model's "
                    f"criterion was chosen on half A among {', '.join(settings['criterion'])}; its accuracy on half B "
                    f"is **{report['accuracy']:.2f} ± {report['standard_error']:.2f} %** (full model restricted: "
                    f"{report['full_accuracy']:.2f} %). Choosing on A and reading B, then the reverse, averages "
                    f"**{crossfit['accuracy']:.2f} %** (full model: {report['crossfit_full_accuracy']:.2f} %).")
    return f"""---
library_name: transformers
pipeline_tag: image-classification
tags: [image-classification, pruning, hf-decomp, class-specialist]
base_model: {config.base_model}
---

# Class specialist of {config.base_model}: {", ".join(names)}

A channel-pruned copy of `{config.base_model}` that only serves the classes {classes}: {chosen['macs_fraction']:.3f}
of its multiply-adds (budget `--macs {config.macs_budget}`, counted with `torch.utils.flop_counter`),
{chosen['params']} parameters.

{protocol}

## How it was built
- **Criterion** `{config.pruning_method}`: every channel group of the network scored once on these classes'
  {report['train_images']} training images (see hf-decomp's `specialize/criteria.py`).
- **Allocation** `{settings['allocation']}`: {"the lowest mean-normalised scores of all groups go first, so the widths follow the scores" if settings['allocation'] == "global" else "every channel group loses the same fraction"}
  (Torch-Pruning); only these classes' rows of the head are kept.
- **Recovery**: batch norms recalibrated, then {recipe['epochs']} epochs of distillation from the full model's
  logits of these classes (KL at temperature {recipe['temperature']} weighted {recipe['distill']}, cross-entropy
  {1 - recipe['distill']:.2f}), SGD Nesterov momentum {recipe['momentum']}, lr {recipe['lr']} cosine to 0, weight decay
  {recipe['weight_decay']}, batch {recipe['batch_size']}, random crop (pad 4) + flip; the last epoch's weights.

| network | MACs (fraction) | parameters | CPU latency, batch 1, 1 thread (ms) | batch 64 (ms) | accuracy, all test images of the classes | half A | half B |
| --- | --- | --- | --- | --- | --- | --- | --- |
{rows}

Accuracy is top-1 among these classes only ("full model, restricted" takes the full model's logits of
these classes). Latency is the median of 10 forward passes on the CPU of the machine that built the model.

## Load

```python
from transformers import pipeline
classify = pipeline("image-classification", model="path/to/this/folder", trust_remote_code=True)
classify("image.png")
```

`trust_remote_code=True` runs the `modeling_specialist.py` shipped in this folder (it needs `torch`,
`transformers` and, to rebuild the unpruned architecture, `timm` unless it is a CIFAR ResNet).
"""


def save_specialist(model: SpecialistForImageClassification, out_dir: str | Path, table: list[dict],
                    report: dict, overwrite: bool = False) -> Path:
    """Write config, weights and code (save_pretrained), the image processor, ``specialize.json`` and ``README.md``."""
    model.config.pretrained_cfg = {k: v for k, v in (model.config.pretrained_cfg or {}).items()
                                   if k not in _PRIVATE_PRETRAINED_CFG_KEYS}
    with staged_output_dir(out_dir, overwrite) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        atomic_write_json(staging / "preprocessor_config.json", specialist_preprocessor(model.config))
        atomic_write_json(staging / "specialize.json", {**report, "table": table})
        atomic_write_text(staging / "README.md", render_specialist_card(model.config, table, report))
    return Path(out_dir)
