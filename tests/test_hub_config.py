"""DecompConfig: fields, save/load, Auto registration, validation messages, self-contained remote code."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
from transformers import AutoConfig

import hf_decomp.portable as portable
from hf_decomp.hub import DecompConfig

PORTABLE_DIR = Path(portable.__file__).parent


def _config(**overrides) -> DecompConfig:
    facts = dict(architecture="test_resnet", pretrained_cfg={"input_size": [3, 32, 32], "mean": [0.5] * 3},
                 num_features=6, index_sets=[[0, 3], [1, 4], [2, 5]], id2label={0: "red", 1: "green", 2: "blue"},
                 k1=2, k2=2, base_model="timm:test_resnet", dataset="uoft-cs/cifar10",
                 metrics={"full_accuracy": 100.0, "decomposed_accuracy": 95.5, "rho": 0.955})
    facts.update(overrides)
    return DecompConfig(**facts)


def test_save_and_load_keep_every_field(tmp_path):
    config = _config(coverage=None, selection_method="histogram")
    config.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["model_type"] == "decomp"
    assert raw["index_sets"] == [[0, 3], [1, 4], [2, 5]]
    assert raw["image_processor_type"] == "TimmWrapperImageProcessor"  # timm's eval transform via pipeline
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is DecompConfig
    assert loaded.index_sets == config.index_sets
    assert loaded.id2label == {0: "red", 1: "green", 2: "blue"}
    assert loaded.label2id == {"red": 0, "green": 1, "blue": 2}
    assert loaded.num_labels == 3 and loaded.num_features == 6 and (loaded.k1, loaded.k2) == (2, 2)
    assert loaded.metrics == {"full_accuracy": 100.0, "decomposed_accuracy": 95.5, "rho": 0.955}
    assert loaded.pretrained_cfg == {"input_size": [3, 32, 32], "mean": [0.5] * 3}


def test_bare_config_and_transformers_backbone_dict():
    assert AutoConfig.for_model("decomp").index_sets is None
    config = _config(backbone_library="transformers", architecture=None, pretrained_cfg=None,
                     backbone_transformers_config={"model_type": "resnet"}, backbone_head_path="classifier.1")
    output = config.to_dict()
    # A "pretrained_cfg" key would make transformers treat the folder as a timm checkpoint.
    assert "pretrained_cfg" not in output and "image_processor_type" not in output
    assert output["backbone_transformers_config"] == {"model_type": "resnet"}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"index_sets": [[0, 3], [1, 9], [2]]}, r"class 1 \('green'\): indices \[9\] are outside \[0, 6\) \(d=6\); the index sets do not belong"),
    ({"index_sets": [[0, 3], [-1], [2]]}, r"class 1 \('green'\): indices \[-1\] are outside"),
    ({"index_sets": [[0, 3], [1, 4]]}, r"2 index sets but 3 classes"),
    ({"index_sets": [[0], [], [2]]}, r"class 1 \('green'\) has an empty index set"),
    ({"index_sets": [[0, 0], [1], [2]]}, r"class 0 \('red'\): duplicate indices in \[0, 0\]"),
    ({"num_features": None}, r"num_features=None must be the positive feature width d"),
    ({"backbone_library": "keras"}, r"backbone_library='keras' is not one of timm, transformers"),
    ({"head_kernel": "sparse"}, r"head_kernel='sparse' is not one of dense, embedding-bag"),
])
def test_invalid_decompositions_are_rejected_with_the_class_and_index(overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(**overrides)


def test_invalid_config_json_is_rejected_on_load(tmp_path):
    _config().save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["index_sets"][2] = [2, 60]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"class 2 \('blue'\): indices \[60\]"):
        AutoConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("filename", sorted(p.name for p in PORTABLE_DIR.glob("*.py")))
def test_portable_files_import_only_torch_transformers_and_siblings(filename):
    """These files are copied into saved folders and run where hf-decomp is not installed."""
    tree = ast.parse((PORTABLE_DIR / filename).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:
            assert node.level == 1 and (PORTABLE_DIR / f"{node.module}.py").is_file(), ast.dump(node)
            continue
        elif isinstance(node, ast.ImportFrom):
            roots = {node.module.split(".")[0]}
        else:
            continue
        assert roots <= set(sys.stdlib_module_names) | {"torch", "transformers", "timm"}, roots
