"""Upload decomposed models and index sets to the Hub, and download index sets from it.

Everything goes through huggingface_hub's ``HfApi`` (``create_repo``, ``create_branch``,
``upload_folder``) and ``hf_hub_download``; ``endpoint`` (default ``HF_ENDPOINT``) selects the Hub.
The local folder is only read, never changed.
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, get_token, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..method.indices import INDICES_JSON, INDICES_SAFETENSORS, InfluentialIndices
from ..utils.errors import DecompFileError, DecompValueError
from ..utils.files import finish_replace_before_reading

__all__ = ["push_to_hub", "push_indices", "push_metric", "load_indices"]


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level exceptions of whichever HTTP client huggingface_hub uses."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _resolve_token(token: str | None) -> str:
    token = token or get_token()
    if not token:
        raise DecompValueError(
            "No Hugging Face token: pushing needs write access. Log in with `hf auth login`, set HF_TOKEN, "
            "or pass --token (token=...)."
        )
    return token


def _hub_call(action: str, endpoint: str, fn, *args, **kwargs):
    """Run one Hub call; turn connection and HTTP failures into errors that say what to do."""
    try:
        return fn(*args, **kwargs)
    except OfflineModeIsEnabled as e:
        raise DecompFileError(
            f"Cannot {action}: offline mode is on (HF_HUB_OFFLINE=1). Unset HF_HUB_OFFLINE to reach {endpoint}."
        ) from e
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        hint = {401: "the token was rejected: check HF_TOKEN / `hf auth login`",
                403: "the token may not write to this repo (needs a write token or org membership)"}.get(status, "")
        raise DecompFileError(f"Cannot {action} at {endpoint}: {e}" + (f" ({hint})" if hint else "")) from e
    except _transport_errors() as e:
        raise DecompFileError(
            f"Cannot {action}: {endpoint} is unreachable ({type(e).__name__}: {e}). Check the network or "
            f"HF_ENDPOINT; nothing was uploaded and the local folder is unchanged."
        ) from e


def _upload(folder: Path, repo_id: str, *, private: bool, commit_message: str, revision: str | None,
            token: str | None, endpoint: str | None, allow_patterns=None, repo_type: str | None = None,
            space_sdk: str | None = None) -> str:
    api = HfApi(endpoint=endpoint, token=_resolve_token(token))
    where = api.endpoint
    repo = _hub_call(f"create repo {repo_id!r}", where, api.create_repo, repo_id, private=private, exist_ok=True,
                     repo_type=repo_type, space_sdk=space_sdk or ("gradio" if repo_type == "space" else None))
    if revision and revision != "main":
        _hub_call(f"create branch {revision!r} in {repo_id!r}", where, api.create_branch, repo_id,
                  branch=revision, exist_ok=True, repo_type=repo_type)
    commit = _hub_call(f"upload {str(folder)!r} to {repo_id!r}", where, api.upload_folder, folder_path=str(folder),
                       repo_id=repo_id, commit_message=commit_message, revision=revision,
                       allow_patterns=allow_patterns, repo_type=repo_type)
    return getattr(commit, "commit_url", None) or str(repo)


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    repo_type: str = "model",
) -> str:
    """Upload a saved decomposed model folder (``hf-decomp export`` output) to a Hub model repo, or an
    explorer Space folder (``hf-decomp export --space``) to a Space with ``repo_type="space"``.

    Args:
        folder: the model folder (config.json, model.safetensors, code, indices, README.md).
        repo_id: ``user/name``; created (private when ``private``) if it does not exist.
        commit_message: default "Upload decomposed model with hf-decomp".
        revision: branch to commit to (created if missing); default the main branch.
        token: a write token; default the logged-in one / ``HF_TOKEN``.
        endpoint: the Hub URL; default ``HF_ENDPOINT`` / https://huggingface.co.

    Returns:
        the URL of the commit.
    """
    folder = Path(folder)
    if repo_type not in ("model", "space"):
        raise DecompValueError(f"repo_type={repo_type!r}: push uploads a model folder ('model') or a Space ('space')")
    if repo_type == "space":
        if not (folder / "app.py").is_file():
            raise DecompFileError(f"{str(folder)!r} is not a Space folder (no app.py); create one with "
                                  f"`hf-decomp export --space {folder} --repo-id USER/MODEL`.")
        return _upload(folder, repo_id, private=private, revision=revision, token=token, endpoint=endpoint,
                       commit_message=commit_message or "Upload hf-decomp explorer Space", repo_type="space")
    if not (folder / "config.json").is_file():
        raise DecompFileError(
            f"{str(folder)!r} is not a saved model folder (no config.json); create one with "
            f"`hf-decomp export --indices RUN_DIR --out {folder}`."
        )
    return _upload(folder, repo_id, private=private, revision=revision, token=token, endpoint=endpoint,
                   commit_message=commit_message or "Upload decomposed model with hf-decomp")


def push_indices(
    indices: InfluentialIndices | str | Path,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Upload only the index sets (``indices.json`` + ``indices.safetensors``) to a Hub repo.

    Args:
        indices: an ``InfluentialIndices`` or a folder holding the two files (an analyze run).
        Other arguments as in :func:`push_to_hub`.
    """
    if not isinstance(indices, InfluentialIndices):
        indices = InfluentialIndices.load(indices)  # validates before anything is uploaded
    with tempfile.TemporaryDirectory(prefix="hf_decomp_indices_") as tmp:
        indices.save(tmp)
        return _upload(Path(tmp), repo_id, private=private, revision=revision, token=token, endpoint=endpoint,
                       commit_message=commit_message or "Upload influential indices with hf-decomp",
                       allow_patterns=[INDICES_JSON, INDICES_SAFETENSORS])


