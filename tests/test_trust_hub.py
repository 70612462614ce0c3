"""Files at the edges: tampered indices, damaged safetensors, absurd exported configs, pickles, permissions."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hf_decomp import InfluentialIndices
from hf_decomp.errors import DecompError, DecompValueError


@pytest.fixture
def run(tmp_path) -> Path:
    InfluentialIndices([[0, 2], [1, 3], [3]], 4, ["cat", "dog", "eel"], metadata={"k1": 2}).save(tmp_path / "run")
    return tmp_path / "run"


def _edit_json(run: Path, edit) -> None:
    data = json.loads((run / "indices.json").read_text())
    edit(data)
    (run / "indices.json").write_text(json.dumps(data))


def test_saved_indices_load_back(run):
    loaded = InfluentialIndices.load(run)
    assert loaded.sets == [[0, 2], [1, 3], [3]] and loaded.num_features == 4 and loaded.metadata == {"k1": 2}


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["sets"].__setitem__("dog", [1, float("nan")]), r"class 1: nan is not a feature index"),
    (lambda d: d["sets"].__setitem__("dog", [1, 2.7]), r"class 1: 2.7 is not a feature index"),
    (lambda d: d["sets"].__setitem__("dog", ["1"]), r"class 1: '1' is not a feature index"),
    (lambda d: d["sets"].pop("eel"), r"no set for \['eel'\]"),
    (lambda d: d.__setitem__("sets", [[0, 2], [1, 3], [3]]), r"sets must map each class name .* got a list"),
    (lambda d: d.pop("label_names"), r"lacks label_names"),
    (lambda d: d.__setitem__("label_names", "cat"), r"label_names must be a non-empty list"),
    (lambda d: d.__setitem__("num_features", 4.5), r"num_features=4.5 is not an integer"),
    (lambda d: d.__setitem__("num_features", float("nan")), r"num_features=nan is not an integer"),
    (lambda d: d.__setitem__("num_features", "4"), r"num_features: '4' is not a feature index"),
    (lambda d: d["sets"].__setitem__("dog", 3), r"set of class 'dog' is not a list"),
])
def test_tampered_indices_json_is_a_clear_error(run, edit, message):
    _edit_json(run, edit)
    with pytest.raises(DecompValueError, match=message) as caught:
        InfluentialIndices.load(run)
    assert "\n" not in str(caught.value)


def test_indices_json_that_is_not_an_object(run):
    (run / "indices.json").write_text("[1, 2]")
    with pytest.raises(DecompValueError, match="holds a JSON list, not an object"):
        InfluentialIndices.load(run)


def _header(tensor_file: Path) -> tuple[int, bytes]:
    raw = tensor_file.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return n, raw


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[: len(raw) // 2], r"cannot be read|damaged"),
    (lambda raw: b"", r"is empty or truncated \(0 bytes\)"),
    (lambda raw: struct.pack("<Q", 1 << 40) + raw[8:], r"declares a 1099511627776-byte header"),
])
def test_damaged_indices_safetensors_is_a_clear_error(run, damage, message):
    tensor_file = run / "indices.safetensors"
    tensor_file.write_bytes(damage(tensor_file.read_bytes()))
    with pytest.raises(DecompValueError, match=message) as caught:
        InfluentialIndices.load(run)
    assert "indices.safetensors" in str(caught.value) and "re-run `hf-decomp analyze`" in str(caught.value)


def test_indices_safetensors_without_its_tensor(run):
    save_file({"indices": torch.zeros(3, 2, dtype=torch.long)}, run / "indices.safetensors")
    with pytest.raises(DecompValueError, match=r"lacks the tensor\(s\) \['valid'\]"):
        InfluentialIndices.load(run)
