"""Save a specialist as a ``from_pretrained``-able folder: config (pruned widths), safetensors weights, model card."""

from __future__ import annotations

from pathlib import Path

from ..portable.modeling_specialist import SpecialistForImageClassification
from ..utils.files import atomic_write_json, atomic_write_text, staged_output_dir

__all__ = ["save_specialist", "render_specialist_card"]

_PRIVATE_PRETRAINED_CFG_KEYS = ("file", "state_dict", "url", "hf_hub_filename")


def _pct(value) -> str:
    return "-" if value is None else f"{value:.2f} %"


def render_specialist_card(config, table: list[dict]) -> str:
    """Markdown model card: subset, budget, and the measured table (this model and its baselines)."""
    classes = ", ".join(f"{config.id2label[i]} (id {c})" for i, c in enumerate(config.class_ids))
    rows = "\n".join(
        f"| {r['name']} | {r.get('macs_fraction', 1.0):.3f} | {r.get('macs', '-')} | {r.get('params', '-')} | "
        f"{r.get('latency_ms', {}).get('batch1', float('nan')):.2f} | {r.get('latency_ms', {}).get('batch64', float('nan')):.1f} | "
        f"{_pct(r.get('test_accuracy'))} |" for r in table)
    return f"""---
library_name: transformers
tags: [image-classification, pruning, hf-decomp, class-specialist]
base_model: {config.base_model}
---

# Class specialist of {config.base_model}: {", ".join(config.id2label[i] for i in range(len(config.class_ids)))}

A channel-pruned copy of `{config.base_model}` that only serves the classes {classes}: at every
layer it keeps the channels most voted for by these classes' training images (Algorithm 1 of
Badola et al., "Decomposing the Deep", applied per layer), the rest were removed with Torch-Pruning,
and the head keeps only these classes' rows. Method: `{config.pruning_method}`; budget
`--macs {config.macs_budget}` of the full model's multiply-adds (counted with `torch.utils.flop_counter`).

| model | MACs (fraction) | MACs | parameters | CPU latency batch 1 (ms) | batch 64 (ms) | test accuracy on these classes |
| --- | --- | --- | --- | --- | --- | --- |
{rows}

Accuracy is top-1 over the chosen classes' test images, each model deciding among the chosen classes
only ("full model, restricted" takes the full model's logits of these classes). Latency was measured
on the CPU of the machine that built the model, possibly shared with other work.

## Load

```python
from hf_decomp.portable.modeling_specialist import SpecialistForImageClassification
model = SpecialistForImageClassification.from_pretrained("path/to/this/folder")
logits = model(pixel_values=images).logits  # columns: config.id2label
```
"""


def save_specialist(model: SpecialistForImageClassification, out_dir: str | Path, table: list[dict],
                    report: dict, overwrite: bool = False) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (save_pretrained), ``specialize.json`` and ``README.md``."""
    model.config.pretrained_cfg = {k: v for k, v in (model.config.pretrained_cfg or {}).items()
                                   if k not in _PRIVATE_PRETRAINED_CFG_KEYS}
    with staged_output_dir(out_dir, overwrite) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        atomic_write_json(staging / "specialize.json", {**report, "table": table})
        atomic_write_text(staging / "README.md", render_specialist_card(model.config, table))
    return Path(out_dir)
