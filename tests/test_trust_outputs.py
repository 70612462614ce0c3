"""--out never destroys data: no input is written over, an interrupted replacement is finished by the next
run, and an unwritable place is refused before any work."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from helpers_trust import PYTHON, subprocess_env, tiny_colour_model

from hf_decomp.cli import main
from hf_decomp.utils.errors import OutputLocationError
from hf_decomp.utils.files import check_output_dir, staged_output_dir

pytestmark = pytest.mark.usefixtures("one_thread")


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_work(monkeypatch):
    """Fail the test if a pass over the data starts."""
    import hf_decomp.passes.features

    def refuse(self):
        raise AssertionError("a pass over the data started before --out was checked")

    monkeypatch.setattr(hf_decomp.passes.features.FeaturePass, "__iter__", refuse)


@pytest.mark.parametrize("where", ["same", "inside", "contains"])
def test_analyze_refuses_out_that_is_inside_or_contains_the_dataset(where, color_dataset, tmp_path, capsys,
                                                                    monkeypatch):
    _no_work(monkeypatch)
    before = _snapshot(color_dataset)
    out = {"same": color_dataset, "inside": color_dataset / "results", "contains": color_dataset.parent}[where]
    relation = {"same": "is", "inside": "lies inside", "contains": "contains"}[where]
    assert main(["analyze", "--dataset", str(color_dataset), "--out", str(out), "--overwrite",
                 "--num-workers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{relation} the input --dataset" in err[0]
    assert err[0].startswith("hf-decomp analyze: error: --out") and "Choose an --out folder outside" in err[0]
    assert _snapshot(color_dataset) == before  # nothing deleted or added


def test_analyze_api_refuses_the_dataset_as_out(color_dataset):
    from hf_decomp.analysis.run import analyze

    before = _snapshot(color_dataset)
    with pytest.raises(OutputLocationError, match="is the input dataset"):
        analyze(dataset=str(color_dataset), out=color_dataset, overwrite=True)
    assert _snapshot(color_dataset) == before


def test_export_refuses_its_run_folder_as_out(color_dataset, tmp_path, capsys):
    model = tiny_colour_model(tmp_path / "model")
    run = tmp_path / "run"
    assert main(["analyze", "--model", str(model), "--dataset", str(color_dataset), "--out", str(run),
                 "--k1", "2", "--k2", "2", "--num-workers", "0"]) == 0
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["export", "--indices", str(run), "--out", str(run), "--overwrite", "--model", str(model)]) == 2
    assert "is the input --indices" in capsys.readouterr().err
    assert main(["export", "--indices", str(run), "--out", str(run / "model"), "--overwrite"]) == 2
    assert "lies inside the input --indices" in capsys.readouterr().err
    assert main(["analyze", "--model", str(model), "--dataset", str(color_dataset), "--out", str(model),
                 "--overwrite"]) == 2
    assert "is the input --model" in capsys.readouterr().err
    assert _snapshot(run) == before


@pytest.mark.parametrize("command", ["refit", "finetune", "report", "sweep", "histograms", "depth", "noise",
                                     "overlap", "csg", "activation-maps"])
def test_every_subcommand_with_out_refuses_an_input(command, color_dataset, tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    before = _snapshot(color_dataset)
    assert main([command, "--dataset", str(color_dataset), "--out", str(color_dataset), "--overwrite"]) == 2
    assert "is the input --dataset" in capsys.readouterr().err
    cache = tmp_path / "box" / "cache"
    cache.mkdir(parents=True)
    (cache / "keep.txt").write_text("cached")
    assert main([command, "--dataset", str(color_dataset), "--cache-dir", str(cache), "--out", str(cache.parent),
                 "--overwrite"]) == 2
    assert "contains the input --cache-dir" in capsys.readouterr().err
    assert _snapshot(color_dataset) == before and (cache / "keep.txt").read_text() == "cached"


def test_checkpoint_weights_and_resume_folder_are_inputs(color_dataset, tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    weights = tmp_path / "weights" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"weights")
    assert main(["analyze", "--dataset", str(color_dataset), "--weights", str(weights),
                 "--out", str(weights.parent), "--overwrite"]) == 2
    assert "contains the input --weights" in capsys.readouterr().err
    checkpoints = tmp_path / "run" / "ck"
    checkpoints.mkdir(parents=True)
    assert main(["analyze", "--dataset", str(color_dataset), "--resume-dir", str(checkpoints), "--resume",
                 "--out", str(tmp_path / "run"), "--overwrite"]) == 2
    assert "contains the input --resume-dir" in capsys.readouterr().err
    assert weights.read_bytes() == b"weights" and checkpoints.is_dir()


def test_out_dot_is_refused_before_the_work(color_dataset, tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for out in (".", str(tmp_path)):
        assert main(["analyze", "--dataset", str(color_dataset), "--out", out, "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert "is the current folder" in err and "Give a new subfolder" in err and "Traceback" not in err


def test_unwritable_out_is_refused_before_the_passes(color_dataset, tmp_path, capsys, monkeypatch):
    import os

    _no_work(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked and real_access(path, mode, **kw))
    assert main(["analyze", "--dataset", str(color_dataset), "--out", str(locked / "run")]) == 2
    err = capsys.readouterr().err
    assert f"cannot be written: {locked} is not writable" in err and "Choose a writable --out" in err
    monkeypatch.setattr(os, "access", real_access)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert main(["analyze", "--dataset", str(color_dataset), "--out", str(a_file / "run")]) == 2
    assert f"{a_file} is a file, not a folder" in capsys.readouterr().err
    # a place root cannot write either (tests run as root: chmod would not stop them)
    assert main(["analyze", "--dataset", str(color_dataset), "--out", "/proc/hf-decomp-results/run"]) == 2
    assert "cannot be written: /proc is not writable" in capsys.readouterr().err


# A child process replaces --out and dies (os._exit: no cleanup, like SIGKILL) at a chosen step.
KILLED_REPLACE = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from hf_decomp.utils import files as io_utils

    out, step = Path(sys.argv[1]), sys.argv[2]
    real_replace = os.replace

    def dying_replace(src, dst):
        if (step == "before-renames" and Path(src) == out) or (step == "between-renames" and Path(dst) == out):
            os._exit(9)
        return real_replace(src, dst)

    os.replace = dying_replace
    with io_utils.staged_output_dir(out, overwrite=True) as staging:
        (staging / "metrics.json").write_text("new")
        if step == "while-writing":
            os._exit(9)
""")


