"""Helpers that make one pass over the data correct under ``accelerate launch`` / ``torchrun``.

Every process reads its own share of the data exactly once:

* map-style datasets go through accelerate's prepared sampler with ``even_batches=False``
  (process ``p`` takes batches ``p, p + N, ...``; the last batch is short, never padded);
* streaming (``IterableDataset``) splits go through ``datasets.distributed.split_dataset_by_node``
  and are *not* given to accelerate, whose iterable sharding pads the last batch with duplicates.

Statistics and evaluation counts are sums, so the per-process results are added with
:func:`reduce_sum_`. :func:`check_exact_once` verifies after a pass that every row was counted once.
"""

from __future__ import annotations

import dataclasses
import os

import torch
from datasets.distributed import split_dataset_by_node

from ..data import ImageSplit
from ..utils.errors import DecompValueError

__all__ = ["shard_split", "reduce_sum_", "reduce_count", "per_process", "check_exact_once", "raise_if_any_failed",
           "single_process_launch_warning"]


def shard_split(split: ImageSplit, process_index: int, num_processes: int) -> ImageSplit:
    """This process's share of a streaming split (a copy); map-style splits are returned unchanged.

    Map-style splits are sharded later by the prepared data loader, batch by batch, which keeps the
    global batch order of a single-process run. Streaming splits are cut here: whole shards per process
    when there are at least as many shards as processes (shards need not divide evenly: processes never
    wait for each other during a pass), else every N-th example (each process reads and drops the
    rest). A ``limit`` subset is always cut by example: split by shards, ``take`` would draw a
    different subset in each process.
    """
    if num_processes <= 1 or not split.streaming:
        return split
    if not 0 <= process_index < num_processes:
        raise ValueError(f"process_index={process_index} is not in [0, {num_processes})")
    by_shards = not split.subset and getattr(split.dataset, "num_shards", 1) >= num_processes
    dataset = split_dataset_by_node(split.dataset, rank=process_index, world_size=num_processes,
                                    strategy="shards" if by_shards else "examples")
    return dataclasses.replace(split, dataset=dataset)


def reduce_sum_(tensors: dict[str, torch.Tensor], accelerator) -> dict[str, torch.Tensor]:
    """Sum every tensor across processes, in place (a no-op with one process); returns ``tensors``."""
    if accelerator.num_processes > 1:
        for tensor in tensors.values():
            tensor.copy_(accelerator.reduce(tensor, reduction="sum"))
    return tensors


def reduce_count(value: int, accelerator) -> int:
    """Sum of an integer over all processes."""
    if accelerator.num_processes <= 1:
        return int(value)
    return int(accelerator.reduce(torch.tensor(int(value), device=accelerator.device), reduction="sum"))


def per_process(value: int, accelerator) -> list[int]:
    """``value`` of every process, in rank order (collective: every process calls it)."""
    if accelerator.num_processes <= 1:
        return [int(value)]
    from accelerate.utils import gather_object

    return [int(v) for v in gather_object([int(value)])]


def single_process_launch_warning(accelerator) -> str | None:
    """A warning when ``accelerate launch --cpu --num_processes N`` started one process instead of N.

    accelerate runs several CPU processes only through mpirun (``--mpirun_hostfile``); its simple launcher
    starts one process and ignores ``--num_processes``. That process reads all the data once, which is
    correct but not what was asked, so say so.
    """
    cpu_launch = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("true", "1", "yes")
    several_asked = "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ  # set only for N > 1
    if accelerator.num_processes == 1 and cpu_launch and several_asked:
        return ("accelerate launch --cpu started 1 process (accelerate ignores --num_processes on CPU without "
                "mpirun); for N CPU processes use torchrun --nproc_per_node N -m hf_decomp ... or "
                "accelerate launch --multi_gpu --num_processes N")
    return None


def check_exact_once(split: ImageSplit, rows_seen: int) -> None:
    """Raise if a sized split's rows were not each read exactly once (summed over processes).

    ``rows_seen`` counts every row read: used, skipped as unreadable, or dropped as non-finite.
    Unsized (streaming) splits cannot be checked against a length; their count is reported instead.
    """
    expected = split.num_rows
    if expected is not None and rows_seen != expected:
        raise RuntimeError(
            f"{split.name} [{split.split}]: {rows_seen} rows were read across processes but the split has "
            f"{expected}; samples were dropped or duplicated by the data loader. Please report this bug."
        )


def raise_if_any_failed(error: BaseException | None, accelerator) -> None:
    """Collective: every process calls this; if any process failed, all of them raise.

    Without it, one process raising (e.g. a bad label in its shard) leaves the others waiting forever
    in the next reduction. The failing process re-raises its own error; the others raise its message.
    """
    if accelerator.num_processes <= 1:
        if error is not None:
            raise error
        return
    from accelerate.utils import gather_object

    messages = gather_object([None if error is None else f"{type(error).__name__}: {error}"])
    if error is not None:
        raise error
    for rank, message in enumerate(messages):
        if message is not None:
            raise DecompValueError(f"process {rank} of {accelerator.num_processes} failed: {message}")
