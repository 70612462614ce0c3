"""Models that load in transformers but not safely or not completely: one line, or the right data config."""

from __future__ import annotations

import fractions
import json
from pathlib import Path

import pytest
import timm
import torch
from helpers_models import save_tiny_transformers_model
from safetensors.torch import load_file
from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

from hf_decomp import InfluentialIndices
from hf_decomp.cli import main
from hf_decomp.models import load_classifier
from hf_decomp.utils.errors import DecompValueError

# ---- item 5: a pytorch_model.bin that weights_only refuses ---------------------------------------------


def _save_unsafe_bin(folder: Path) -> Path:
    """A tiny transformers ResNet whose weights are a pytorch_model.bin holding a non-tensor object."""
    save_tiny_transformers_model(folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    state["note"] = fractions.Fraction(1, 3)  # a global weights_only does not allow
    torch.save(state, folder / "pytorch_model.bin")
    return folder


UNSAFE = (r"Could not read the weights of transformers model .* safely \(UnpicklingError: .*Unsupported global: "
          r"GLOBAL fractions.Fraction.*\). Only tensors are loaded \(weights_only=True\); re-save it with save_pretrained")


@pytest.mark.parametrize("prefix", ["", "transformers:"])
def test_a_bin_that_weights_only_refuses_is_one_line(tmp_path, prefix):
    folder = _save_unsafe_bin(tmp_path / "unsafe")
    with pytest.raises(DecompValueError, match=UNSAFE) as caught:
        load_classifier(f"{prefix}{folder}")
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)


def test_a_results_folders_unsafe_base_model_is_one_cli_line(tmp_path, capsys):
    folder = _save_unsafe_bin(tmp_path / "unsafe")
    capsys.readouterr()  # the save's progress bars
    run = tmp_path / "run"
    InfluentialIndices([[0, 1], [2], [3]], 16, ["c0", "c1", "c2"], metadata={"base_model": str(folder)}).save(run)
    assert main(["export", "--indices", str(run), "--out", str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hf-decomp export: error: Could not read the weights of transformers model")
    assert "\n" not in err and "weights_only=True" in err
    assert not (tmp_path / "model").exists()


# ---- item 9: a TimmWrapper saved without pretrained_cfg --------------------------------------------------

def _save_bare_timm_wrapper(folder: Path) -> TimmWrapperForImageClassification:
    """Built from a TimmWrapperConfig (no pretrained_cfg) and saved: config.json has no pretrained_cfg."""
    torch.manual_seed(0)
    config = TimmWrapperConfig(architecture="test_resnet", num_labels=3, id2label={0: "cat", 1: "dog", 2: "eel"})
    model = TimmWrapperForImageClassification(config).eval()
    model.save_pretrained(folder)
    assert "pretrained_cfg" not in json.loads((folder / "config.json").read_text())
    return model


@pytest.mark.parametrize("prefix", ["", "transformers:"])
def test_a_timm_wrapper_without_pretrained_cfg_takes_the_timm_models_data_config(tmp_path, prefix):
    wrapper = _save_bare_timm_wrapper(tmp_path / "wrapped")
    expected = timm.data.resolve_model_data_config(wrapper.timm_model)
    adapter = load_classifier(f"{prefix}{tmp_path / 'wrapped'}")
    assert adapter.config["data_config"] == json.loads(json.dumps(expected))  # tuples as lists
    assert adapter.input_size == tuple(expected["input_size"]) == (3, 160, 160)  # test_resnet's default cfg
    assert adapter.label_names == ["cat", "dog", "eel"]
    assert torch.equal(adapter.weight, wrapper.timm_model.fc.weight)
    x = torch.randn(2, *adapter.input_size)
    with torch.no_grad():
        torch.testing.assert_close(adapter(x), wrapper(pixel_values=x).logits)
