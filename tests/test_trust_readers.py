"""Readers of a results folder that a kill left mid-replace finish the replacement, as writers do."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest
from helpers_trust import PYTHON, subprocess_env

from hf_decomp import InfluentialIndices
from hf_decomp.analysis.folder import ResultsFolder
from hf_decomp.hub import load_indices
from hf_decomp.hub.export import load_run
from hf_decomp.utils.errors import DecompFileError
from hf_decomp.utils.files import finish_replace_before_reading

# A child replaces `out` with new indices and dies (os._exit: no cleanup, like SIGKILL) at a journal step:
#   before-renames   journal written, old results still in place
#   between-renames  old results moved to the backup, new ones not yet in place: `out` is missing
#   before-cleanup   new results in place, backup not yet removed
#   before-unjournal backup removed, journal not yet removed
KILLED_REPLACE = textwrap.dedent("""
    import os, shutil, sys
    from pathlib import Path
    from hf_decomp import InfluentialIndices
    from hf_decomp.utils import files as io_utils

    out, step = Path(sys.argv[1]), sys.argv[2]
    real_replace, real_rmtree, real_unlink = os.replace, shutil.rmtree, Path.unlink

    def dying_replace(src, dst):
        if (step == "before-renames" and Path(src) == out) or (step == "between-renames" and Path(dst) == out):
            os._exit(9)
        return real_replace(src, dst)

    def dying_rmtree(path, *args, **kwargs):
        if step == "before-cleanup" and ".replaced-" in Path(path).name:
            os._exit(9)
        return real_rmtree(path, *args, **kwargs)

    def dying_unlink(path, *args, **kwargs):
        if step == "before-unjournal" and path.name.endswith(".replace.json"):
            os._exit(9)
        return real_unlink(path, *args, **kwargs)

    os.replace, shutil.rmtree, Path.unlink = dying_replace, dying_rmtree, dying_unlink
    with io_utils.staged_output_dir(out, overwrite=True) as staging:
        InfluentialIndices([[1], [0]], 2, ["a", "b"], metadata={"run": "new"}).save(staging)
""")

STEPS = ["before-renames", "between-renames", "before-cleanup", "before-unjournal"]
READERS = {
    "InfluentialIndices.load": InfluentialIndices.load,
    "load_indices": load_indices,
    "load_run (export)": lambda folder: load_run(folder)[0],
}


def _killed_replace(tmp_path: Path, step: str, with_old: bool = True) -> Path:
    out = tmp_path / "run"
    if with_old:
        InfluentialIndices([[0], [1]], 2, ["a", "b"], metadata={"run": "old"}).save(out)
    script = tmp_path / "killed.py"
    script.write_text(KILLED_REPLACE)
    done = subprocess.run([PYTHON, str(script), str(out), step], env=subprocess_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 9, done.stderr[-2000:]
    assert (tmp_path / ".run.replace.json").is_file()  # the journal says what was under way
    return out


def _hidden(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".run."))


@pytest.mark.parametrize("with_old, step", [(True, step) for step in STEPS] + [(False, "between-renames")],
                         ids=STEPS + ["first-write"])
def test_every_reader_finishes_a_replacement_a_kill_interrupted(tmp_path, with_old, step):
    killed = tmp_path / "killed"
    killed.mkdir()
    _killed_replace(killed, step, with_old)
    for name, reader in READERS.items():  # each reader on its own copy of what the kill left
        where = Path(shutil.copytree(killed, tmp_path / name.split()[0], symlinks=True))
        out = where / "run"
        if step == "between-renames":
            assert not out.exists()  # what used to read as "holds no indices.json"
        indices = reader(out)
        assert (name, indices.metadata["run"], indices.sets) == (name, "new", [[1], [0]])
        assert _hidden(where) == [], name  # journal and backup gone, as after the writer's own finish


def test_results_folder_reader_finishes_it_too(tmp_path):
    out = _killed_replace(tmp_path, "between-renames")
    with pytest.raises(DecompFileError, match="is not an `hf-decomp analyze` results folder"):
        ResultsFolder.load(out)  # no metrics.json in these tiny results, but the folder is back in place
    assert InfluentialIndices.load(out).metadata["run"] == "new" and _hidden(tmp_path) == []


def test_a_replacement_under_way_is_waited_for_then_named(tmp_path):
    out = tmp_path / "run"
    InfluentialIndices([[0], [1]], 2, ["a", "b"]).save(out)
    journal = tmp_path / ".run.replace.json"
    journal.write_text(json.dumps({"host": socket.gethostname().replace("-", "_"), "pid": os.getpid(),
                                   "staging": ".run.staging-x", "backup": None}))
    with pytest.raises(DecompFileError, match=r"run is being replaced by process \d+ on .* right now \(.run.replace"
                                              r".json beside it\); read it once that run has finished"):
        finish_replace_before_reading(out, wait_s=0.2)
    assert journal.is_file() and (out / "indices.json").is_file()  # a live writer's files are not touched


def test_a_replacement_that_cannot_be_finished_here_says_how(tmp_path, monkeypatch):
    out = _killed_replace(tmp_path, "between-renames")

    def refused(src, dst):
        raise PermissionError(13, "Permission denied", str(src))

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(DecompFileError, match=r"run was left half replaced by a killed run \(see .run.replace.json "
                                              r"and the hidden .run.\* folders beside it\) and cannot be finished "
                                              r"here .*Permission denied.*finishes it") as caught:
        InfluentialIndices.load(out)
    assert "\n" not in str(caught.value)


def test_explore_finishes_it_too_before_it_looks_at_the_folder(tmp_path):
    from hf_decomp.explore.source import open_explored

    out = _killed_replace(tmp_path, "between-renames")
    assert not out.exists()
    with pytest.raises(DecompFileError, match="is neither an `hf-decomp analyze` results folder"):
        open_explored(str(out))  # the indices-only folder is back: it is judged, not reported missing
    assert _hidden(tmp_path) == [] and (out / "indices.json").is_file()
