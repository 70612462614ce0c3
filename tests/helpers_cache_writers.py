"""Process targets of tests/test_trust_cache.py, in a module of their own: each spawned process imports only
this (torch, safetensors and the one hf-decomp module it exercises), not the test module and its conftest."""

from __future__ import annotations

import os
import sys
import time

import torch
from safetensors.torch import load_file

ROUNDS = 3


def _slow_disk(write):
    """``write`` then a pause: the write of a large file on a busy disk, so the writers overlap for sure."""

    def slowly(*args, **kwargs):
        write(*args, **kwargs)
        time.sleep(0.3)

    return slowly


def convert_rounds(barrier, source: str, root: str) -> None:
    import hf_decomp.models.cifar_resnet as cifar_resnet
    from hf_decomp.models.cifar_resnet import convert_checkpoint

    torch.set_num_threads(1)
    cifar_resnet.save_file = _slow_disk(cifar_resnet.save_file)
    expected = {k.removeprefix("module."): v for k, v in
                torch.load(source, map_location="cpu", weights_only=True)["state_dict"].items()}
    failures = 0
    for round_ in range(ROUNDS):
        os.environ["HF_DECOMP_CACHE"] = os.path.join(root, f"cache-{round_}")  # empty each round
        barrier.wait()
        try:
            loaded = load_file(convert_checkpoint(source))
            failures += sorted(loaded) != sorted(expected) or not all(torch.equal(loaded[k], v)
                                                                       for k, v in expected.items())
        except Exception as e:  # noqa: BLE001 - reported through the exit code
            print(f"round {round_}: {type(e).__name__}: {e}", flush=True)
            failures += 1
    sys.exit(1 if failures else 0)


def batches(count: int = 3, rows: int = 40_000, width: int = 32):
    generator = torch.Generator().manual_seed(1)
    for _ in range(count):
        yield (torch.randn(rows, width, generator=generator), torch.randint(0, 10, (rows,), generator=generator),
               torch.randint(0, 2**40, (rows,), generator=generator))


def fill_rounds(barrier, root: str) -> None:
    from hf_decomp.passes.feature_cache import FeatureCache

    torch.set_num_threads(1)
    expected = [torch.cat(parts) for parts in zip(*batches())]
    failures = 0
    for round_ in range(ROUNDS):
        barrier.wait()
        try:
            cache = FeatureCache(os.path.join(root, f"round-{round_}", "features"))
            cache.write(batches(), {"model": "m"}, shard_size=40_000)
            loaded = cache.load(with_keys=True)
            failures += not cache.holds({"model": "m"}) or not all(torch.equal(a, b) for a, b in zip(loaded, expected))
        except Exception as e:  # noqa: BLE001 - reported through the exit code
            print(f"round {round_}: {type(e).__name__}: {e}", flush=True)
            failures += 1
    sys.exit(1 if failures else 0)
