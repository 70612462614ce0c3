"""Bad sizes and flags end in one `hf-decomp <command>: error: ...` line (exit 2), before any work."""

from __future__ import annotations

import pytest
from helpers_models import save_tiny_timm_model

from hf_decomp.cli import main
from hf_decomp.utils.checks import check_k, check_k_values, check_positive_int
from hf_decomp.utils.errors import DecompValueError


def _argparse_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("argv, message", [
    (["analyze", "--batch-size", "0"], "hf-decomp analyze: error: argument --batch-size: 0 must be 1 or more"),
    (["analyze", "--limit", "-3"], "hf-decomp analyze: error: argument --limit: -3 must be 1 or more"),
    (["analyze", "--num-workers", "-1"], "hf-decomp analyze: error: argument --num-workers: -1 must be 0 or more"),
    (["analyze", "--k1", "0"], "hf-decomp analyze: error: argument --k1: 0 must be 1 or more"),
    (["refit", "--k1", "0"], "hf-decomp refit: error: argument --k1: 0 must be 1 or more"),
    (["finetune", "--train-batch-size", "0"], "hf-decomp finetune: error: argument --train-batch-size: 0 must be 1 or more"),
    (["sweep", "--k1", "99"], "hf-decomp sweep: error: --k1 does nothing here; sweep runs a grid: give it with --k1-grid"),
    (["sweep", "--k2", "3"], "hf-decomp sweep: error: --k2 does nothing here; sweep runs a grid: give it with --k2-grid"),
    (["csg", "--k2", "3"], "hf-decomp csg: error: --k2 does nothing here; csg compares the set sizes given with "
                           "--k2-grid"),
    (["sweep", "--k1-gri", "3"], "hf-decomp: error: unrecognized arguments: --k1-gri 3"),  # no prefixes
    (["analyze", "--criterion", "pruning"], "hf-decomp analyze: error: argument --criterion: invalid choice: 'pruning'"),
])
def test_bad_flags_fail_in_one_line_before_any_work(argv, message, capsys):
    assert _argparse_error(argv, capsys).startswith(message)


@pytest.fixture
def features_must_not_be_computed(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("features were computed before the bad value was refused")

    import hf_decomp.passes.feature_cache as feature_cache
    import hf_decomp.studies.common as common

    monkeypatch.setattr(feature_cache, "cached_features", fail)
    monkeypatch.setattr(common, "load_model_features", fail)


@pytest.mark.parametrize("argv, message", [
    (["sweep", "--k1-grid", "1", "99"], "k1-grid values [99] are not integers in [1, d=96]"),
    (["csg", "--k2-grid", "200"], "k2-grid values [200] are not integers in [1, d=96]"),
    (["histograms", "--k2", "100"], "k2=100 must be between 1 and d=96"),
    (["overlap", "--k1", "97"], "k1=97 must be between 1 and d=96"),
    (["refit", "--k1", "99"], "k1=99 must be between 1 and d=96"),
    (["refit", "--k2", "97"], "k2=97 must be between 1 and d=96"),
    (["analyze", "--k2", "100"], "k2=100 must be between 1 and d=96"),
])
def test_k_beyond_the_feature_width_is_refused_before_the_features(argv, message, tmp_path, capsys,
                                                                    features_must_not_be_computed):
    model = save_tiny_timm_model(tmp_path / "timm")  # test_resnet: d = 96 pooled features
    assert main([*argv, "--model", str(model), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_the_python_api_refuses_a_zero_batch_size(tmp_path):
    from hf_decomp import analyze

    with pytest.raises(DecompValueError, match=r"batch_size=0 must be a positive integer; give --batch-size N"):
        analyze("nonexistent-model-never-loaded", batch_size=0, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_validation_literals():
    assert check_positive_int("batch_size", 3) == 3
    assert check_k("k2", None, 4) is None and check_k("k2", 4, 4) == 4
    assert check_k_values("k1", [5, 1, 5], 8) == [1, 5]
    for bad in (0, -1, True, 2.0, "4"):
        with pytest.raises(DecompValueError):
            check_positive_int("batch_size", bad)
    with pytest.raises(DecompValueError, match=r"k1=5 must be between 1 and d=4"):
        check_k("k1", 5, 4)
    with pytest.raises(DecompValueError, match="grid is empty"):
        check_k_values("k2", [], 4)


def test_analyze_prints_an_undefined_rho_when_the_full_model_gets_nothing_right(monkeypatch, capsys):
    """A model with 0 % full accuracy has no rho (None): the summary says so instead of a traceback."""
    import types

    import hf_decomp.analysis.run as run_module
    from hf_decomp.cli import main as cli_main

    metrics = {"full_accuracy": 0.0, "decomposed_accuracy": 0.0, "rho": None,
               "noise_ablation": {"influential_to_noise_accuracy": 0.0, "non_influential_to_noise_accuracy": 0.0},
               "multiply_adds": {"full": 30, "decomposed": 6}}
    fake = types.SimpleNamespace(metrics=metrics, warnings=[], out_dir=None, layer_indices=None)
    monkeypatch.setattr(run_module, "analyze", lambda settings: fake)
    assert cli_main(["analyze", "--model", "x"]) == 0
    assert "rho = undefined (full accuracy is 0 %)" in capsys.readouterr().out
