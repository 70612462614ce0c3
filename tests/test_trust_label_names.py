"""Pure label-name matching: literal cases and the permutation property."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_decomp.data.label_names import (
    first_synonym,
    is_placeholder_names,
    match_label_names,
    normalise_name,
    order_from_label_map,
    read_label_map,
)
from hf_decomp.utils.errors import DecompFileError, DecompValueError

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_normalisation_ignores_case_spaces_underscores_and_commas():
    assert normalise_name("  Great_White  Shark ") == "great white shark"
    assert normalise_name("tench,Tinca tinca") == normalise_name("Tench, Tinca_tinca") == "tench tinca tinca"
    assert first_synonym("tench, Tinca tinca") == "tench"


def test_same_names_in_the_same_order_is_the_identity():
    match = match_label_names(["Airplane", "AUTOMOBILE", "bird"], ["airplane", "automobile", "bird"])
    assert match.order == [0, 1, 2] and match.is_identity and match.how == "names"


def test_same_names_in_another_order_give_the_model_index_of_each_dataset_class():
    match = match_label_names(["dog", "airplane", "cat"], ["airplane", "cat", "dog"])
    assert match.order == [2, 0, 1] and not match.is_identity
    assert match.moved(["dog", "airplane", "cat"], ["airplane", "cat", "dog"]) == [
        "dog (0) -> dog (2)", "airplane (1) -> airplane (0)", "cat (2) -> cat (1)"]


def test_full_descriptions_match_first_synonyms():
    match = match_label_names(["goldfish, Carassius auratus", "tench, Tinca tinca"], ["tench", "goldfish"])
    assert match.order == [1, 0] and match.how == "first synonyms"


def test_wnids_are_matched_before_names():
    # names that would pair wrongly by position are overruled by the WordNet ids
    match = match_label_names(["crane", "crane"], ["crane", "crane"], dataset_wnids=["n03126707", "n02012849"],
                              model_wnids=["n02012849", "n03126707"])
    assert match.order == [1, 0] and match.how == "wnids"


def test_repeated_names_pair_in_order_and_are_reported():
    match = match_label_names(["crane", "maillot", "crane"], ["crane", "crane", "maillot"])
    assert match.order == [0, 2, 1] and match.ambiguous == ["crane"]


def test_different_names_are_listed_with_the_fix():
    with pytest.raises(DecompValueError, match=r"only in the dataset \['red'\]; only in the model \['cat'\]\. "
                                               r"State which .* --label-map FILE.json"):
        match_label_names(["red", "dog"], ["cat", "dog"], dataset="Dataset 'd'", model="model 'm'")
    with pytest.raises(DecompValueError, match=r"Dataset 'd' has 3 classes but model 'm' has 10, and their label names "
                                               r"differ: only in the dataset \['red', 'green', 'blue'\]"):
        match_label_names(["red", "green", "blue"], CIFAR, dataset="Dataset 'd'", model="model 'm'")


def test_placeholder_names_say_nothing():
    assert is_placeholder_names(None) and is_placeholder_names(["0", "1", "2"])
    assert is_placeholder_names(["LABEL_0", "LABEL_1"]) and is_placeholder_names(["class_0", "class_1"])
    assert not is_placeholder_names(["1", "2"]) and not is_placeholder_names(["a0", "b1"])
    assert not is_placeholder_names(CIFAR)


def test_label_map_by_names_and_by_indices():
    assert order_from_label_map({"Rot": "red", "Gruen": "green"}, ["gruen", "rot"], ["red", "green"]) == {1: 0, 0: 1}
    assert order_from_label_map({"0": 2, "1": "0", "2": 1}, None, ["a", "b", "c"]) == {0: 2, 1: 0, 2: 1}
    with pytest.raises(DecompValueError, match=r"does not say which model class the dataset classes \['blau'\] are"):
        order_from_label_map({"rot": "red"}, ["rot", "blau"], ["red", "blue"])
    with pytest.raises(DecompValueError, match=r"several dataset classes to the model classes \['red'\]"):
        order_from_label_map({"rot": "red", "blau": "red"}, ["rot", "blau"], ["red", "blue"])
    with pytest.raises(DecompValueError, match=r"'purple' is not a model label name or index"):
        order_from_label_map({"rot": "purple"}, ["rot"], ["red"])
    with pytest.raises(DecompValueError, match=r"model index 7 is outside \[0, 2\)"):
        order_from_label_map({"0": 7}, None, ["red", "blue"])


def test_label_map_files_are_checked(tmp_path):
    good = tmp_path / "map.json"
    good.write_text(json.dumps({"a": "b"}))
    assert read_label_map(good) == {"a": "b"}
    with pytest.raises(DecompFileError, match="does not exist"):
        read_label_map(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DecompValueError, match="is not valid JSON"):
        read_label_map(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(DecompValueError, match="must hold a non-empty JSON object"):
        read_label_map(tmp_path / "list.json")


_names = st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=6), min_size=1, max_size=12, unique=True)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), names=_names)
def test_any_permutation_of_the_names_is_remapped_back_exactly(data, names):
    permutation = data.draw(st.permutations(range(len(names))))
    dataset_names = [names[i] for i in permutation]  # dataset class j is the model's class permutation[j]
    styled = [n.upper() if j % 2 else f" {n}_" for j, n in enumerate(dataset_names)]  # case, spaces, underscores
    match = match_label_names(styled, names)
    assert match.order == list(permutation)
    assert [styled[j] for j in sorted(range(len(names)), key=match.order.__getitem__)] == [
        styled[permutation.index(i)] for i in range(len(names))]
