"""Issue 20, items 2, 8, 16, 17: refit/finetune settings are one validated object, the validation split is
never the evaluation split, --val-split is parsed strictly, and the Python API speaks the CLI's names."""

from __future__ import annotations

import argparse
import json
import warnings

import pytest
import torch
from conftest import requires_shared

from hf_decomp.recovery import heads
from hf_decomp.recovery.settings import FinetuneSettings, RefitSettings, parse_val_split
from hf_decomp.utils.errors import DecompValueError

CLI_ONLY_DESTS = {"command", "func"}


def _subparser(name: str) -> argparse.ArgumentParser:
    from hf_decomp.cli import build_parser

    return next(a for a in build_parser()._actions if a.dest == "command").choices[name]


def _dests(parser: argparse.ArgumentParser) -> set[str]:
    dests = {a.dest for a in parser._actions if a.dest != "help" and a.help != argparse.SUPPRESS}
    return (dests | set(parser._defaults)) - CLI_ONLY_DESTS


@pytest.fixture
def tiny_timm(tmp_path):
    from helpers_models import save_tiny_timm_model

    return save_tiny_timm_model(tmp_path / "timm")


@pytest.fixture
def no_features(monkeypatch):
    """Any feature computation fails the test: refusals must come before the model sees an image."""
    from hf_decomp.passes import feature_cache

    def refuse(*args, **kwargs):
        raise AssertionError("features were computed before the settings were refused")

    monkeypatch.setattr(feature_cache, "cached_features", refuse)


# ---- item 16: the flags are the settings ---------------------------------------------------------------

@pytest.mark.parametrize("command, settings", [("refit", RefitSettings), ("finetune", FinetuneSettings)])
def test_the_recovery_flags_are_the_settings(command, settings):
    assert _dests(_subparser(command)) == set(settings.field_names())


@pytest.mark.parametrize("command, settings", [("refit", RefitSettings), ("finetune", FinetuneSettings)])
def test_the_flag_defaults_are_the_settings_defaults(command, settings):
    from hf_decomp.data.holdout import DEFAULT_VAL_SIZE

    args = _subparser(command).parse_args([])
    assert settings.from_namespace(args) == settings(out=f"runs/{command}")
    assert settings().val_split == DEFAULT_VAL_SIZE


def test_every_flag_reaches_the_settings_unchanged(monkeypatch, tmp_path):
    """No flag is copied by hand: each non-default value arrives in the settings build_recovered_head gets."""
    from hf_decomp.cli import main

    seen = {}

    class Stop(Exception):
        pass

    def fake_build(*args, settings=None, **kwargs):
        seen["settings"] = settings
        raise Stop

    monkeypatch.setattr(heads, "build_recovered_head", fake_build)
    argv = ["finetune", "--model", "m", "--weights", "w.pth", "--dataset", "d", "--stats-split", "s",
            "--eval-split", "e", "--image-column", "i", "--label-column", "l", "--label-map", "map.json",
            "--limit", "7", "--eval-limit", "8", "--batch-size", "9", "--num-workers", "1", "--k1", "3", "--k2", "2",
            "--criterion", "histogram", "--bias-correction", "--max-iter", "11", "--keep", "0.4", "0.6",
            "--val-split", "validation", "--val-seed", "4", "--cache-dir", "c", "--out", str(tmp_path / "o"),
            "--overwrite", "--seed", "5", "--epochs", "0.5", "--lr", "0.2", "--weight-decay", "0.001",
            "--train-batch-size", "12", "--no-augment", "--distill", "0.5", "--temperature", "2", "--freeze-bn",
            "--clip-grad", "1.5", "--backbone-lr-scale", "0.1", "--head-warmup", "0.2", "--eval-every", "0.3"]
    with pytest.raises(Stop):
        main(argv)
    got = seen["settings"].to_dict()
    assert got == {"model": "m", "weights": "w.pth", "dataset": "d", "stats_split": "s", "eval_split": "e",
                   "image_column": "i", "label_column": "l", "label_map": "map.json", "streaming": False, "limit": 7,
                   "eval_limit": 8, "batch_size": 9, "num_workers": 1, "k1": 3, "k2": 2, "criterion": "histogram",
                   "bias_correction": True, "max_iter": 11, "keep": [0.4, 0.6], "val_split": "validation",
                   "val_seed": 4, "cache_dir": "c", "out": str(tmp_path / "o"), "overwrite": True, "seed": 5,
                   "epochs": 0.5, "lr": 0.2, "weight_decay": 0.001, "train_batch_size": 12, "augment": False,
                   "distill": 0.5, "temperature": 2.0, "freeze_bn": True, "clip_grad": 1.5, "backbone_lr_scale": 0.1,
                   "head_warmup": 0.2, "eval_every": 0.3}
    assert type(seen["settings"]) is FinetuneSettings


