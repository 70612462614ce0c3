"""One CLI vocabulary: new flag names, hidden deprecated aliases with one warning line, shared defaults,
choices from one helper, and a --help that imports no heavy library."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hf_decomp.cli import build_parser
from hf_decomp.commands import common

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("sweep", "histograms", "depth", "noise", "overlap", "csg", "activation-maps", "report", "selectivity",
           "specialize")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _parse(argv):
    return build_parser().parse_args(argv)


@pytest.mark.parametrize("argv, dest, value, old, new", [
    (["analyze", "--checkpoint", "w.pth"], "weights", "w.pth", "--checkpoint", "--weights"),
    (["analyze", "--method", "contribution"], "criterion", "contribution", "--method", "--criterion"),
    (["analyze", "--checkpoint-every", "3"], "save_every", 3, "--checkpoint-every", "--save-every"),
    (["analyze", "--checkpoint-minutes", "2.5"], "save_every_minutes", 2.5, "--checkpoint-minutes",
     "--save-every-minutes"),
    (["analyze", "--checkpoint-dir", "d"], "resume_dir", "d", "--checkpoint-dir", "--resume-dir"),
    (["refit", "--k", "7"], "k2", 7, "--k", "--k2"),
    (["finetune", "--method", "histogram"], "criterion", "histogram", "--method", "--criterion"),
    (["sweep", "--k1-values", "1,5"], "k1_grid", [1, 5], "--k1-values", "--k1-grid"),
    (["sweep", "--k2-values", "2,3"], "k2_grid", [2, 3], "--k2-values", "--k2-grid"),
    (["report", "--sweep-k1", "1,2"], "k1_grid", [1, 2], "--sweep-k1", "--k1-grid"),
    (["report", "--sweep-k2", "4"], "k2_grid", [4], "--sweep-k2", "--k2-grid"),
    (["report", "--models", "a,b"], "model", ["a", "b"], "--models", "--model"),
    (["csg", "--k-values", "5,10"], "k2_grid", [5, 10], "--k-values", "--k2-grid"),
    (["activation-maps", "--selection", "label-free"], "criterion", "label-free", "--selection", "--criterion"),
    (["activation-maps", "--split", "test"], "eval_split", "test", "--split", "--eval-split"),
    (["specialize", "--classes", "cat", "--macs", "0.5", "--out", "o", "--train-split", "tr"], "stats_split", "tr",
     "--train-split", "--stats-split"),
    (["specialize", "--classes", "cat", "--macs", "0.5", "--out", "o", "--method", "magnitude"], "criterion",
     ["magnitude"], "--method", "--criterion"),
    (["specialize", "--classes", "cat", "--macs", "0.5", "--out", "o", "--pruning", "magnitude"], "criterion",
     ["magnitude"], "--pruning", "--criterion"),
    (["selectivity", "--k", "0.3"], "mass_fraction", 0.3, "--k", "--mass-fraction"),
])
def test_old_spellings_still_work_and_warn_once_naming_the_new_flag(argv, dest, value, old, new, capsys):
    assert getattr(_parse(argv), dest) == value
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"hf-decomp {argv[0]}: warning: {old} is deprecated; use {new}"]


def test_new_spellings_parse_without_warnings(capsys):
    args = _parse(["sweep", "--k1-grid", "1", "5", "--k2-grid", "2,3", "--stats-split", "a", "--eval-split", "b",
                   "--batch-size", "7"])
    assert (args.k1_grid, args.k2_grid, args.stats_split, args.eval_split, args.batch_size) == ([1, 5], [2, 3], "a",
                                                                                               "b", 7)
    args = _parse(["report", "--model", "m1", "m2", "--model", "m3"])
    assert args.model == ["m1", "m2", "m3"]  # repeatable; the default list is replaced, not extended
    assert _parse(["report"]).model == list(common.CIFAR_RESNETS)
    assert _parse(["finetune", "--no-augment"]).augment is False
    assert _parse(["specialize", "--classes", "cat", "--macs", "0.5", "--out", "o", "--criterion", "taylor",
                   "magnitude"]).criterion == ["taylor", "magnitude"]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("command", ["analyze", "refit", "finetune"])
def test_bias_correction_is_off_by_default_everywhere(command):
    assert _parse([command]).bias_correction is False
    assert _parse([command, "--bias-correction"]).bias_correction is True
    assert _parse([command, "--bias-correction", "--no-bias-correction"]).bias_correction is False


@pytest.mark.parametrize("command", STUDIES)
def test_every_study_takes_the_splits_and_the_batch_size(command):
    extra = ["--classes", "cat", "--macs", "0.5", "--out", "o"] if command == "specialize" else []
    args = _parse([command, *extra, "--stats-split", "s", "--batch-size", "9"])
    assert (args.stats_split, args.batch_size) == ("s", 9)
    if command != "selectivity":  # selectivity reads only the statistics split and says so
        assert _parse([command, *extra, "--eval-split", "e"]).eval_split == "e"


def test_selectivity_refuses_an_evaluation_split(capsys):
    with pytest.raises(SystemExit):
        _parse(["selectivity", "--eval-split", "test"])
    assert "--eval-split does nothing here; selectivity reads only the statistics split" in capsys.readouterr().err


def test_studies_pass_splits_and_batch_size_to_the_library(monkeypatch, tmp_path):
    """sweep: load_model_features receives --stats-split, --eval-split and --batch-size."""
    import hf_decomp.studies.common as studies_common
    import hf_decomp.studies.efficientnet_lite0 as lite0
    from hf_decomp.cli import main

    seen = {}

    class Stop(Exception):
        pass

    def fake_load(adapter, dataset, **kwargs):
        seen.update(kwargs)
        raise Stop

    class Adapter:
        num_features = 64

    monkeypatch.setattr(studies_common, "load_model_features", fake_load)
    monkeypatch.setattr(lite0, "load_study_model", lambda name: Adapter())
    with pytest.raises(Stop):
        main(["sweep", "--stats-split", "s", "--eval-split", "e", "--batch-size", "9", "--k1-grid", "1",
              "--k2-grid", "1", "--out", str(tmp_path / "out")])
    assert (seen["stats_split"], seen["eval_split"], seen["batch_size"]) == ("s", "e", 9)


def test_report_settings_carry_the_splits_and_the_batch_size(monkeypatch, tmp_path):
    import hf_decomp.studies.suite as suite
    from hf_decomp.cli import main

    seen = {}

    class Stop(Exception):
        pass

    def fake_run_report(settings, out, overwrite=False):
        seen["settings"] = settings
        raise Stop

    monkeypatch.setattr(suite, "run_report", fake_run_report)
    with pytest.raises(Stop):
        main(["depth", "--model", "m", "--stats-split", "s", "--eval-split", "e", "--batch-size", "9",
              "--out", str(tmp_path / "out")])
    settings = seen["settings"]
    assert (settings.models, settings.stats_split, settings.eval_split, settings.batch_size) == (["m"], "s", "e", 9)


def test_criterion_choices_are_the_library_criteria():
    assert common.criterion_choices() == ("histogram", "contribution", "label-free", "sparse-glm", "pruning")
    assert common.criterion_choices("statistics") == ("histogram", "contribution", "label-free")
    subparsers = _subparsers()
    for command, scope in (("analyze", "statistics"), ("refit", "refit"), ("finetune", "refit"),
                           ("activation-maps", "maps")):
        action = next(a for a in subparsers[command]._actions if a.dest == "criterion" and a.help != argparse.SUPPRESS)
        assert tuple(action.choices) == common.criterion_choices(scope)


def test_validation_default_equals_the_library_default():
    from hf_decomp.commands.recover import DEFAULT_VAL_SIZE as CLI_DEFAULT
    from hf_decomp.data.holdout import DEFAULT_VAL_SIZE

    assert CLI_DEFAULT == str(DEFAULT_VAL_SIZE)


def test_help_shows_each_default_once():
    for name, parser in _subparsers().items():
        text = parser.format_help()
        assert "(default: None)" not in text, name
        for line in text.split("(default:")[1:]:
            assert "(default:" not in line.split(")")[0], name
    refit = _subparsers()["refit"].format_help()
    assert "(default: pruning)" in refit and "(default: 5000)" in refit


HEAVY = ("torch", "timm", "transformers", "datasets")


def test_help_imports_no_heavy_library():
    """A fresh interpreter builds the parser and prints every subcommand's --help without torch & co."""
    code = f"""
import contextlib, io, json, sys
from hf_decomp.cli import build_parser, main
build_parser()
names = {list(_subparsers())!r}
for argv in [["--help"]] + [[name, "--help"] for name in names]:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit as e:
            assert e.code == 0, argv
import hf_decomp
dir(hf_decomp)
print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env=_env())
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_package_is_lazy_but_keeps_its_public_names():
    code = """
import json, sys
import hf_decomp
before = [m for m in ("torch", "timm", "transformers", "datasets") if m in sys.modules]
utils = hf_decomp.utils.__name__  # a subpackage not imported yet, reached as an attribute
names = sorted(hf_decomp.__all__)
ok = all(name in dir(hf_decomp) for name in names)
from hf_decomp import analyze, load_classifier, DecomposedLinear, InfluentialIndices
import timm
print(json.dumps({"before": before, "ok": ok, "names": names, "cifar": "cifar10_resnet20" in timm.list_models(),
                  "analyze": analyze.__module__, "sub": hf_decomp.models.__name__, "utils": utils}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env=_env())
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["before"] == [] and result["ok"] and result["cifar"]
    assert result["analyze"] == "hf_decomp.analysis.run" and result["sub"] == "hf_decomp.models"
    assert result["utils"] == "hf_decomp.utils"
    assert {"analyze", "AnalysisResult", "ClassStatistics", "ClassifierAdapter", "DecomposedLinear",
            "InfluentialIndices", "load_classifier", "select_from_statistics", "push_to_hub",
            "DecomposedForImageClassification"} <= set(result["names"])


def _env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
