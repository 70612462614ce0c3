"""Streaming pooled features out of a model, batch by batch, with a progress bar.

Works the same under ``python`` and ``accelerate launch``: each process reads its own share of the
data (no padded duplicates: ``even_batches=False``), and only the main process shows progress.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from tqdm.auto import tqdm

from .data import ImageSplit, make_dataloader
from .models import ClassifierAdapter

__all__ = ["FeaturePass", "make_accelerator", "collect_features"]


def make_accelerator(cpu: bool = False, mixed_precision: str | None = None) -> Accelerator:
    """An Accelerator whose data loaders never duplicate samples to even out processes."""
    return Accelerator(
        cpu=cpu,
        mixed_precision=mixed_precision,
        dataloader_config=DataLoaderConfiguration(even_batches=False),
    )


@dataclass
class FeaturePass:
    """One pass over a split: iterate it for (features (B, d) float32, labels (B,)) batches.

    After the loop, ``skipped_images`` holds how many images this process could not read.
    """

    adapter: ClassifierAdapter
    split: ImageSplit
    accelerator: Accelerator
    batch_size: int = 256
    num_workers: int | None = None
    description: str = "features"
    skipped_images: int = 0
    seen_images: int = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = self.accelerator.prepare_data_loader(
            make_dataloader(self.split, self.adapter.transform, self.batch_size, self.num_workers)
        )
        total = self.split.num_rows
        if total is not None and self.accelerator.num_processes > 1:
            total = -(-total // self.accelerator.num_processes)
        bar = tqdm(total=total, desc=self.description, unit="img", dynamic_ncols=True,
                   disable=not self.accelerator.is_local_main_process)
        device = self.accelerator.device
        try:
            for batch in loader:
                self.skipped_images += int(batch["skipped"])
                pixel_values = batch["pixel_values"]
                bar.update(pixel_values.shape[0] + int(batch["skipped"]))
                if pixel_values.shape[0] == 0:
                    continue
                with torch.inference_mode(), self.accelerator.autocast():
                    features = self.adapter.forward_features(pixel_values.to(device, non_blocking=True))
                self.seen_images += pixel_values.shape[0]
                yield features.float(), batch["labels"].to(device)
        finally:
            bar.close()


def collect_features(
    adapter: ClassifierAdapter,
    split: ImageSplit,
    accelerator: Accelerator | None = None,
    batch_size: int = 256,
    num_workers: int | None = None,
    description: str = "features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """All features and labels of a split in memory (for small splits such as CIFAR-10: 50k x 64)."""
    accelerator = accelerator or make_accelerator()
    feature_pass = FeaturePass(adapter, split, accelerator, batch_size, num_workers, description)
    features, labels = [], []
    for batch_features, batch_labels in feature_pass:
        features.append(batch_features.cpu())
        labels.append(batch_labels.cpu())
    if not features:
        return torch.empty(0, adapter.num_features), torch.empty(0, dtype=torch.long)
    return torch.cat(features), torch.cat(labels)