def test_refit_records_its_settings_and_keeps_the_old_keyword_call(tmp_path, color_dataset, tiny_timm):
    from hf_decomp.cli import main

    common = ["--dataset", str(color_dataset), "--cache-dir", str(tmp_path / "cache"), "--num-workers", "0"]
    assert main(["refit", "--model", str(tiny_timm), "--criterion", "contribution", "--k2", "2", "--val-split", "6",
                 "--out", str(tmp_path / "r"), *common]) == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["settings"] == RefitSettings(
        model=str(tiny_timm), dataset=str(color_dataset), criterion="contribution", k2=2, val_split=6,
        cache_dir=str(tmp_path / "cache"), num_workers=0, out=str(tmp_path / "r")).to_dict()
    # the keyword call of before (model and dataset positional, settings as keywords) gives the same head
    *_, again = heads.build_recovered_head(str(tiny_timm), str(color_dataset), criterion="contribution", k2=2,
                                           val_split="6", cache_dir=str(tmp_path / "cache"), num_workers=0)
    assert again["validation"]["candidates"] == metrics["validation"]["candidates"]
    assert again["decomposed_accuracy"] == metrics["decomposed_accuracy"]
    assert again["validation"]["decomposed_accuracy"] == metrics["validation"]["decomposed_accuracy"]


def test_settings_refuse_bad_values_in_one_line():
    cases = [(dict(keep=[1.5]), r"keep=1.5 must be in \(0.0, 1.0\) \(--keep\)"),
             (dict(k2=0), r"k2=0 must be a positive integer; give --k2 N"),
             (dict(max_iter=-1), "max_iter=-1 must be a positive integer"),
             (dict(num_workers=-2), r"num_workers=-2 must be an integer >= 0 \(--num-workers\)"),
             (dict(criterion="coverage"), "criterion 'coverage' sizes its sets by coverage; refit keeps k2 per class"),
             (dict(criterion="magic"), "magic")]
    for kwargs, message in cases:
        with pytest.raises(DecompValueError, match=message):
            RefitSettings(**kwargs)
    finetune_cases = [(dict(eval_every=-1), r"eval_every=-1 must be in \[0.0, inf\)"),
                      (dict(streaming=True), "drop --streaming"),
                      (dict(distill=1.5), r"distill=1.5 must be in \[0.0, 1.0\]"),
                      (dict(epochs=0), r"epochs=0 must be in \(0.0, inf\)"),
                      (dict(head_warmup=1.0), r"head_warmup=1.0 must be in \[0.0, 1.0\)")]
    for kwargs, message in finetune_cases:
        with pytest.raises(DecompValueError, match=message):
            FinetuneSettings(**kwargs)
    with pytest.raises(TypeError, match=r"refit\(\) got unexpected keyword arguments \['kep'\]"):
        RefitSettings.with_overrides(None, {"kep": [0.5]})


