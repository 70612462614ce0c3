"""Streaming pooled features out of a model, batch by batch, with a progress bar.

Works the same under ``python`` and ``accelerate launch``: each process reads its own share of the
data (no padded duplicates: ``even_batches=False``), and only the main process shows progress.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from tqdm.auto import tqdm

from ..data import ImageSplit, device_batches, make_dataloader
from ..data.labels import to_model_labels
from ..data.loader import compute_threads
from ..models import ClassifierAdapter
from ..utils.checks import check_positive_int
from ..utils.errors import DecompValueError
from .distributed import shard_split

__all__ = ["FeaturePass", "make_accelerator", "launched_without_accelerator"]


def launched_without_accelerator() -> bool:
    """Whether a launcher (torchrun, ``accelerate launch --multi_gpu``) started several processes on a
    machine with no accelerator: accelerate then joins them only when told ``cpu=True`` (gloo);
    otherwise each process believes it is alone and reads the whole dataset."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        return False
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6: CUDA, XPU, MPS, ... alike
    available = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    return world_size > 1 and not available


def make_accelerator(cpu: bool = False, mixed_precision: str | None = None) -> Accelerator:
    """An Accelerator whose data loaders never duplicate samples to even out processes.

    Under torchrun on a CPU-only machine it runs on CPU across the launched processes (gloo), so each
    process reads its own share, exactly as on GPUs.
    """
    return Accelerator(
        cpu=cpu or launched_without_accelerator(),
        mixed_precision=mixed_precision,
        dataloader_config=DataLoaderConfiguration(even_batches=False),
    )


@dataclass
class FeaturePass:
    """One pass over a split: iterate it for (features (B, d) float32, labels (B,)) batches.

    Under several processes each reads its own share exactly once (see :mod:`hf_decomp.passes.distributed`).
    After the loop, ``skipped_images`` holds how many images this process could not read and
    ``resized_images`` how many had to be resized to the model's input size.

    Args:
        start_batch: skip this many of this process's batches first (resuming from a checkpoint);
            map-style splits skip the indices without reading them, streaming splits read and drop them.
        with_keys: yield (features, labels, keys) with the per-image content keys of the collator.
        channels_last: feed the model channels-last inputs (faster convolutions on recent GPUs).
        decode: ``"gpu"`` decodes JPEG images on a CUDA device (:mod:`hf_decomp.data.gpu_decode`);
            the default ``"cpu"`` decodes in the loader workers (also the fallback without CUDA);
            ``"cpu-fast"`` decodes there with libjpeg-turbo and torch's resize (:mod:`hf_decomp.data.fast_decode`);
            ``"dali"`` decodes with NVIDIA DALI on the device (:mod:`hf_decomp.data.dali_decode`, refused
            without DALI or CUDA).

    ``position`` counts this process's batches consumed so far, ``start_batch`` included: after a
    yielded batch is used, saving the sums with ``position`` makes a checkpoint that resumes exactly.
    """

    adapter: ClassifierAdapter
    split: ImageSplit
    accelerator: Accelerator
    batch_size: int = 256
    num_workers: int | None = None
    description: str = "features"
    skipped_images: int = 0
    seen_images: int = 0
    resized_images: int = 0
    start_batch: int = 0
    with_keys: bool = False
    channels_last: bool = False
    position: int = 0
    decode: str = "cpu"

    def __post_init__(self):
        check_positive_int("batch_size", self.batch_size, "--batch-size")
        if self.num_workers is not None and (not isinstance(self.num_workers, int) or self.num_workers < 0):
            raise DecompValueError(f"num_workers={self.num_workers!r} must be 0 or more; give --num-workers N "
                                   f"with N >= 0 (0 reads the data in the main process).")

    def _loader(self):
        accelerator = self.accelerator
        split = shard_split(self.split, accelerator.process_index, accelerator.num_processes)
        loader = make_dataloader(split, self.adapter.transform, self.batch_size, self.num_workers,
                                 input_size=self.adapter.input_size, with_keys=self.with_keys,
                                 device=accelerator.device, decode=self.decode)
        decoder = loader.collate_fn.device_decoder(accelerator.device, self.batch_size)
        if split.streaming:  # already sharded by node; accelerate's iterable sharding would pad
            return loader, True, decoder
        # batches reach the device through device_batches (uint8 copy, normalisation there)
        loader = accelerator.prepare_data_loader(loader, device_placement=False)
        if self.start_batch:
            loader = accelerator.skip_first_batches(loader, self.start_batch)
        return loader, False, decoder

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        loader, streaming, decoder = self._loader()
        total = self.split.num_rows
        if total is not None and self.accelerator.num_processes > 1:
            total = -(-total // self.accelerator.num_processes)
        initial = self.start_batch * self.batch_size if not streaming else 0
        bar = tqdm(total=total, initial=min(initial, total or initial), desc=self.description, unit="img",
                   dynamic_ncols=True, disable=not self.accelerator.is_local_main_process)
        device = self.accelerator.device
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.position = 0 if streaming else self.start_batch
        threads = torch.get_num_threads()
        if device.type == "cpu":  # the workers' cores are not the forward pass's (no oversubscription)
            torch.set_num_threads(compute_threads(loader.num_workers if hasattr(loader, "num_workers") else 0))
        try:
            for batch in device_batches(loader, device, memory_format, decoder):
                self.position += 1
                bar.update(batch["pixel_values"].shape[0] + int(batch["skipped"]))
                if self.position <= self.start_batch:  # streaming resume: already counted in the checkpoint
                    continue
                self.skipped_images += int(batch["skipped"])
                self.resized_images += int(batch.get("resized", 0))
                pixel_values = batch["pixel_values"]
                if pixel_values.shape[0] == 0:
                    continue
                with torch.inference_mode(), self.accelerator.autocast():
                    features = self.adapter.forward_features(pixel_values)
                self.seen_images += pixel_values.shape[0]
                labels = to_model_labels(batch["labels"], self.split)
                if self.with_keys:
                    yield features.float(), labels, batch["keys"].cpu()
                else:
                    yield features.float(), labels
        finally:
            torch.set_num_threads(threads)
            bar.close()

