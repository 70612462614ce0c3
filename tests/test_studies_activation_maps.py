"""Activation maps (Table 7) on a hand-built CNN whose channels light up known image quadrants."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from PIL import Image

from hf_decomp.data import load_image_split
from hf_decomp.models import ClassifierAdapter, adapt_timm_model
from hf_decomp.studies.activation_maps import (
    activation_map_study,
    candidate_layers,
    class_activation_maps,
    feature_maps_function,
    map_correlation,
    non_influential_channels,
    normalize_map,
    select_images,
)
from hf_decomp.utils.errors import DecompValueError, UnsupportedHeadError

QUADRANTS = ((slice(0, 4), slice(0, 4)), (slice(0, 4), slice(4, 8)), (slice(4, 8), slice(0, 4)),
             (slice(4, 8), slice(4, 8)))  # top-left, top-right, bottom-left, bottom-right


class QuadrantMaps(nn.Module):
    """Channel j = the image's brightness (mean over RGB) inside quadrant j, zero elsewhere."""

    def __init__(self):
        super().__init__()
        mask = torch.zeros(4, 8, 8)
        for j, (rows, cols) in enumerate(QUADRANTS):
            mask[j, rows, cols] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x):
        return x.mean(1, keepdim=True) * self.mask


class QuadrantNet(nn.Module):
    """timm-style: class 0 reads channels 0 (w 2) and 1 (w 1); class 1 reads 2 (w 2) and 3 (w 1)."""

    def __init__(self):
        super().__init__()
        self.maps = QuadrantMaps()
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[2.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 1.0]]))
            self.fc.bias.zero_()
        self.pretrained_cfg = {"input_size": (3, 8, 8), "crop_pct": 1.0, "interpolation": "bilinear",
                               "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "label_names": ["top", "bottom"]}

    def get_classifier(self):
        return self.fc

    def forward_features(self, x):
        return self.maps(x)

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@pytest.fixture
def adapter():
    return adapt_timm_model(QuadrantNet(), name="quadrant-net")


def _peak_quadrant(cam: torch.Tensor) -> int:
    index = int(cam.flatten().argmax())
    row, col = divmod(index, cam.shape[1])
    return (2 if row >= cam.shape[0] // 2 else 0) + (1 if col >= cam.shape[1] // 2 else 0)


def test_maps_of_a_white_image_match_the_weights(adapter):
    maps = adapter.forward_feature_maps(torch.ones(1, 3, 8, 8))[0]
    cams = class_activation_maps(maps, adapter.weight.detach(), 0, [0])
    assert cams["non_influential_channels"] == [1]  # largest weight outside {0}
    standard = cams["standard"]
    assert standard[0, 0] == 2.0 and standard[0, 7] == 1.0 and standard[7, 7] == 0.0
    assert _peak_quadrant(cams["influential"]) == 0
    assert _peak_quadrant(cams["non_influential"]) == 1
    assert normalize_map(cams["influential"]).sum() == 16.0  # exactly the 4x4 quadrant at 1, rest 0


def test_non_influential_and_normalisation_helpers():
    assert non_influential_channels(torch.tensor([0.5, 3.0, 1.0, 2.0]), [1], 2) == [3, 2]
    drawn = non_influential_channels(torch.zeros(50), [0, 1, 2], 5, "random", seed=3)
    assert len(set(drawn)) == 5 and not set(drawn) & {0, 1, 2}
    assert drawn == non_influential_channels(torch.zeros(50), [0, 1, 2], 5, "random", seed=3)
    with pytest.raises(DecompValueError, match="'lowest' is not one of top-weight, random"):
        non_influential_channels(torch.zeros(4), [0], 1, "lowest")
    up = normalize_map(torch.tensor([[0.0, 2.0], [4.0, 4.0]]), size=(4, 4))
    assert up.shape == (4, 4) and float(up.min()) == 0.0 and float(up.max()) == 1.0
    assert normalize_map(torch.full((2, 2), 3.0)).sum() == 0.0
    ramp = torch.arange(4.0).reshape(2, 2)
    assert map_correlation(ramp, 2 * ramp + 1) == pytest.approx(1.0)
    assert map_correlation(ramp, -ramp) == pytest.approx(-1.0)
    assert map_correlation(ramp, torch.ones(2, 2)) is None


def test_study_grid_on_colour_images(adapter, color_dataset, tmp_path):
    split = load_image_split(str(color_dataset), "test")
    study = activation_map_study(adapter, split, [[0], [2]], tmp_path, selection="hand-set", classes=["top", "bottom"])
    assert (tmp_path / "activation_maps.png").stat().st_size > 2000
    assert "Selection: hand-set" in study.markdown
    assert [image["class"] for image in study.data["images"]] == ["top", "bottom"]
    assert [image["influential_channels"] for image in study.data["images"]] == [[0], [2]]
    assert [image["non_influential_channels"] for image in study.data["images"]] == [[1], [3]]
    # a near-uniform image: per quadrant the CAM is (2, 1, 0, 0), the influential map (1, 0, 0, 0) and the
    # non-influential map (0, 1, 0, 0): correlations 1.25 / sqrt(2.75 * 0.75) = 0.870 and 0.25 / 1.436 = 0.174
    first = study.data["images"][0]
    assert first["correlation_influential"] == pytest.approx(0.870, abs=0.02)
    assert first["correlation_non_influential"] == pytest.approx(0.174, abs=0.02)
    with pytest.raises(DecompValueError, match="2 is outside the model's 2 classes"):
        activation_map_study(adapter, split, [[0], [2]], tmp_path, selection="hand-set", classes=[2])


def test_select_images_by_class_and_count(color_dataset):
    split = load_image_split(str(color_dataset), "test")
    images = select_images(split, ["red", "green", "blue"], classes=["blue", "red"])
    assert [label for _, label in images] == [2, 0]
    assert isinstance(images[0][0], Image.Image)
    assert len(select_images(split, ["red", "green", "blue"], num_images=5)) == 5
    with pytest.raises(DecompValueError, match="1000 images requested but .* has only 24"):
        select_images(split, ["red", "green", "blue"], num_images=1000)
    with pytest.raises(DecompValueError, match="'purple' is not one of the model's labels"):
        select_images(split, ["red", "green", "blue"], classes=["purple"])


def test_bad_layers_list_candidates(adapter):
    with pytest.raises(DecompValueError, match=r"Layer 'nope' does not exist.*\['maps'\]"):
        feature_maps_function(adapter, "nope")
    with pytest.raises(DecompValueError, match=r"Layer 'fc' .* outputs \(1, 2\).*Usable layers: \['maps'\]"):
        feature_maps_function(adapter, "fc")
    maps_fn = feature_maps_function(adapter, "maps")
    assert maps_fn(torch.ones(1, 3, 8, 8)).shape == (1, 4, 8, 8)
    assert candidate_layers(adapter) == ["maps"]


def test_model_without_maps_says_study_does_not_apply(adapter):
    no_maps = ClassifierAdapter(model=adapter.model, classifier=adapter.classifier,
                                features_fn=adapter.forward_features, transform=adapter.transform,
                                label_names=["top", "bottom"], name="pooled-only", source="timm",
                                input_size=(3, 8, 8), feature_maps_fn=None)
    with pytest.raises(UnsupportedHeadError, match=r"do not apply to pooled-only.*\['maps'\]; pass one with --layer"):
        feature_maps_function(no_maps, None)
