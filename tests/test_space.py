"""`hf-decomp export --space` writes a valid Gradio Space; `push --repo-type space` uploads it (local fake Hub)."""

from __future__ import annotations

import runpy

import pytest
from huggingface_hub import SpaceCard
from test_hub_push import TOKEN, hub  # noqa: F401  (the local fake Hub fixture)

from hf_decomp.cli import main


def test_export_space_then_push_it_as_a_space(hub, tmp_path, capsys, monkeypatch):  # noqa: F811
    space = tmp_path / "space"
    assert main(["export", "--space", str(space), "--repo-id", "alice/colours-decomposed"]) == 0
    assert sorted(p.name for p in space.iterdir()) == ["README.md", "app.py", "requirements.txt"]
    card = SpaceCard.load(space / "README.md")
    assert (card.data.sdk, card.data.app_file, card.data.models) == ("gradio", "app.py", ["alice/colours-decomposed"])
    import gradio

    assert card.data.sdk_version == gradio.__version__
    assert "hf-decomp[explore]" in (space / "requirements.txt").read_text()
    launched = {}
    monkeypatch.setattr("hf_decomp.explore.app.launch", lambda source, **kw: launched.update(source=source, **kw))
    runpy.run_path(str(space / "app.py"))  # the Space's entry point opens the model by its Hub id
    assert launched == {"source": "alice/colours-decomposed", "host": "0.0.0.0", "port": 7860}

    capsys.readouterr()
    code = main(["push", str(space), "--repo-id", "alice/explorer", "--repo-type", "space", "--token", TOKEN,
                 "--endpoint", hub.url])
    assert code == 0 and "pushed" in capsys.readouterr().out
    assert hub.created_types == [("space", "gradio")]
    assert hub.commits[-1]["files"] == ["README.md", "app.py", "requirements.txt"]
    assert hub.repos["alice/explorer"]["main"]["README.md"] == (space / "README.md").read_bytes()


def test_space_needs_a_hub_id_and_push_needs_a_space_folder(hub, tmp_path, capsys):  # noqa: F811
    assert main(["export", "--space", str(tmp_path / "s")]) == 2
    assert "--space needs --repo-id" in capsys.readouterr().err
    assert main(["export", "--space", str(tmp_path / "s"), "--repo-id", "not-a-repo-id"]) == 2
    assert "user/name" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["push", str(tmp_path / "empty"), "--repo-id", "a/b", "--repo-type", "space", "--token", TOKEN,
                 "--endpoint", hub.url]) == 2
    assert "not a Space folder (no app.py)" in capsys.readouterr().err
    assert hub.commits == []


@pytest.mark.parametrize("argv", [["export"], ["export", "--out", "x"]])
def test_export_without_indices_or_space_says_what_it_needs(argv, capsys):
    assert main(argv) == 2
    assert "export needs --indices RUN_DIR and --out MODEL_DIR" in capsys.readouterr().err


def test_space_never_replaces_a_results_folder_even_with_overwrite(tmp_path, capsys):
    """issue 20: `export --indices R --space R --overwrite` replaced the results folder R with the Space."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("indices.json", "metrics.json", "statistics.safetensors"):
        (run / name).write_text("{}")
    before = sorted(p.name for p in run.iterdir())
    assert main(["export", "--indices", str(run), "--space", str(run), "--repo-id", "a/b", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "--space" in err and "--out" not in err and sorted(p.name for p in run.iterdir()) == before
    # a results folder given only as --space (no --indices) is refused as well, with --overwrite
    assert main(["export", "--space", str(run), "--repo-id", "a/b", "--overwrite"]) == 2
    assert "holds indices.json, metrics.json, statistics.safetensors" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == before


def test_space_gets_every_check_out_gets_and_names_space(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    # inside an input
    assert main(["export", "--indices", str(run), "--space", str(run / "space"), "--repo-id", "a/b"]) == 2
    err = capsys.readouterr().err
    assert "--space" in err and "lies inside the input --indices" in err and "--out" not in err
    # holding an input
    assert main(["export", "--indices", str(run), "--space", str(tmp_path), "--repo-id", "a/b",
                 "--overwrite"]) == 2
    assert "contains the input --indices" in capsys.readouterr().err
    # a folder with files, no --overwrite
    assert main(["export", "--space", str(run), "--repo-id", "a/b"]) == 2
    err = capsys.readouterr().err
    assert "--space" in err and "already holds" in err and "--out" not in err
    assert (run / "notes.txt").read_text() == "mine"
    # the current folder
    monkeypatch.chdir(run)
    assert main(["export", "--space", ".", "--repo-id", "a/b", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "--space '.' is the current folder" in err and "--out" not in err
    assert main(["export", "--space", str(tmp_path / "s"), "--out", str(tmp_path / "m"), "--repo-id", "a/b"]) == 2
    assert "not both" in capsys.readouterr().err
