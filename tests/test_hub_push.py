"""Upload and download through huggingface_hub against a local fake Hub (no network)."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, constants

from hf_decomp import InfluentialIndices
from hf_decomp.cli import main
from hf_decomp.hub import load_indices, push_indices, push_to_hub
from hf_decomp.utils.errors import DecompFileError, DecompValueError

TOKEN = "hf_test_token"


class FakeHub:
    """Just enough of the Hub API for create_repo, create_branch, upload_folder and hf_hub_download.

    Every upload is answered with ``uploadMode: regular`` (files travel base64 in the commit), and
    recorded in ``repos[repo_id][branch][path] = bytes``; downloads are served from the same store.
    """

    def __init__(self):
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}
        self.created: list[dict] = []
        self.created_types: list[tuple[str | None, str | None]] = []  # (repo type, space sdk) per create
        self.commits: list[dict] = []
        self.auth_headers: list[str | None] = []
        self.validated: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, status: int, payload=None, headers=None, body: bytes | None = None):
                data = body if body is not None else json.dumps(payload or {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if body is None else "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self):
                hub.auth_headers.append(self.headers.get("Authorization"))
                body = self._body()
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:3] == ["api", "repos", "create"]:
                    request = json.loads(body)
                    repo_id = f"{request['organization']}/{request['name']}" if request.get("organization") \
                        else request["name"]
                    hub.created.append({"repo_id": repo_id, "visibility": request.get("visibility")})
                    hub.created_types.append((request.get("type"), request.get("sdk")))
                    hub.repos.setdefault(repo_id, {"main": {}})
                    return self._send(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id, "id": repo_id})
                if parts[:2] == ["api", "validate-yaml"]:  # the Hub checks README.md metadata before a commit
                    hub.validated.append(json.loads(body)["content"])
                    return self._send(200, {"errors": [], "warnings": []})
                if parts[0] == "api" and parts[1] in ("models", "spaces"):
                    repo_id, action, revision = "/".join(parts[2:4]), parts[4], "/".join(parts[5:])
                    if repo_id not in hub.repos:
                        return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    if action == "branch":
                        hub.repos[repo_id].setdefault(revision, dict(hub.repos[repo_id]["main"]))
                        return self._send(200, {})
                    if action == "preupload":
                        files = json.loads(body)["files"]
                        return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                           "shouldIgnore": False} for f in files]})
                    if action == "commit":
                        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                        header = next(item["value"] for item in lines if item["key"] == "header")
                        files = {item["value"]["path"]: base64.b64decode(item["value"]["content"])
                                 for item in lines if item["key"] == "file"}
                        hub.repos[repo_id].setdefault(revision, {}).update(files)
                        oid = hashlib.sha1(body).hexdigest()
                        hub.commits.append({"repo_id": repo_id, "revision": revision, "message": header["summary"],
                                            "files": sorted(files)})
                        return self._send(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{oid}", "commitOid": oid,
                                                "pullRequestUrl": None})
                return self._send(404, {"error": f"not implemented: POST {self.path}"})

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                    files = hub.repos.get(repo_id, {}).get(revision)
                    if files is None:
                        return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    if filename not in files:
                        return self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                    data = files[filename]
                    etag = hashlib.sha256(data).hexdigest()
                    commit = hashlib.sha1(repr(sorted(files)).encode()).hexdigest()
                    return self._send(200, body=data, headers={"ETag": f'"{etag}"', "X-Repo-Commit": commit})
                return self._send(404, {"error": f"not implemented: GET {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def hub(monkeypatch):
    # conftest makes the suite offline; these tests talk to 127.0.0.1 only.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with FakeHub() as fake:
        yield fake


def _indices() -> InfluentialIndices:
    return InfluentialIndices(sets=[[0, 3], [1, 4], [2]], num_features=6, label_names=["red", "green", "blue"],
                              metadata={"base_model": "colournet", "k1": 2, "k2": 2, "method": "histogram"})


def _model_folder(tmp_path: Path) -> Path:
    """A folder shaped like `hf-decomp export` output (file contents are what we check came through)."""
    folder = tmp_path / "model"
    _indices().save(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "decomp", "k1": 2}))
    (folder / "model.safetensors").write_bytes(b"\x00weights\xff" * 10)
    (folder / "README.md").write_text("---\ntags:\n- hf-decomp\n---\n\n# Card\n")
    return folder


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_push_to_hub_uploads_every_file_with_message_and_private_flag(hub, tmp_path):
    folder = _model_folder(tmp_path)
    before = _snapshot(folder)
    url = push_to_hub(folder, "alice/colours-decomposed", private=True, commit_message="first version",
                      token=TOKEN, endpoint=hub.url)
    assert url.startswith(f"{hub.url}/alice/colours-decomposed/commit/")
    assert hub.created == [{"repo_id": "alice/colours-decomposed", "visibility": "private"}]
    uploaded = hub.repos["alice/colours-decomposed"]["main"]
    assert uploaded == {name: data for name, (data, _) in before.items()}
    assert hub.commits[-1]["message"] == "first version"
    assert set(hub.auth_headers) == {f"Bearer {TOKEN}"}
    card = ModelCard(uploaded["README.md"].decode())
    assert card.data.tags == ["hf-decomp"]
    assert hub.validated == [before["README.md"][0].decode()]  # metadata checked before the commit
    assert _snapshot(folder) == before  # the local folder is only read


def test_push_to_revision_creates_the_branch(hub, tmp_path):
    folder = _model_folder(tmp_path)
    push_to_hub(folder, "alice/colours", revision="v2", token=TOKEN, endpoint=hub.url)
    assert hub.created == [{"repo_id": "alice/colours", "visibility": "public"}]
    assert hub.commits[-1]["revision"] == "v2"
    assert "config.json" in hub.repos["alice/colours"]["v2"]
    assert hub.repos["alice/colours"]["main"] == {}
    assert hub.commits[-1]["message"] == "Upload decomposed model with hf-decomp"


def test_push_indices_then_load_indices_round_trip(hub, tmp_path):
    indices = _indices()
    push_indices(indices, "alice/colour-indices", token=TOKEN, endpoint=hub.url)
    assert sorted(hub.repos["alice/colour-indices"]["main"]) == ["indices.json", "indices.safetensors"]
    loaded = load_indices("alice/colour-indices", endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert loaded.sets == [[0, 3], [1, 4], [2]]
    assert loaded.label_names == ["red", "green", "blue"]
    assert loaded.metadata["k2"] == 2
    # Second load works offline from the cache layout hf_hub_download wrote.
    hub.repos.clear()
    constants.HF_HUB_OFFLINE = True
    try:
        again = load_indices("alice/colour-indices", endpoint=hub.url, cache_dir=tmp_path / "cache")
    finally:
        constants.HF_HUB_OFFLINE = False
    assert again.sets == loaded.sets


def test_load_indices_from_a_local_folder_and_missing_repo(hub, tmp_path):
    _indices().save(tmp_path / "run")
    assert load_indices(tmp_path / "run").sets[2] == [2]
    with pytest.raises(DecompFileError, match="bob/nothing"):
        load_indices("bob/nothing", endpoint=hub.url, cache_dir=tmp_path / "cache")
    with pytest.raises(DecompFileError, match="neither an existing folder"):
        load_indices("./missing/folder")


def test_cli_push_and_indices_only(hub, tmp_path, capsys):
    folder = _model_folder(tmp_path)
    code = main(["push", str(folder), "--repo-id", "carol/m", "--commit-message", "via cli", "--token", TOKEN,
                 "--endpoint", hub.url])
    assert code == 0
    assert "pushed" in capsys.readouterr().out
    assert hub.commits[-1] == {"repo_id": "carol/m", "revision": "main", "message": "via cli",
                               "files": sorted(p.name for p in folder.iterdir())}
    code = main(["push", str(folder), "--repo-id", "carol/i", "--indices-only", "--token", TOKEN,
                 "--endpoint", hub.url])
    assert code == 0
    assert hub.commits[-1]["files"] == ["indices.json", "indices.safetensors"]


def test_push_without_token_fails_before_any_request(hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("hf_decomp.hub.push.get_token", lambda: None)
    folder = _model_folder(tmp_path)
    before = _snapshot(folder)
    with pytest.raises(DecompValueError, match="No Hugging Face token"):
        push_to_hub(folder, "alice/x", endpoint=hub.url)
    assert main(["push", str(folder), "--repo-id", "alice/x", "--endpoint", hub.url]) == 2
    assert "hf auth login" in capsys.readouterr().err
    assert hub.auth_headers == [] and hub.repos == {}
    assert _snapshot(folder) == before


def test_push_to_unreachable_endpoint_says_so_and_keeps_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = _model_folder(tmp_path)
    before = _snapshot(folder)
    with pytest.raises(DecompFileError, match="unreachable") as error:
        push_to_hub(folder, "alice/x", token=TOKEN, endpoint=f"http://127.0.0.1:{port}")
    assert f"127.0.0.1:{port}" in str(error.value)
    assert _snapshot(folder) == before


def test_push_in_offline_mode_and_of_a_non_model_folder(tmp_path):
    folder = _model_folder(tmp_path)
    with pytest.raises(DecompFileError, match="HF_HUB_OFFLINE"):  # conftest keeps the suite offline
        push_to_hub(folder, "alice/x", token=TOKEN, endpoint="http://127.0.0.1:9")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DecompFileError, match="hf-decomp export"):
        push_to_hub(tmp_path / "empty", "alice/x", token=TOKEN)


def test_push_an_exported_model_uploads_code_weights_indices_and_card(hub, tmp_path):
    import timm

    from hf_decomp.hub import build_decomposed_model, save_decomposed_model
    from hf_decomp.models import adapt_timm_model

    model = timm.create_model("test_resnet", num_classes=3, pretrained=False)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32), "crop_pct": 1.0}
    adapter = adapt_timm_model(model, name="timm:test_resnet.r160_in1k")
    indices = InfluentialIndices([[0, 1], [2, 3], [4]], adapter.num_features, adapter.label_names, metadata={
        "base_model": "timm:test_resnet.r160_in1k", "dataset": "uoft-cs/cifar10", "k1": 2, "k2": 2,
        "eval_split": "test", "metrics": {"full_accuracy": 91.5, "decomposed_accuracy": 88.25, "rho": 0.9645}})
    folder = save_decomposed_model(build_decomposed_model(adapter, indices), tmp_path / "model",
                                   repo_id="alice/tiny-decomposed")
    push_to_hub(folder, "alice/tiny-decomposed", token=TOKEN, endpoint=hub.url)
    uploaded = hub.repos["alice/tiny-decomposed"]["main"]
    assert uploaded == {p.name: p.read_bytes() for p in folder.iterdir()}
    assert {"modeling_decomp.py", "configuration_decomp.py", "model.safetensors", "preprocessor_config.json",
            "indices.json", "indices.safetensors"} <= set(uploaded)
    card = ModelCard(uploaded["README.md"].decode())
    assert card.data.base_model == "timm/test_resnet.r160_in1k"
    values = [(r.metric_name, r.metric_value) for r in card.data.eval_results]
    assert values == [("Accuracy of this model (decomposed final layer, %)", 88.25),
                      ("rho (decomposed / base model accuracy)", 0.9645),
                      ("Accuracy of the base model (full final layer, %)", 91.5)]
    assert 'model="alice/tiny-decomposed"' in card.text
    # The indices can then be fetched on their own from the model repo.
    loaded = load_indices("alice/tiny-decomposed", endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert loaded.sets == [[0, 1], [2, 3], [4]] and loaded.metadata["k2"] == 2
