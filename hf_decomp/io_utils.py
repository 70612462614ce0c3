"""Atomic file output: a reader never sees a half-written file or results folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputExistsError

__all__ = ["atomic_write_text", "atomic_write_json", "staged_output_dir", "normalize_permissions"]


def _default_mode(directory: bool = False) -> int:
    """The mode a plain open()/mkdir() would give (mkstemp/mkdtemp use 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def check_output_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """Refuse a folder that already holds results unless ``overwrite``; check it early, before work."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"--out {str(out_dir)!r} exists and is not a directory.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"--out {str(out_dir)!r} already holds results ({', '.join(sorted(p.name for p in out_dir.iterdir())[:5])}). "
            f"Pass --overwrite (overwrite=True) to replace them, or choose another folder."
        )
    return out_dir


@contextmanager
def staged_output_dir(out_dir: str | Path, overwrite: bool = False):
    """Yield a temporary folder; on success it replaces ``out_dir`` in one rename.

    On failure the temporary folder is removed and ``out_dir`` is left exactly as it was.
    """
    out_dir = check_output_dir(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.staging-"))
    os.chmod(staging, _default_mode(directory=True))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    normalize_permissions(staging)
    backup = None
    if out_dir.exists():
        backup = out_dir.with_name(f".{out_dir.name}.replaced-{os.getpid()}")
        os.replace(out_dir, backup)
    os.replace(staging, out_dir)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def normalize_permissions(root: str | Path) -> None:
    """Give every file under ``root`` the mode a plain ``open()`` gives (0644 under umask 022).

    safetensors (and so ``save_pretrained``) and ``mkstemp`` create files readable by their owner only
    (0600); results and exported models are meant to be shared, uploaded and served.
    """
    root = Path(root)
    paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    for path in paths:
        os.chmod(path, _default_mode())
