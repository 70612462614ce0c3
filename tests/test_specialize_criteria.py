"""Specialist pruning criteria on hand-set networks whose right answer is known, and their registry."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_specialize import TwoLayerColourNet, colour_images

from hf_decomp.specialize.criteria import (
    PRUNING_CRITERIA,
    CriterionInputs,
    block_output_names,
    final_feature_scores,
    propagated_layer_scores,
    score_groups,
    taylor_group_scores,
)
from hf_decomp.specialize.importance import FrozenImportance
from hf_decomp.specialize.pruning import CUSTOMIZED_PRUNERS, prepare_for_pruning, prune_by_ratio, restrict_head
from hf_decomp.specialize.vocabulary import CRITERIA

INPUT = (3, 4, 4)
EPS = 1e-5  # BatchNorm2d's default


class ThreeColourNet(TwoLayerColourNet):
    """The same 1x1 conv -> BN -> ReLU -> 1x1 conv -> BN -> ReLU -> pool -> linear, other hand-set weights.

    Layer-1 channels: 0 = R, 1 = G, 2 = 5 B (the largest weights), 3 = 0.1 (R + G + B), read by no class.
    Layer 2 is the identity. Class c's logit reads channel c only (blue's at 1/5), so a channel serves
    exactly one class: specializing to two classes must keep their two channels and drop the third
    colour's, which L1 magnitude keeps for its large weights.
    """

    def __init__(self):
        super().__init__()
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 5], [0.1, 0.1, 0.1]])[:, :, None, None])
            self.conv2.weight.copy_(torch.eye(4)[:, :, None, None])
            self.fc.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0.2, 0]]))
            self.fc.bias.zero_()


def specialize_channels(criterion: str, classes: list[int]) -> list[int]:
    """Layer-1 channels kept when half of every group is pruned for ``classes`` by ``criterion``."""
    net = ThreeColourNet()
    prepared = restrict_head(prepare_for_pruning(net), classes)
    pixels, labels = colour_images(4, classes)
    scores = score_groups(criterion, CriterionInputs(prepared, INPUT, pixels, labels, CUSTOMIZED_PRUNERS))
    pruned = prune_by_ratio(prepared, INPUT, FrozenImportance(scores), 0.5, "uniform")
    return [int(torch.nonzero(net.conv1.weight[:, :, 0, 0] == row.view(1, -1)).view(-1, 2)[:, 0].mode().values)
            for row in pruned.conv1.weight[:, :, 0, 0]]


@pytest.mark.parametrize("criterion", ["taylor", "propagated", "votes-block", "votes-bn"])
def test_a_channel_one_class_uses_survives_for_it_and_goes_for_the_others(criterion):
    assert sorted(specialize_channels(criterion, [0, 1])) == [0, 1]  # red + green: blue's channel goes
    assert sorted(specialize_channels(criterion, [1, 2])) == [1, 2]  # green + blue: red's channel goes
    assert sorted(specialize_channels(criterion, [0, 2])) == [0, 2]


def test_magnitude_keeps_the_largest_weights_whatever_the_classes():
    kept = specialize_channels("magnitude", [0, 1])
    assert 2 in kept and 3 not in kept  # blue's 5 B survives a red + green specialist; R and G tie for the other


def test_propagated_scores_are_absolute_weights_times_the_scores_above_literal():
    """NISP: s_bn2 = s_final; s_bn1[i] = sum_o |W2[o, i]| s_final[o] / sqrt(1 + eps) (bn2's scale)."""
    net = ThreeColourNet()
    with torch.no_grad():
        net.conv2.weight.copy_(torch.tensor([[1.0, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [-2, 0, 0, 1]])[:, :, None, None])
        net.bn2.weight.copy_(torch.tensor([1.0, -3.0, 1.0, 1.0]))  # |gamma| is the scale that propagates
    scores = propagated_layer_scores(net, INPUT, torch.tensor([2.0, 3.0, 0.0, 1.0]))
    torch.testing.assert_close(scores["bn2"], torch.tensor([2.0, 3.0, 0.0, 1.0], dtype=torch.float64))
    above = torch.tensor([2.0, 9.0, 0.0, 1.0]) / math.sqrt(1 + EPS)  # |gamma_2| s_final / sigma
    expected = torch.tensor([above[0] + 2 * above[3], 0.5 * above[0] + above[1], 0.0, above[3]], dtype=torch.float64)
    torch.testing.assert_close(scores["bn1"], expected)


def test_final_feature_scores_weight_each_class_head_row_by_its_vote_share():
    net = restrict_head(ThreeColourNet(), [0, 2])
    pixels, labels = colour_images(4, [0, 2])
    # k1 = 1 of 4: red images all vote channel 0, blue images channel 2 (5 B); |W| = 1 and 0.2 there
    scores = final_feature_scores(net, pixels, labels, k1_fraction=0.25)
    torch.testing.assert_close(scores, torch.tensor([1.0, 0.0, 0.2, 0.0], dtype=torch.float64))


def test_taylor_scores_equal_the_hand_computed_first_order_terms():
    """One image, one batch: per channel, mean over the group's members (conv1 out, bn1 weight, conv2 in)
    of sum |w * dL/dw|, squared; L the cross-entropy of the restricted logits, computed by hand."""
    net = ThreeColourNet()
    with torch.no_grad():
        for bn in (net.bn1, net.bn2):
            bn.running_var.fill_(1 - EPS)  # batch norms are exactly the identity
        net.fc.bias.copy_(torch.tensor([0.3, -0.2, 0.0]))
    prepared = restrict_head(prepare_for_pruning(net), [0, 1])
    x = torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4).contiguous()
    scores = taylor_group_scores(prepared, INPUT, x, torch.tensor([0]), CUSTOMIZED_PRUNERS)
    # by hand: h1 = relu(W1 x) = [0.5, 0.25, 0, 0.075]; h2 = h1; z = W_fc[:2] h2 + b = [0.8, 0.05]
    w1 = net.conv1.weight[:, :, 0, 0]
    h1 = torch.relu(w1 @ torch.tensor([0.5, 0.25, 0.0]))
    z = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0]]) @ h1 + torch.tensor([0.3, -0.2])
    dz = torch.softmax(z, 0) - torch.tensor([1.0, 0.0])
    dh2 = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0]]).T @ dz  # through the head (pooling of a constant map)
    active = (h1 > 0).float()
    d_conv2 = (dh2 * active)[:, None] * h1[None, :]  # dL/dW2[o, i]: 16 positions, each 1/16 of the pooled gradient
    dh1 = (torch.eye(4).T @ (dh2 * active)) * active
    d_conv1 = dh1[:, None] * torch.tensor([0.5, 0.25, 0.0])[None, :]
    d_gamma1 = dh1 * h1  # bn1 is the identity: its normalised input is h1's pre-activation
    d_gamma2 = dh2 * active * h1
    conv1_terms = (w1 * d_conv1).abs().sum(1)
    group1 = (conv1_terms + (torch.ones(4) * d_gamma1).abs() + (torch.eye(4) * d_conv2).abs().sum(0)) / 3
    assert set(scores) == {"conv1", "conv2"}
    torch.testing.assert_close(scores["conv1"], (group1 ** 2).to(torch.float64), rtol=1e-5, atol=1e-9)
    fc = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0]])
    fc_terms = (fc * (dz[:, None] * h1[None, :])).abs().sum(0)
    group2 = ((torch.eye(4) * d_conv2).abs().sum(1) + (torch.ones(4) * d_gamma2).abs() + fc_terms) / 3
    torch.testing.assert_close(scores["conv2"], (group2 ** 2).to(torch.float64), rtol=1e-5, atol=1e-9)


