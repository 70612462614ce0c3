"""Small things the trust tests share (their own file: helpers_models.py belongs to other work)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import timm

REPO = Path(__file__).resolve().parents[1]


def tiny_colour_model(folder: Path) -> Path:
    """timm's test_resnet with random weights and the colour dataset's class names, saved with save_for_hf."""
    model = timm.create_model("test_resnet", num_classes=3, pretrained=False)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32), "crop_pct": 1.0}
    timm.models.save_for_hf(model, str(folder), model_config={"label_names": ["red", "green", "blue"]})
    return folder


def subprocess_env() -> dict:
    """The environment of a child python that imports this checkout, one thread, no progress bars."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR")}
    env.update({"PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1",
                "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""})
    return env


PYTHON = sys.executable
