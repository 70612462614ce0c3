"""Models at the edges: transformers' TimmWrapper, distilled (two-head) models, --checkpoint for them."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import save_file
from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

from hf_decomp import InfluentialIndices
from hf_decomp.hub import build_decomposed_model, save_decomposed_model
from hf_decomp.models import adapt_timm_model, load_classifier

LABELS = {0: "cat", 1: "dog", 2: "eel"}


def _save_timm_wrapper(folder, seed: int = 0):
    """A tiny timm model saved the way transformers users save timm Hub models (model_type timm_wrapper)."""
    torch.manual_seed(seed)
    pretrained_cfg = {"architecture": "test_resnet", "input_size": [3, 32, 32], "crop_pct": 1.0,
                      "interpolation": "bilinear", "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3],
                      "num_classes": 3}
    config = TimmWrapperConfig(architecture="test_resnet", num_labels=3, id2label=LABELS,
                               pretrained_cfg=pretrained_cfg)
    model = TimmWrapperForImageClassification(config).eval()
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("prefix", ["", "transformers:", "local-dir:"])
def test_a_folder_saved_by_timm_wrapper_decomposes_over_timm_fc(tmp_path, prefix):
    wrapper = _save_timm_wrapper(tmp_path / "wrapped")
    assert json.loads((tmp_path / "wrapped" / "config.json").read_text())["model_type"] == "timm_wrapper"
    adapter = load_classifier(f"{prefix}{tmp_path / 'wrapped'}")
    assert torch.equal(adapter.weight, wrapper.timm_model.fc.weight)
    assert adapter.num_features == wrapper.timm_model.fc.in_features == 96
    assert adapter.label_names == ["cat", "dog", "eel"]
    assert adapter.input_size == (3, 32, 32)  # from the wrapper's pretrained_cfg, as its image processor reads it
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = wrapper(pixel_values=x).logits
        torch.testing.assert_close(adapter(x), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(adapter.weight @ adapter.forward_features(x).T + adapter.bias[:, None],
                                   expected.T, rtol=0, atol=1e-5)


def test_an_in_memory_timm_wrapper_and_its_export(tmp_path):
    from hf_decomp.models import adapt_transformers_model

    wrapper = _save_timm_wrapper(tmp_path / "wrapped")
    adapter = adapt_transformers_model(wrapper, name="wrapped")
    assert adapter.source == "timm" and adapter.config["architecture"] == "test_resnet"
    sets = [[0, 5], [1, 7], [2, 9]]
    model = build_decomposed_model(adapter, InfluentialIndices(sets, 96, adapter.label_names))
    save_decomposed_model(model, tmp_path / "export")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = adapter.forward_features(x)
        expected = torch.stack([features[:, s] @ adapter.weight[c, s] + adapter.bias[c]
                                for c, s in enumerate(sets)], dim=1)
        torch.testing.assert_close(model(x).logits, expected, rtol=0, atol=1e-5)


def _tiny_distilled_deit(num_classes: int = 5, seed: int = 0):
    torch.manual_seed(seed)
    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32, patch_size=8,
                              embed_dim=16, depth=1, num_heads=2, num_classes=num_classes,
                              pretrained_cfg_overlay={"input_size": (3, 32, 32)})
    with torch.no_grad():  # two different heads, so averaging them is not one head over the mean token
        for head in (model.head, model.head_dist):
            head.weight.normal_()
            head.bias.normal_()
    return model.eval()


def test_distilled_deit_decomposes_over_the_concatenated_tokens():
    model = _tiny_distilled_deit()
    adapter = adapt_timm_model(model, name="tiny_deit")
    assert adapter.num_features == 32 and adapter.num_classes == 5
    # [W/2, W_dist/2] and (b + b_dist)/2, exactly (halving is exact in floating point).
    assert torch.equal(adapter.weight, torch.cat([model.head.weight / 2, model.head_dist.weight / 2], dim=1))
    assert torch.equal(adapter.bias, (model.head.bias + model.head_dist.bias) / 2)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)
        features = adapter.forward_features(x)
        assert torch.equal(features, torch.cat([tokens[:, 0], tokens[:, 1]], dim=1))
        torch.testing.assert_close(features @ adapter.weight.T + adapter.bias, model(x), rtol=0, atol=1e-6)
    assert not adapter.has_feature_maps


def test_distilled_deit_checkpoint_with_another_class_count_loads(tmp_path):
    model = _tiny_distilled_deit(num_classes=7)
    save_file(model.state_dict(), tmp_path / "deit.safetensors")
    import hf_decomp.models.loading as loading

    real_create = timm.create_model

    def create(name, **kwargs):  # the tiny geometry; the class count must come from the checkpoint
        if name.startswith("deit_tiny_distilled"):
            kwargs = {**dict(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2,
                             pretrained_cfg_overlay={"input_size": (3, 32, 32)}), **kwargs}
        return real_create(name, **kwargs)

    loading.timm.create_model, saved = create, loading.timm.create_model
    try:
        adapter = load_classifier("timm:deit_tiny_distilled_patch16_224", checkpoint=tmp_path / "deit.safetensors")
    finally:
        loading.timm.create_model = saved
    assert adapter.num_classes == 7 and adapter.num_features == 32
    assert torch.equal(adapter.weight[:, 16:], model.head_dist.weight / 2)


def test_a_distilled_deit_exports_and_reloads_with_the_same_decomposed_logits(tmp_path):
    from transformers import AutoModelForImageClassification

    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, num_classes=4).eval()
    with torch.no_grad():
        for head in (model.head, model.head_dist):
            head.weight.normal_()
            head.bias.normal_()
    adapter = adapt_timm_model(model, name="deit_tiny_distilled_patch16_224")
    sets = [[0, 200], [5, 192, 300], [7], [191, 192]]  # indices >= 192 read the distillation token
    decomposed = build_decomposed_model(adapter, InfluentialIndices(sets, 384, adapter.label_names))
    assert decomposed.config.backbone_head_names == ["head", "head_dist"]
    save_decomposed_model(decomposed, tmp_path / "deit")
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "deit")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        features = adapter.forward_features(x)
        expected = torch.stack([features[:, s] @ adapter.weight[c, s] + adapter.bias[c]
                                for c, s in enumerate(sets)], dim=1)
        torch.testing.assert_close(decomposed(x).logits, expected, rtol=0, atol=1e-5)
        assert torch.equal(reloaded(x).logits, decomposed(x).logits)
        assert torch.equal(reloaded(x, output_contributions=True).features, features)


def test_imagenet_label_names_are_unique_so_the_sets_do_not_collide():
    from hf_decomp.models.loading import _timm_label_names

    model = timm.create_model("test_resnet", num_classes=1000, pretrained=False)
    model.pretrained_cfg = {**model.pretrained_cfg, "label_names": None}
    names = _timm_label_names(model, 1000)
    assert len(set(names)) == 1000
    assert names[134] == "crane (n02012849)" and names[517] == "crane (n03126707)" and names[0] == "tench"


def test_repeated_label_names_are_made_unique_by_the_adapter():
    from helpers_models import ColourNet

    net = ColourNet()
    net.pretrained_cfg = {**net.pretrained_cfg, "label_names": ["red", "red", "blue"]}
    assert adapt_timm_model(net, name="colournet").label_names == ["red (0)", "red (1)", "blue"]