def test_block_votes_read_each_residual_block_at_its_output():
    model = timm.create_model("cifar10_resnet20", pretrained=False)
    mapping = block_output_names(model)
    assert mapping == {f"layer{s}.{b}.bn2": f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)}


def test_the_cli_vocabulary_lists_exactly_the_registered_criteria():
    assert sorted(CRITERIA) == sorted(PRUNING_CRITERIA)


def test_global_allocation_prunes_the_lowest_normalised_scores_across_groups():
    """conv1's group: [0.1, 0.1, 0.1, 0.1] (flat); conv2's: [4, 3, 0.5, 0.5] (mean 2). Raw, conv1's are the
    lowest; normalised by each group's mean ([1, 1, 1, 1] and [2, 1.5, 0.25, 0.25]) conv2's last two are:
    global pruning of a quarter of the 8 channels removes exactly them, uniform one channel of each group."""
    prepared = restrict_head(prepare_for_pruning(ThreeColourNet()), [0, 1, 2])
    scores = {"conv1": torch.tensor([0.1, 0.1, 0.1, 0.1], dtype=torch.float64),
              "conv2": torch.tensor([4.0, 3.0, 0.5, 0.5], dtype=torch.float64)}
    global_ = prune_by_ratio(prepared, INPUT, FrozenImportance(scores), 0.25, "global")
    uniform = prune_by_ratio(prepared, INPUT, FrozenImportance(scores), 0.25, "uniform")
    assert (global_.conv1.out_channels, global_.conv2.out_channels) == (4, 2)
    assert (uniform.conv1.out_channels, uniform.conv2.out_channels) == (3, 3)


class ResidualBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(2, 2, 1, bias=False), nn.BatchNorm2d(2)
        self.conv2, self.bn2 = nn.Conv2d(2, 2, 1, bias=False), nn.BatchNorm2d(2)
        self.shortcut = nn.Identity()

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + self.shortcut(x))


class OneBlockNet(nn.Module):
    """Stem = identity on 2 channels, then one residual block whose branch adds [-0.5, 0.25] x (input channel 0).

    An image (3, 0) gives relu(bn2) = relu([-1.5, 0.75]) = [0, 0.75] but a block output
    relu([-1.5, 0.75] + [3, 0]) = [1.5, 0.75]: the block computes a sum in which channel 0 leads, which
    relu(bn2) alone never shows.
    """

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(2, 2, 1, bias=False), nn.BatchNorm2d(2)
        self.layer1 = nn.Sequential(ResidualBlock())
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            for bn in (self.bn1, self.layer1[0].bn1, self.layer1[0].bn2):
                bn.running_var.fill_(1 - EPS)
            self.conv1.weight.copy_(torch.eye(2)[:, :, None, None])
            self.layer1[0].conv1.weight.copy_(torch.eye(2)[:, :, None, None])
            self.layer1[0].conv2.weight.copy_(torch.tensor([[-0.5, 0], [0.25, 0]])[:, :, None, None])
        self.eval()

    def get_classifier(self):
        return self.fc

    def forward_features(self, x):
        return self.layer1(F.relu(self.bn1(self.conv1(x))))

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_block_votes_are_taken_after_the_residual_sum_and_bn_votes_before_it():
    net = OneBlockNet()
    pixels = torch.zeros(4, 2, 2, 2)
    pixels[:, 0] = 3.0
    labels = torch.tensor([0, 0, 1, 1])
    inputs = CriterionInputs(restrict_head(prepare_for_pruning(net), [0, 1]), (2, 2, 2), pixels, labels,
                             CUSTOMIZED_PRUNERS, k1_fraction=0.5)
    # the stage's group holds the stem norm and the block's last norm: stem relu(bn1) = [3, 0] votes channel 0
    # at both; block: relu(bn2) = [0, 0.75] votes channel 1, the block output [1.5, 0.75] votes channel 0
    stage = "conv1"
    assert score_groups("votes-bn", inputs)[stage].tolist() == [1.0, 1.0]
    assert score_groups("votes-block", inputs)[stage].tolist() == [2.0, 0.0]
