import json

import pytest
import timm
import torch
import torch.nn as nn
from conftest import SHARED, requires_shared
from helpers_models import ColourNet, save_tiny_timm_model, save_tiny_transformers_model

import hf_decomp.models  # noqa: F401  (registers the CIFAR ResNets in timm)
from hf_decomp.models import adapt_timm_model, load_classifier
from hf_decomp.models.cifar_resnet import convert_checkpoint
from hf_decomp.utils.errors import DecompFileError, DecompValueError, UnsupportedHeadError


@pytest.mark.parametrize("depth, blocks", [(20, 3), (32, 5), (44, 7), (56, 9)])
def test_cifar_resnets_are_in_timms_registry_with_the_papers_shapes(depth, blocks):
    model = timm.create_model(f"cifar10_resnet{depth}", pretrained=False)
    assert len(model.layer1) == len(model.layer3) == blocks
    assert model.forward_features(torch.zeros(2, 3, 32, 32)).shape == (2, 64, 8, 8)
    assert model.get_classifier().weight.shape == (10, 64)
    assert timm.data.resolve_model_data_config(model)["mean"] == (0.485, 0.456, 0.406)


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
    block = timm.create_model("cifar10_resnet20").layer2[0]
    x = torch.randn(1, 16, 8, 8)
    out = block.shortcut(x)
    assert out.shape == (1, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


@requires_shared("models", "cifar10-resnets")
def test_pretrained_weights_convert_to_safetensors_and_load_through_timm(tmp_path):
    source = next((SHARED / "models" / "cifar10-resnets").glob("resnet20-*.th"))
    converted = convert_checkpoint(source)
    assert converted.suffix == ".safetensors"
    model = timm.create_model("cifar10_resnet20", pretrained=True)
    original = torch.load(source, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.linear.weight, original["module.linear.weight"])
    by_path = timm.create_model("cifar10_resnet20", pretrained=True, pretrained_cfg_overlay={"file": str(source)})
    assert torch.equal(by_path.conv1.weight, original["module.conv1.weight"])


def test_missing_cifar_weights_say_where_they_were_looked_for(monkeypatch, tmp_path):
    monkeypatch.setattr("hf_decomp.models.cifar_resnet.shared_dir", lambda: None)
    with pytest.raises(DecompFileError, match="HF_DECOMP_SHARED_DIR"):
        timm.create_model("cifar10_resnet32", pretrained=True)


def test_adapter_features_are_the_input_of_the_linear_layer():
    adapter = adapt_timm_model(ColourNet(), name="colournet")
    x = torch.rand(4, 3, 16, 16)
    features = adapter.forward_features(x)
    assert torch.allclose(features[:, :3], x.mean(dim=(2, 3)))
    assert torch.allclose(adapter(x), adapter.model(x))
    assert adapter.label_names == ["red", "green", "blue"]
    assert adapter.has_feature_maps and adapter.forward_feature_maps(x).shape == (4, 6, 16, 16)


def test_a_timm_folder_loads_by_path_and_by_local_dir_prefix(tmp_path):
    folder = save_tiny_timm_model(tmp_path / "tiny_timm")
    adapter = load_classifier(str(folder))
    assert adapter.source == "timm" and adapter.num_classes == 3
    assert adapter.label_names == ["colour_0", "colour_1", "colour_2"]
    assert adapter.input_size == (3, 32, 32)
    again = load_classifier(f"local-dir:{folder}")
    assert torch.equal(again.weight, adapter.weight)


def test_a_timm_checkpoint_file_with_its_architecture(tmp_path):
    model = timm.create_model("test_resnet", num_classes=5)
    from safetensors.torch import save_file
    save_file(model.state_dict(), tmp_path / "weights.safetensors")
    adapter = load_classifier("timm:test_resnet", checkpoint=tmp_path / "weights.safetensors")
    assert adapter.num_classes == 5 and torch.equal(adapter.weight, model.get_classifier().weight)
    with pytest.raises(DecompValueError, match="--weights"):
        load_classifier(str(tmp_path / "weights.safetensors"))


def test_a_transformers_folder_loads_through_auto_classes(tmp_path):
    folder = save_tiny_transformers_model(tmp_path / "tiny_hf")
    adapter = load_classifier(str(folder))
    assert adapter.source == "transformers"
    assert (adapter.num_features, adapter.num_classes) == (16, 3)
    assert adapter.label_names == ["c0", "c1", "c2"]
    x = torch.randn(2, *adapter.input_size)
    assert torch.allclose(adapter(x), adapter.model(pixel_values=x).logits, atol=1e-5)
    assert adapter.has_feature_maps


def test_unknown_names_list_the_accepted_forms():
    with pytest.raises(DecompValueError, match="Accepted: 'timm:<arch>"):
        load_classifier("no_such_model_anywhere")
    with pytest.raises(DecompValueError, match="Unknown model prefix 'torchhub'"):
        load_classifier("torchhub:resnet50")
    with pytest.raises(DecompValueError, match="Did you mean"):
        load_classifier("resnet5O")


def test_offline_hub_models_fail_with_a_hint_for_local_weights():
    with pytest.raises(DecompFileError, match="--weights"):
        load_classifier("timm:resnet18.a1_in1k")


def test_a_head_that_is_not_one_linear_layer_is_named():
    model = ColourNet()
    model.fc = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))
    with pytest.raises(UnsupportedHeadError, match="colournet: the classification head is not one linear layer"):
        adapt_timm_model(model, name="colournet")


def test_a_head_doing_more_than_its_linear_layer_is_caught_by_the_logit_check():
    class Distilled(ColourNet):
        def forward(self, x):  # e.g. a second (distillation) head averaged in
            return super().forward(x) + 1.0

    with pytest.raises(UnsupportedHeadError, match="logits are not W x \\+ b"):
        adapt_timm_model(Distilled(), name="distilled")


def test_directory_without_a_model_config_is_explained(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"foo": 1}))
    with pytest.raises(DecompValueError, match="neither 'architecture'"):
        load_classifier(str(tmp_path))
