"""Crash-safe periodic checkpoints of a pass over the data: its sums and its position.

A pass (statistics or evaluation) accumulates sums batch by batch. Every ``every_batches`` batches or
``every_minutes`` minutes, each process writes its own sums and how many of *its* batches it has
consumed to ``<name>.rank<r>-of-<N>.safetensors`` (tensors + the state as JSON metadata) by writing
a temporary file and renaming it over the old one, so a kill at any moment leaves either the previous
checkpoint or the new one, never a half-written file. A ``.json`` sidecar repeats the state for people;
the safetensors file is the only thing read back.

Resuming loads the sums, skips the consumed batches and continues: because the batch order is fixed
and the sums are added in the same order, the result is the one of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..utils.errors import DecompValueError
from ..utils.files import atomic_write_json
from .fingerprint import explain_key_difference

__all__ = ["CheckpointConfig", "PassCheckpoint", "CHECKPOINT_FORMAT", "key_digest", "default_checkpoint_dir"]

CHECKPOINT_FORMAT = "hf-decomp-checkpoint/1"


def key_digest(key: dict) -> str:
    """Short stable hash of what determines a pass (model, data, batch size, processes, ...)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def default_checkpoint_dir(out_dir: str | Path) -> Path:
    """Checkpoints live beside the results folder (``.<name>.checkpoints``), which stays empty until done."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.checkpoints"


@dataclass
class CheckpointConfig:
    """When and where passes checkpoint, and whether to continue from existing checkpoints.

    Args:
        directory: folder of the checkpoint files.
        every_batches: save after this many batches of a process (None: no batch trigger).
        every_minutes: save when this many minutes passed since the last save (None: no time trigger).
        resume: load existing checkpoints and continue; without it they are replaced.
    """

    directory: str | Path
    every_batches: int | None = None
    every_minutes: float | None = None
    resume: bool = False

    def __post_init__(self):
        self.directory = Path(self.directory)
        if self.every_batches is not None and self.every_batches < 1:
            raise DecompValueError(f"checkpoint_every={self.every_batches} must be a positive number of batches")
        if self.every_minutes is not None and self.every_minutes <= 0:
            raise DecompValueError(f"checkpoint_minutes={self.every_minutes} must be a positive number of minutes")

    def for_pass(self, name: str, key: dict, process_index: int = 0, num_processes: int = 1) -> "PassCheckpoint":
        return PassCheckpoint(self, name, key, process_index, num_processes)


class PassCheckpoint:
    """The checkpoint file of one pass in one process."""

    def __init__(self, config: CheckpointConfig, name: str, key: dict, process_index: int = 0,
                 num_processes: int = 1):
        self.config = config
        self.name = name
        self.key = {**key, "pass": name, "num_processes": num_processes}
        self.process_index = process_index
        self.num_processes = num_processes
        self._last_save = time.monotonic()
        self._batches_at_last_save = 0

    @property
    def path(self) -> Path:
        rank = f"rank{self.process_index:03d}-of-{self.num_processes:03d}"
        return self.config.directory / f"{self.name}.{rank}.safetensors"

    def load(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(tensors, state) of this process's checkpoint, or None when resuming is off or there is none.

        Raises when the checkpoint was written for another run (model, data, batch size, number of
        processes...), naming what differs, so sums of different runs are never mixed.
        """
        if not self.config.resume:
            return None
        if not self.path.is_file():
            others = sorted(p.name for p in self.config.directory.glob(f"{self.name}.rank*.safetensors"))
            others = [n for n in others if not n.endswith(f"-of-{self.num_processes:03d}.safetensors")]
            if others:
                raise DecompValueError(
                    f"Checkpoints in {self.config.directory} ({others[0]}, ...) were written by another number "
                    f"of processes than this run's {self.num_processes}; resume with the same number of "
                    f"processes (accelerate launch --num_processes N), or drop --resume to start over."
                )
            return None
        try:
            tensors = load_file(self.path)
            with safe_open(self.path, framework="pt") as handle:
                state = json.loads(handle.metadata()["state"])
        except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
            raise DecompValueError(
                f"Checkpoint {self.path} is unreadable ({type(e).__name__}: {e}); delete it to start this pass "
                f"over, or drop --resume."
            ) from e
        if not isinstance(state, dict):
            raise DecompValueError(f"Checkpoint {self.path} has metadata that is not a JSON object (edited?); "
                                   f"delete it to start this pass over, or drop --resume.")
        if state.get("format") != CHECKPOINT_FORMAT:
            raise DecompValueError(f"Checkpoint {self.path} has format {state.get('format')!r}, expected "
                                   f"{CHECKPOINT_FORMAT!r}; delete it or drop --resume.")
        stored = state.get("key", {})
        different = sorted(k for k in set(stored) | set(self.key) if stored.get(k) != _jsonable(self.key).get(k))
        if different:
            details = "; ".join(f"{k}: checkpoint {stored.get(k)!r}, now {_jsonable(self.key).get(k)!r}"
                                for k in different[:5])
            raise DecompValueError(
                f"Checkpoint {self.path} belongs to another run ({explain_key_difference(different)}{details}). "
                f"Resume with the same model, data and settings, "
                f"or drop --resume to start over (the checkpoint will be replaced)."
            )
        position, complete = state.get("position"), state.get("complete")
        if isinstance(position, bool) or not isinstance(position, int) or position < 0 \
                or not isinstance(complete, bool):
            raise DecompValueError(
                f"Checkpoint {self.path} has edited or damaged metadata (position={position!r}, "
                f"complete={complete!r}; expected a batch count >= 0 and true/false). Delete it to start this "
                f"pass over, or drop --resume.")
        self._batches_at_last_save = position
        return tensors, state

    def due(self, position: int) -> bool:
        """Whether a save is due after ``position`` batches of this process."""
        every = self.config.every_batches
        if every is not None and position - self._batches_at_last_save >= every:
            return True
        minutes = self.config.every_minutes
        return minutes is not None and time.monotonic() - self._last_save >= 60 * minutes

    def save(self, tensors: dict[str, torch.Tensor], position: int, complete: bool = False, **extra) -> None:
        """Atomically write the sums and the position (batches consumed by this process)."""
        state = {"format": CHECKPOINT_FORMAT, "key": _jsonable(self.key), "position": int(position),
                 "complete": bool(complete), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
        directory = self.config.directory
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp,
                      metadata={"format": CHECKPOINT_FORMAT, "state": json.dumps(state)})
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())  # the data must be on disk before the rename makes it current
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        atomic_write_json(self.path.with_suffix(".json"), state)
        self._last_save = time.monotonic()
        self._batches_at_last_save = int(position)


def _jsonable(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))