@pytest.mark.parametrize("step", ["before-renames", "between-renames"])
def test_replacement_killed_midway_is_finished_by_the_next_run(step, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("old")
    script = tmp_path / "killed.py"
    script.write_text(KILLED_REPLACE)
    completed = subprocess.run([PYTHON, str(script), str(out), step], env=subprocess_env(), capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 9, completed.stderr[-2000:]
    hidden = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".run."))
    assert ".run.replace.json" in hidden  # the journal says what was under way
    if step == "between-renames":
        assert not out.exists()  # the state that used to lose the results
    check_output_dir(out, overwrite=True)  # the next run, before its work
    assert (out / "metrics.json").read_text() == "new"  # the complete new results took the old ones' place
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".run.")) == []


def test_staging_of_a_dead_writer_is_removed_and_old_backups_restored(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("old")
    script = tmp_path / "killed.py"
    script.write_text(KILLED_REPLACE)
    completed = subprocess.run([PYTHON, str(script), str(out), "while-writing"], env=subprocess_env(),
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 9, completed.stderr[-2000:]
    assert [p.name.startswith(".run.staging-") for p in tmp_path.iterdir() if p.name.startswith(".run.")] == [True]
    with staged_output_dir(out, overwrite=True) as staging:
        (staging / "metrics.json").write_text("newer")
    assert (out / "metrics.json").read_text() == "newer"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".run.")) == []

    # a backup left by an older version (no journal) while --out is missing is put back
    out.rename(tmp_path / ".run.replaced-4242")
    with pytest.raises(FileExistsError, match="already holds results"):  # restored, so kept from overwriting
        check_output_dir(out, overwrite=False)
    assert (out / "metrics.json").read_text() == "newer"


def test_replacement_in_progress_elsewhere_is_not_touched(tmp_path):
    import os

    out = tmp_path / "run"
    out.mkdir()
    (tmp_path / ".run.replace.json").write_text(json.dumps(
        {"host": __import__("socket").gethostname().replace("-", "_"), "pid": os.getpid(),
         "staging": ".run.staging-x", "backup": None}))
    with pytest.raises(FileExistsError, match="is replacing .* right now"):
        check_output_dir(out, overwrite=True)