def test_finetune_recovered_head_takes_the_settings_object(monkeypatch, tiny_timm):
    """The settings object (not 24 keywords) reaches finetune(): every training value from it."""
    from hf_decomp.recovery import finetune as finetune_module

    seen = {}

    class Stop(Exception):
        pass

    def fake_finetune(model, fit, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(finetune_module, "finetune", fake_finetune)
    from hf_decomp.models import load_classifier
    from hf_decomp.portable.decomposed_head import DecomposedLinear

    adapter = load_classifier(str(tiny_timm))
    head = DecomposedLinear(adapter.weight, adapter.bias, [[0, 1, 2], [3], [4, 5]])

    class Split:
        num_rows = 20

    settings = FinetuneSettings(criterion="contribution", k2=1, epochs=2.0, lr=0.3, train_batch_size=5,
                                eval_every=0.5, distill=0.25, freeze_bn=True, seed=7)
    with pytest.raises(Stop):
        heads.finetune_recovered_head(adapter, Split(), None, None, head, {"validation": {"decomposed_accuracy": 50.0}},
                                      settings=settings)
    assert (seen["epochs"], seen["lr"], seen["train_batch_size"], seen["eval_every"], seen["distill"],
            seen["freeze_bn"], seen["seed"]) == (2.0, 0.3, 5, 2, 0.25, True, 7)  # eval every round(0.5 * 20 / 5)


# ---- item 2: the validation split is never the evaluation split ---------------------------------------

@pytest.mark.parametrize("command", ["refit", "finetune"])
@pytest.mark.parametrize("extra", [[], ["--eval-split", "test"]])
def test_validation_on_the_evaluation_split_is_refused(command, extra, tmp_path, color_dataset, tiny_timm,
                                                       no_features, capsys):
    from hf_decomp.cli import main

    code = main([command, "--model", str(tiny_timm), "--dataset", str(color_dataset), "--val-split", "test",
                 "--num-workers", "0", "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"hf-decomp {command}: error: --val-split 'test' is the evaluation split" in err
    assert not (tmp_path / "out").exists()


def test_the_python_api_refuses_it_too(color_dataset, tiny_timm, no_features):
    with pytest.raises(DecompValueError, match="--val-split 'validation' is the evaluation split"):
        RefitSettings(val_split="validation", eval_split="validation")
    with pytest.raises(DecompValueError, match="--val-split 'test' is the evaluation split"):  # default eval split
        heads.build_recovered_head(str(tiny_timm), str(color_dataset), val_split="test", num_workers=0)
    with pytest.raises(DecompValueError, match="--val-split 'train' is the training split itself"):
        FinetuneSettings(val_split="train")


def test_memorised_validation_is_named_for_the_pretrained_cifar_resnets():
    note = RefitSettings(model="cifar10_resnet20").memorised_validation()
    assert note.startswith("memorised: the pretrained cifar10_resnet20 was trained on every train image")
    assert RefitSettings(model="timm:cifar10_resnet56", dataset="uoft-cs/cifar10").memorised_validation() is not None
    assert RefitSettings(model="cifar10_resnet20", weights="mine.pth").memorised_validation() is None
    assert RefitSettings(model="cifar10_resnet20", val_split="validation").memorised_validation() is None
    assert RefitSettings(model="timm:resnet50.a1_in1k").memorised_validation() is None
    assert RefitSettings(model="cifar10_resnet20", stats_split="extra").memorised_validation() is None


def test_memorised_validation_is_labelled_in_metrics_card_and_table(monkeypatch, tmp_path, color_dataset, tiny_timm,
                                                                    capsys):
    from hf_decomp.cli import main

    monkeypatch.setattr(RefitSettings, "memorised_validation", lambda self, split=None: f"memorised: {split}")
    assert main(["refit", "--model", str(tiny_timm), "--dataset", str(color_dataset), "--val-split", "6", "--k2", "2",
                 "--criterion", "contribution", "--num-workers", "0", "--out", str(tmp_path / "r")]) == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["val_split"]["memorised"] is True and metrics["val_split"]["note"] == "memorised: train"
    assert metrics["validation"]["memorised"] is True
    printed = capsys.readouterr().out
    assert "validation (6 images memorised)" in printed and "note: validation is memorised: train" in printed
    card = heads.card_metrics({**metrics, "finetuned_rho": 1.0, "finetuned_accuracy": 1.0,
                               "validation": {**metrics["validation"], "finetuned_accuracy": 1.0}}, None, "train")
    assert card["validation"]["memorised"] is True and card["validation"]["note"] == "memorised: train"


# ---- item 8: --val-split is a whole number >= 1 or a split name ---------------------------------------

def test_parse_val_split():
    assert parse_val_split("5000") == 5000 and parse_val_split(12) == 12
    assert parse_val_split(" validation ") == "validation"
    for text, message in (("-5", "--val-split -5: at least 1 image must be held out"),
                          ("0", "--val-split 0: at least 1 image must be held out"),
                          ("0.1", "--val-split 0.1: a number of images must be a whole number"),
                          ("1e3", "--val-split 1e3: a number of images must be a whole number"),
                          ("  ", "--val-split is empty")):
        with pytest.raises(DecompValueError, match=message) as info:
            parse_val_split(text)
        assert "smaller number" not in str(info.value)
        assert "e.g. --val-split 5000" in str(info.value) and "--val-split validation" in str(info.value)
    with pytest.raises(DecompValueError, match="neither a number of images nor a split name"):
        parse_val_split(True)


@pytest.mark.parametrize("value", ["-5", "0"])
def test_bad_val_split_on_the_command_line(value, tmp_path, no_features, capsys):
    from hf_decomp.cli import main

    assert main(["refit", "--val-split", value, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"hf-decomp refit: error: --val-split {value}: at least 1 image must be held out; give a "
                           f"number of training images to hold out (e.g. --val-split 5000) or the name of a validation "
                           f"split (e.g. --val-split validation)")


# ---- item 17: one name per concept, old names warn once -----------------------------------------------

def _one_future_warning(caught, *names):
    future = [w for w in caught if issubclass(w.category, FutureWarning)]
    assert len(future) == 1, [str(w.message) for w in future]
    for name in names:
        assert name in str(future[0].message)


def test_decompose_head_old_names_warn_once_and_still_work():
    from hf_decomp.recovery.refit import decompose_head

    torch.manual_seed(0)
    weight, features, labels = torch.randn(3, 6), torch.rand(30, 6), torch.arange(30) % 3
    new = decompose_head(weight, None, features, labels, criterion="histogram", k2=2, refit=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = decompose_head(weight, None, features, labels, method="histogram", k=2, refit=False)
    _one_future_warning(caught, "method= is now criterion=", "k= is now k2=")
    assert old.index_sets() == new.index_sets()
    with pytest.warns(FutureWarning), pytest.raises(DecompValueError, match="both k= and its new name k2="):
        decompose_head(weight, None, features, labels, k=2, k2=2, refit=False)
    with pytest.raises(TypeError, match=r"decompose_head\(\) got unexpected keyword arguments \['kk'\]"):
        decompose_head(weight, None, features, labels, kk=2)


def test_select_from_statistics_old_name_warns_once_and_still_works():
    from hf_decomp.method.selection import select_from_statistics
    from hf_decomp.method.statistics import ClassStatistics

    stats = ClassStatistics(2, 3, [1])
    stats.update(torch.tensor([[3.0, 1.0, 0.0], [0.0, 1.0, 3.0]]), torch.tensor([0, 1]))
    weight = torch.eye(2, 3)
    new = select_from_statistics(stats, k1=1, k2=1, criterion="contribution", weight=weight)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = select_from_statistics(stats, k1=1, k2=1, method="contribution", weight=weight)
    _one_future_warning(caught, "select_from_statistics(): method= is now criterion=")
    assert old == new


def test_finetune_old_names_warn_once_and_reach_the_training(monkeypatch):
    from hf_decomp.recovery import finetune as finetune_module

    seen = {}
    monkeypatch.setattr(finetune_module, "_finetune", lambda model, split, **kwargs: seen.update(kwargs))

    class Split:
        label_column, streaming, name, split = "label", False, "toy", "train"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        finetune_module.finetune(None, Split(), transform=None, out_dir="o", checkpoint_every=3, batch_size=16)
    _one_future_warning(caught, "out_dir= is now out=", "checkpoint_every= is now save_every=",
                        "batch_size= is now train_batch_size=")
    assert (seen["out_dir"], seen["checkpoint_every"], seen["batch_size"]) == ("o", 3, 16)
    finetune_module.finetune(None, Split(), transform=None, out="p", save_every=4, train_batch_size=8)
    assert (seen["out_dir"], seen["checkpoint_every"], seen["batch_size"]) == ("p", 4, 8)
    with pytest.raises(TypeError, match=r"finetune\(\) got unexpected keyword arguments \['output_dir'\]"):
        finetune_module.finetune(None, Split(), transform=None, output_dir="o")


def test_recovery_settings_old_names_warn_once():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings = RefitSettings.with_overrides(None, {"method": "histogram", "k": 3})
    _one_future_warning(caught, "refit(): method= is now criterion=, k= is now k2=")
    assert (settings.criterion, settings.k2) == ("histogram", 3)
    with pytest.warns(FutureWarning, match=r"build_recovered_head\(\): method= is now criterion="), \
            pytest.raises(DecompValueError, match="--val-split 0"):
        heads.build_recovered_head("no-such-model", method="histogram", val_split="0")


def test_the_criteria_docstring_speaks_criterion():
    import hf_decomp.method.criteria as criteria

    assert 'analyze(..., criterion="weight-magnitude")' in criteria.__doc__ and "method=" not in criteria.__doc__


def test_coverage_is_a_fraction_on_the_command_line_as_in_python(monkeypatch, tmp_path, capsys):
    import hf_decomp.analysis.run as run_module
    from hf_decomp.cli import main

    seen = {}

    class Stop(Exception):
        pass

    def fake_analyze(*args, settings=None, **kwargs):
        seen["settings"] = settings
        raise Stop

    monkeypatch.setattr(run_module, "analyze", fake_analyze)
    with pytest.raises(Stop):
        main(["analyze", "--coverage", "0.5", "--out", str(tmp_path / "a")])
    assert (seen["settings"].coverage, seen["settings"].k2) == (0.5, None)
    with pytest.raises(SystemExit):
        main(["analyze", "--coverage", "50", "--out", str(tmp_path / "a")])
    assert "argument --coverage: 50 is a percentage; coverage is a fraction in (0, 1]: give 0.5 for 50 %" \
        in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["analyze", "--coverage", "0", "--out", str(tmp_path / "a")])
    assert "argument --coverage: 0 must be a fraction in (0, 1] (e.g. 0.5)" in capsys.readouterr().err


@pytest.mark.slow
@requires_shared("models", "cifar10-resnets", "resnet20-12fca82f.th")
def test_resnet20_validation_on_held_out_train_is_reported_as_memorised(tmp_path, capsys):
    from hf_decomp.cli import main

    assert main(["refit", "--limit", "1000", "--eval-limit", "300", "--val-split", "200", "--k2", "5",
                 "--criterion", "contribution", "--num-workers", "0", "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "r")]) == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["validation"]["memorised"] is True
    assert metrics["val_split"]["note"].startswith("memorised: the pretrained cifar10_resnet20 was trained on every")
    printed = capsys.readouterr().out
    assert "validation (200 images memorised)" in printed and "note: validation is memorised" in printed
    # the reason: the full model is near-perfect on images it was trained on, not on the test split
    assert metrics["validation"]["full_accuracy"] > metrics["full_accuracy"] + 3