def push_metric(
    repo_id: str,
    name: str = "decomposition",
    *,
    repo_type: str = "space",
    private: bool = False,
    commit_message: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Upload a packaged ``evaluate`` metric module (``hf_decomp.metrics.path(name)``) to the Hub.

    evaluate looks for community metrics in Spaces (``evaluate.load("user/decomposition")``), so the
    default ``repo_type`` is ``"space"`` (a Gradio Space whose app shows the metric's widget).
    Other arguments as in :func:`push_to_hub`.
    """
    from ..metrics import path as metric_path

    folder = Path(metric_path(name))
    return _upload(folder, repo_id, private=private, revision=revision, token=token, endpoint=endpoint,
                   commit_message=commit_message or f"Upload the {name} metric with hf-decomp",
                   repo_type=repo_type, space_sdk="gradio" if repo_type == "space" else None,
                   allow_patterns=["*.py", "*.md"])


def load_indices(
    path_or_repo_id: str | Path,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | Path | None = None,
    layer: str | None = None,
) -> InfluentialIndices:
    """Load index sets from a local folder / ``indices.json`` file or from a Hub repo (``user/name``).

    ``layer`` picks the sets of another layer of an ``analyze --layers`` run (default: the final layer).

    Hub files go through ``hf_hub_download`` (cached; offline, the cached copy is used).

    Example:
        >>> indices = load_indices("user/resnet20-cifar10-decomposed")  # doctest: +SKIP
        >>> indices.sets[0]  # doctest: +SKIP
    """
    local = Path(path_or_repo_id).expanduser()
    finish_replace_before_reading(local)  # a results folder a killed run left mid-replace: finish it first
    if local.exists():
        from ..layers.artifacts import layer_indices_dir

        folder = local / subfolder if subfolder else local
        if layer not in (None, "final"):
            folder = layer_indices_dir(folder.parent if folder.is_file() else folder, layer)
        return InfluentialIndices.load(folder)
    if layer not in (None, "final"):
        subfolder = "/".join(filter(None, (subfolder, "layers", layer)))
    repo_id = str(path_or_repo_id)
    if repo_id.startswith((".", "/", "~")) or repo_id.count("/") != 1:
        raise DecompFileError(
            f"{repo_id!r} is neither an existing folder nor a Hub repo id of the form 'user/name'."
        )
    files = {}
    for name in (INDICES_JSON, INDICES_SAFETENSORS):
        try:
            files[name] = hf_hub_download(repo_id, name, subfolder=subfolder, revision=revision, token=token,
                                          endpoint=endpoint, cache_dir=cache_dir)
        except (RepositoryNotFoundError, RevisionNotFoundError) as e:
            raise DecompFileError(f"No Hub repo {repo_id!r} (revision {revision or 'main'}): {e}") from e
        except LocalEntryNotFoundError as e:
            raise DecompFileError(
                f"Could not download {name} of {repo_id!r} and it is not in the local cache ({e}). Connect to "
                f"the Hub once, or give a local folder holding {INDICES_JSON}."
            ) from e
        except EntryNotFoundError as e:
            if name == INDICES_SAFETENSORS:
                continue  # the JSON alone is a complete artifact
            raise DecompFileError(f"{repo_id!r} has no {name}; push one with `push_indices`.") from e
    return InfluentialIndices.load(files[INDICES_JSON])
