"""Class-specialist sub-networks: votes, Torch-Pruning with class votes, MAC counts, export round trip."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_decomp.portable.modeling_specialist import ChannelShortcut, SpecialistForImageClassification, module_shapes
from hf_decomp.specialize.criteria import CriterionInputs, score_groups
from hf_decomp.specialize.importance import FrozenImportance
from hf_decomp.specialize.pipeline import restricted_network
from hf_decomp.specialize.pruning import (
    CUSTOMIZED_PRUNERS,
    ChannelShortcutPruner,
    check_budget,
    count_macs,
    prepare_for_pruning,
    prune_by_ratio,
    prune_to_budget,
    resolve_classes,
    restrict_head,
)
from hf_decomp.utils.errors import DecompValueError

INPUT = (3, 4, 4)


class TwoLayerColourNet(nn.Module):
    """1x1 conv -> BN -> ReLU -> 1x1 conv -> BN -> ReLU -> pool -> linear, hand-set.

    Layer 1 channels: 0 = R, 1 = -5 G (largest weights, never active for red or blue), 2 = 0.9 B,
    3 = 0.1 (R + G + B). Layer 2 is diag(1, 5, 1, 1). Red images light up channel 0, blue images
    channel 2 at both layers, so the {red, blue} specialist keeps channels {0, 2}; L1 magnitude keeps {0, 1}.
    The head reads channels 0-2 only, so dropping 1 and 3 leaves red/blue logits unchanged.
    """

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([[1.0, 0, 0], [0, -5, 0], [0, 0, 0.9], [0.1, 0.1, 0.1]])[:, :, None, None])
            self.conv2.weight.copy_(torch.diag(torch.tensor([1.0, 5, 1, 1]))[:, :, None, None])
            self.fc.weight.copy_(torch.eye(4)[:3])
            self.fc.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
        self.eval()

    def get_classifier(self):
        return self.fc

    def forward_features(self, x):
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def colour_images(per_class: int = 3, colours=(0, 2)) -> tuple[torch.Tensor, torch.Tensor]:
    """Images lit in one colour channel each, with a little noise; labels are positions in ``colours``
    (default red = 0 and blue = 1, the {red, blue} subset)."""
    generator = torch.Generator().manual_seed(0)
    images, labels = [], []
    for position, channel in enumerate(colours):
        for _ in range(per_class):
            image = 0.01 * torch.rand(INPUT, generator=generator)
            image[channel] += 1.0
            images.append(image)
            labels.append(position)
    return torch.stack(images), torch.tensor(labels)


def vote_group_scores(net, pixels, labels, criterion="votes-bn"):
    prepared = restrict_head(prepare_for_pruning(net), [0, 2])
    return score_groups(criterion, CriterionInputs(prepared, INPUT, pixels, labels, CUSTOMIZED_PRUNERS))


def test_votes_of_hand_set_net_are_the_active_channels_of_the_chosen_classes():
    pixels, labels = colour_images()
    votes = vote_group_scores(TwoLayerColourNet(), pixels, labels)
    # groups are keyed by their root convolution: conv1's channels are scored at bn1, conv2's at bn2
    assert votes["conv1"].tolist() == [0.5, 0.0, 0.5, 0.0]
    assert votes["conv2"].tolist() == [0.5, 0.0, 0.5, 0.0]


def test_votes_pool_the_activations_after_the_relu():
    """Channel 1 (-5 G) is +5 on half of a red image whose G alternates -1/+1 and -5 on the other
    half: its mean is 0 before the ReLU but 2.5 after, so red images vote for it, not channel 0."""
    pixels, labels = colour_images()
    pixels[labels == 0, 1, :, :2] = -1.0
    pixels[labels == 0, 1, :, 2:] = 1.0
    votes = vote_group_scores(TwoLayerColourNet(), pixels, labels)
    assert votes["conv1"].tolist() == [0.0, 0.5, 0.5, 0.0]


def test_class_aware_pruning_keeps_the_voted_channels_and_magnitude_keeps_the_largest():
    net = TwoLayerColourNet()
    pixels, labels = colour_images()
    votes = vote_group_scores(net, pixels, labels)
    prepared = restrict_head(prepare_for_pruning(net), [0, 2])
    aware = prune_by_ratio(prepared, INPUT, FrozenImportance(votes), 0.5)
    assert torch.equal(aware.conv1.weight, net.conv1.weight[[0, 2]])
    assert torch.equal(aware.conv2.weight, net.conv2.weight[[0, 2]][:, [0, 2]])
    assert torch.equal(aware.fc.weight, net.fc.weight[[0, 2]][:, [0, 2]])
    assert torch.equal(aware.fc.bias, net.fc.bias[[0, 2]])
    # the specialist's logits are the full model's restricted logits (dropped channels are unread)
    torch.testing.assert_close(aware(pixels), net(pixels)[:, [0, 2]], rtol=0, atol=1e-6)
    import torch_pruning as tp

    magnitude = prune_by_ratio(prepared, INPUT, tp.importance.GroupMagnitudeImportance(p=1), 0.5)
    assert torch.equal(magnitude.conv1.weight, net.conv1.weight[[0, 1]])


def test_flop_counter_macs_equal_literal_counts():
    net = TwoLayerColourNet()
    # conv1 4*3*16 + conv2 4*4*16 + fc 4*3 (BN, ReLU and pooling are not multiply-adds)
    assert count_macs(net, INPUT) == 4 * 3 * 16 + 4 * 4 * 16 + 4 * 3 == 460
    pixels, labels = colour_images()
    votes = vote_group_scores(net, pixels, labels)
    pruned = prune_by_ratio(restrict_head(prepare_for_pruning(net), [0, 2]), INPUT, FrozenImportance(votes), 0.5)
    assert count_macs(pruned, INPUT) == 2 * 3 * 16 + 2 * 2 * 16 + 2 * 2 == 164


def test_channel_shortcut_pruner_renumbers_literal_example():
    shortcut = ChannelShortcut([0, 1, 2, 3], [2, 3, 4, 5], in_channels=4, out_channels=8)
    pruner = ChannelShortcutPruner()
    pruner.prune_in_channels(shortcut, [1])
    assert (shortcut.src.tolist(), shortcut.dst.tolist(), shortcut.in_channels) == ([0, 1, 2], [2, 4, 5], 3)
    pruner.prune_out_channels(shortcut, [0, 4])
    assert (shortcut.src.tolist(), shortcut.dst.tolist(), shortcut.out_channels) == ([0, 2], [1, 3], 6)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_pruned_shortcut_equals_original_on_kept_channels(data):
    """new(x[:, kept_in]) == old(x with pruned inputs zeroed)[:, kept_out], for any pruned channel sets."""
    in_channels = data.draw(st.integers(1, 6))
    pad = data.draw(st.integers(0, 3))
    original = ChannelShortcut(list(range(in_channels)), [c + pad for c in range(in_channels)],
                               in_channels, in_channels + 2 * pad)
    pruned_in = data.draw(st.sets(st.integers(0, in_channels - 1), max_size=in_channels - 1))
    pruned_out = data.draw(st.sets(st.integers(0, in_channels + 2 * pad - 1), max_size=in_channels + 2 * pad - 1))
    pruned = ChannelShortcut(original.src.tolist(), original.dst.tolist(), in_channels, in_channels + 2 * pad)
    pruner = ChannelShortcutPruner()
    pruner.prune_in_channels(pruned, sorted(pruned_in))
    pruner.prune_out_channels(pruned, sorted(pruned_out))
    x = torch.randn(2, in_channels, 4, 4)
    kept_in = [c for c in range(in_channels) if c not in pruned_in]
    kept_out = [c for c in range(in_channels + 2 * pad) if c not in pruned_out]
    zeroed = x.clone()
    zeroed[:, sorted(pruned_in)] = 0
    assert torch.equal(pruned(x[:, kept_in]), original(zeroed)[:, kept_out])


def test_option_a_shortcut_swap_keeps_outputs():
    model = timm.create_model("cifar10_resnet20", pretrained=False).eval()
    prepared = prepare_for_pruning(model)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(prepared(x), model(x))
    assert sum(isinstance(m, ChannelShortcut) for m in prepared.modules()) == 2


def test_pruned_resnet_round_trips_through_save_and_from_pretrained(tmp_path):
    model = timm.create_model("cifar10_resnet20", pretrained=False).eval()
    network = restricted_network(model, [3, 5])
    scores = score_groups("magnitude", CriterionInputs(network, (3, 32, 32), None, None, CUSTOMIZED_PRUNERS))
    pruned, info = prune_to_budget(network, (3, 32, 32), 0.4, scores=scores, allocation="uniform",
                                   reference_macs=count_macs(model, (3, 32, 32)))
    assert info["macs_fraction"] <= 0.4 and info["macs"] == count_macs(pruned, (3, 32, 32))
    shortcut = pruned.layer2[0].shortcut
    assert shortcut.in_channels < 16 and shortcut.out_channels < 32  # both stages were pruned
    exported = SpecialistForImageClassification.from_pruned(
        pruned, architecture="cifar10_resnet20", pretrained_cfg={}, class_ids=[3, 5],
        label_names=[f"c{i}" for i in range(10)], base_model="cifar10_resnet20", macs_budget=0.4,
        pruning_method="magnitude")
    exported.save_pretrained(tmp_path, safe_serialization=True)
    # the portable code travels with the weights (trust_remote_code=True where hf-decomp is absent)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar_resnet.py", "config.json", "configuration_specialist.py",
                                                          "model.safetensors", "modeling_specialist.py"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["module_shapes"] == {k: list(v) for k, v in module_shapes(pruned).items()}
    reloaded = SpecialistForImageClassification.from_pretrained(tmp_path).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(reloaded(pixel_values=x).logits, pruned(x))
    assert reloaded.config.id2label == {0: "c3", 1: "c5"}


def test_unknown_class_names_list_the_models_labels():
    with pytest.raises(DecompValueError, match=r"'cow' is not one of the model's 3 labels \(red, green, blue\)"):
        resolve_classes("red,cow", ["red", "green", "blue"])
    assert resolve_classes("blue, 0", ["red", "green", "blue"]) == [0, 2]
    with pytest.raises(DecompValueError, match="at least two distinct classes"):
        resolve_classes("red,0", ["red", "green", "blue"])


def test_unreachable_budget_names_the_smallest_reachable_one():
    net = restrict_head(prepare_for_pruning(TwoLayerColourNet()), [0, 2])
    # 90 % of 4 channels leaves 1 per layer: 1*3*16 + 1*1*16 + 1*2 = 66 of 460 MACs
    with pytest.raises(DecompValueError, match=r"smallest reachable budget is 0\.1435"):
        check_budget(net, INPUT, 0.05, 460)
    assert check_budget(net, INPUT, 0.2, 460) == pytest.approx(66 / 460)
    with pytest.raises(DecompValueError, match=r"must be a fraction in \(0, 1\]"):
        check_budget(net, INPUT, 1.5, 460)
