"""The validation split of recovery: seeded, stratified hold-out from train, or a named split."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_decomp.data.holdout import hold_out, parse_val_split, stratified_split
from hf_decomp.utils.errors import DecompValueError


def test_stratified_split_literal():
    labels = torch.tensor([0] * 6 + [1] * 4)
    rest, held = stratified_split(labels, 5, seed=0)
    assert torch.bincount(labels[held]).tolist() == [3, 2]  # 5 * 6/10 and 5 * 4/10
    assert sorted(rest.tolist() + held.tolist()) == list(range(10))
    assert torch.equal(held, stratified_split(labels, 5, seed=0)[1])  # seeded
    assert not torch.equal(held, stratified_split(labels, 5, seed=1)[1])
    # 3 of 3 classes of 4: each gets floor(4 * 3/12) = 1
    assert (torch.arange(12) // 4)[stratified_split(torch.arange(12) // 4, 3)[1]].tolist() == [0, 1, 2]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=2, max_size=200), st.data())
def test_stratified_split_holds_out_each_class_in_proportion(label_list, data):
    labels = torch.tensor(label_list)
    size = data.draw(st.integers(1, labels.numel() - 1))
    seed = data.draw(st.integers(0, 2**31 - 1))
    rest, held = stratified_split(labels, size, seed)
    assert held.numel() == size and rest.numel() == labels.numel() - size
    assert torch.equal(torch.cat([rest, held]).sort().values, torch.arange(labels.numel()))  # a partition
    assert torch.equal(held, held.sort().values) and torch.equal(rest, rest.sort().values)
    counts = torch.bincount(labels, minlength=6)
    taken = torch.bincount(labels[held], minlength=6)
    for n, t in zip(counts.tolist(), taken.tolist()):
        share = size * n / labels.numel()
        assert math.floor(share) <= t <= math.ceil(share)


def test_parse_and_bad_sizes(color_dataset):
    from hf_decomp.data import load_image_split

    assert parse_val_split("5000") == 5000 and parse_val_split("validation") == "validation"
    with pytest.raises(DecompValueError, match="must hold out between 1 and 23"):
        stratified_split(torch.zeros(24, dtype=torch.long), 24)
    train = load_image_split(str(color_dataset), "train")
    held = hold_out(train, "6", seed=0)
    assert held.fit.num_rows == 18 and held.validation.num_rows == 6
    assert sorted(held.validation.dataset["label"]) == [0, 0, 1, 1, 2, 2]
    assert held.fit_rows.tolist() + held.validation_rows.tolist() != list(range(24))  # random, not the first rows
    named = hold_out(train, "test", dataset=str(color_dataset))
    assert named.fit is train and named.validation.split == "test" and named.fit_rows is None
    with pytest.raises(DecompValueError, match="is the training split itself"):
        hold_out(train, "train", dataset=str(color_dataset))
    with pytest.raises(DecompValueError, match="--val-split 5000: must hold out between 1 and 23"):
        hold_out(train, "5000")
