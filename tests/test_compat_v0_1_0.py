"""Folders written by hf-decomp 0.1.0 (before the re-layout) still load: results folders and exported models.

The fixtures in tests/fixtures/v0_1_0 were written by that version (see their README.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification

import hf_decomp.hub  # noqa: F401  (registers the decomposed model with the Auto classes)
from hf_decomp.analysis.folder import ResultsFolder
from hf_decomp.cli import main
from hf_decomp.explore import open_explored
from hf_decomp.method.indices import InfluentialIndices

FIXTURES = Path(__file__).parent / "fixtures" / "v0_1_0"


@pytest.fixture
def old(tmp_path, monkeypatch) -> Path:
    """A copy of the fixtures as the working directory (they record relative paths; never write the repo)."""
    folder = shutil.copytree(FIXTURES, tmp_path / "v0_1_0")
    monkeypatch.chdir(folder)
    return folder


def _expected():
    tensors = load_file(FIXTURES / "expected_logits.safetensors")
    return tensors["pixel_values"], tensors["logits"]


def test_an_old_exported_model_loads_with_the_library_classes(old):
    model = AutoModelForImageClassification.from_pretrained("model_v0_1_0").eval()
    assert type(model).__module__ == "hf_decomp.portable.modeling_decomp"
    pixels, logits = _expected()
    with torch.no_grad():
        # kernels differ in the last bits between CPUs (AVX2 / AVX-512): equal to float rounding, not bit for bit
        torch.testing.assert_close(model(pixels).logits, logits, rtol=1e-6, atol=1e-6)


_REMOTE = """
import importlib.abc, sys
class HideHfDecomp(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hf_decomp":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, HideHfDecomp())
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained("model_v0_1_0", trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
tensors = load_file("expected_logits.safetensors")
with torch.no_grad():
    print(torch.allclose(model(tensors["pixel_values"]).logits, tensors["logits"], rtol=1e-6, atol=1e-6))
"""


def test_an_old_exported_model_loads_with_its_own_remote_code(old):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(old / "modules")
    result = subprocess.run([sys.executable, "-c", _REMOTE], cwd=old, env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "True"


def test_an_old_results_folder_loads_and_exports_the_same_model(old):
    recorded = json.loads((old / "results_v0_1_0" / "indices.json").read_text())
    indices = InfluentialIndices.load("results_v0_1_0")
    assert indices.sets == [recorded["sets"][name] for name in indices.label_names] and indices.num_features == 256
    folder = ResultsFolder.load("results_v0_1_0")
    assert folder.metrics["selection"]["k2"] == 3 and folder.examples is not None
    assert open_explored("results_v0_1_0").adapter.num_classes == 3

    assert main(["export", "--indices", "results_v0_1_0", "--model", "tiny_model", "--out", "new_export"]) == 0
    model = AutoModelForImageClassification.from_pretrained("new_export").eval()
    pixels, logits = _expected()
    with torch.no_grad():
        # kernels differ in the last bits between CPUs (AVX2 / AVX-512): equal to float rounding, not bit for bit
        torch.testing.assert_close(model(pixels).logits, logits, rtol=1e-6, atol=1e-6)
