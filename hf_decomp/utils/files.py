"""Atomic file output: a reader never sees a half-written file or results folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from pathlib import Path

from .errors import DecompFileError, OutputExistsError, OutputLocationError

__all__ = ["atomic_write_text", "atomic_write_json", "atomic_write_file", "new_staging_dir", "publish_dir",
           "check_output_dir",
           "staged_output_dir", "recover_interrupted_replace", "finish_replace_before_reading", "normalize_permissions"]

logger = logging.getLogger(__name__)


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


def atomic_write_file(path: str | Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` on a temporary name unique to this writer (host, pid, random), then rename it to ``path``.

    Several processes may write the same file at once (a cache on a fresh machine): none shares another's
    temporary file, and a reader sees one writer's complete file or none, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_host()}-{os.getpid()}-", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def new_staging_dir(target: Path) -> Path:
    """An empty folder beside ``target``, named for this writer (host, pid), in which to build ``target``'s
    contents; staging folders of writers on this machine that died are removed first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_dead_staging(target)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging-{_host()}-{os.getpid()}-"))
    os.chmod(staging, _default_mode(directory=True))
    return staging


def publish_dir(staging: Path, target: Path, is_complete: Callable[[Path], bool]) -> bool:
    """Rename the fully written folder ``staging`` to ``target``, unless another writer already put a complete
    one there (then ``staging`` is removed: the first complete folder stays, readers may be using it).

    An incomplete ``target`` (left by an interrupted write) is moved aside and replaced. Returns whether
    ``staging`` was published.
    """
    for _ in range(3):
        try:
            os.rename(staging, target)  # atomic; refused while target is a non-empty folder
            return True
        except OSError:
            if is_complete(target):
                shutil.rmtree(staging, ignore_errors=True)
                return False
            aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.stale-{_host()}-{os.getpid()}-"))
            try:
                os.replace(target, aside)  # aside is empty: replaced by the incomplete folder
            except FileNotFoundError:
                pass  # another writer moved it first
            shutil.rmtree(aside, ignore_errors=True)
    raise OSError(f"could not put {staging} in place of {target}: other writers kept replacing it")


def _resolved(path: str | Path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _check_not_an_input(out_dir: Path, inputs: Mapping[str, str | Path | None] | None) -> None:
    """Refuse an ``--out`` that is, lies inside or contains an input: replacing it would delete that input."""
    target = _resolved(out_dir)
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise OutputLocationError(
            f"--out {str(out_dir)!r} is the current folder{' or holds it' if target != cwd else ''}: the results "
            f"folder is replaced as a whole, which would delete everything in it. Give a new subfolder, "
            f"e.g. --out runs/analyze."
        )
    for flag, value in (inputs or {}).items():
        if value is None or not Path(value).expanduser().exists():
            continue  # Hub names and folders still to be made hold nothing to lose
        source = _resolved(value)
        if target == source:
            relation = "is"
        elif source in target.parents:
            relation = "lies inside"
        elif target in source.parents:
            relation = "contains"
        else:
            continue
        raise OutputLocationError(
            f"--out {str(out_dir)!r} {relation} the input {flag} {str(value)!r}; writing the results there would "
            f"delete or alter it. Choose an --out folder outside every input."
        )


def _check_writable(out_dir: Path) -> None:
    """Fail before any work when the results could not be written (read-only disk, no permission, a file in
    the way), instead of after hours of passes."""
    target = _resolved(out_dir)
    folder = target.parent
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        folder = folder.parent  # missing folders are created, in the nearest existing one
    if not folder.is_dir():
        raise OutputLocationError(f"--out {str(out_dir)!r}: {folder} is a file, not a folder; choose another --out.")
    try:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"no write permission for {folder}")
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".hf-decomp-write-test-"))  # what root or a mount may refuse
    except OSError as e:
        raise OutputLocationError(
            f"--out {str(out_dir)!r} cannot be written: {folder} is not writable ({type(e).__name__}: {e}). "
            f"Choose a writable --out folder."
        ) from e


def check_output_dir(out_dir: str | Path, overwrite: bool,
                     inputs: Mapping[str, str | Path | None] | None = None) -> Path:
    """Check ``--out`` early, before work: finish a replacement a kill interrupted, refuse an input
    (``inputs``: flag -> path), a folder that already holds results unless ``overwrite``, and a place
    that cannot be written."""
    out_dir = Path(out_dir)
    _check_not_an_input(out_dir, inputs)
    recover_interrupted_replace(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"--out {str(out_dir)!r} exists and is not a directory.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"--out {str(out_dir)!r} already holds results ({', '.join(sorted(p.name for p in out_dir.iterdir())[:5])}). "
            f"Pass --overwrite (overwrite=True) to replace them, or choose another folder."
        )
    _check_writable(out_dir)
    return out_dir


# Replacing a results folder takes two renames (old -> backup, staging -> old). A journal written before
# them lets the next run finish a replacement that a kill interrupted; staging folders carry the host and
# pid of their writer so that those of dead processes can be removed.

def _journal_path(out_dir: Path) -> Path:
    return out_dir.with_name(f".{out_dir.name}.replace.json")


def _host() -> str:
    return socket.gethostname().replace("-", "_")


def _alive(host: str, pid: int) -> bool:
    if host != _host():
        return True  # another machine's process: cannot tell, so never touch its files
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_dead_staging(out_dir: Path) -> None:
    """Remove ``.<name>.staging-<host>-<pid>-*`` folders whose writer on this machine is gone."""
    for folder in out_dir.parent.glob(f".{out_dir.name}.staging-*"):
        parts = folder.name[len(f".{out_dir.name}.staging-"):].split("-")
        if len(parts) >= 3 and parts[1].isdigit() and not _alive(parts[0], int(parts[1])):
            logger.info("removing %s, left by a process that died while writing results", folder)
            shutil.rmtree(folder, ignore_errors=True)


def recover_interrupted_replace(out_dir: str | Path) -> None:
    """Finish a replacement of ``out_dir`` that a kill interrupted, and remove dead writers' staging folders.

    The journal is written once the new results are complete, so finishing means: the new results take
    the place of ``out_dir`` and the old ones (the backup) are removed. A backup left by a version without
    the journal is put back when ``out_dir`` is missing.
    """
    out_dir = Path(os.path.abspath(out_dir))
    if not out_dir.parent.is_dir():
        return
    journal = _journal_path(out_dir)
    if journal.is_file():
        try:
            entry = json.loads(journal.read_text())
            host, pid = str(entry["host"]), int(entry["pid"])
            staging = out_dir.with_name(entry["staging"])
            backup = out_dir.with_name(entry["backup"]) if entry.get("backup") else None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise OutputExistsError(
                f"The replacement journal {journal} is unreadable ({type(e).__name__}: {e}). Look at the hidden "
                f".{out_dir.name}.* folders beside it, keep the results you want as {out_dir}, then delete the journal."
            ) from e
        if _alive(host, pid):
            raise OutputExistsError(
                f"Process {pid} on {host} is replacing {out_dir} right now ({journal}); wait for it, or choose "
                f"another --out.")
        try:
            if staging.is_dir():  # not yet renamed into place
                if out_dir.exists() and backup is not None and not backup.exists():
                    os.replace(out_dir, backup)
                os.replace(staging, out_dir)
            if backup is not None and backup.exists() and out_dir.exists():
                shutil.rmtree(backup)
            journal.unlink()
        except FileNotFoundError:  # another process of the same launch finished it first
            pass
        logger.warning("finished replacing %s, which a killed run had left half done", out_dir)
    elif not out_dir.exists():
        backups = sorted(out_dir.parent.glob(f".{out_dir.name}.replaced-*"), key=lambda p: p.stat().st_mtime)
        if backups:
            os.replace(backups[-1], out_dir)
            logger.warning("restored %s from %s, left by a run killed while replacing it", out_dir, backups[-1])
    _clean_dead_staging(out_dir)


def finish_replace_before_reading(folder: str | Path, wait_s: float = 10.0) -> None:
    """Readers (export, explore, load_indices): finish a replacement of ``folder`` that a kill interrupted,
    as the next writer would, so a reader sees the complete new results instead of a missing folder.

    A replacement under way (its writer alive) takes milliseconds: it is waited for up to ``wait_s``
    seconds. Where it cannot be finished (the writer still runs, or this user may not rename there), one
    line says what happened and how to finish it. Does nothing when no replacement was interrupted.
    """
    folder = Path(os.path.abspath(Path(folder).expanduser()))
    journal = _journal_path(folder)
    deadline = time.monotonic() + wait_s
    while journal.is_file():
        try:
            entry = json.loads(journal.read_text())
            host, pid = str(entry["host"]), int(entry["pid"])
        except FileNotFoundError:
            return  # its writer just finished
        except (OSError, ValueError, KeyError, TypeError):
            break  # recover_interrupted_replace says what to do with an unreadable journal
        if not _alive(host, pid):
            break
        if time.monotonic() >= deadline:
            raise DecompFileError(
                f"{folder} is being replaced by process {pid} on {host} right now ({journal.name} beside it); read "
                f"it once that run has finished.")
        time.sleep(0.05)
    else:
        if folder.exists() or not folder.parent.is_dir() or not any(folder.parent.glob(f".{folder.name}.replaced-*")):
            return  # nothing was interrupted (a backup without journal, from older versions, is put back below)
    try:
        recover_interrupted_replace(folder)
    except PermissionError as e:
        raise DecompFileError(
            f"{folder} was left half replaced by a killed run (see {journal.name} and the hidden .{folder.name}.* "
            f"folders beside it) and cannot be finished here ({e}). A user who may write {folder.parent} finishes "
            f"it by reading or writing the folder with hf-decomp (e.g. `hf-decomp export --indices {folder} ...`)."
        ) from e


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def staged_output_dir(out_dir: str | Path, overwrite: bool = False,
                      inputs: Mapping[str, str | Path | None] | None = None):
    """Yield a temporary folder; on success it replaces ``out_dir``.

    On failure the temporary folder is removed and ``out_dir`` is left exactly as it was. A kill at any
    moment leaves either the old results or the new ones at ``out_dir`` (the next run finishes an
    interrupted replacement, see :func:`recover_interrupted_replace`).
    """
    out_dir = check_output_dir(out_dir, overwrite, inputs)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.staging-{_host()}-{os.getpid()}-"))
    os.chmod(staging, _default_mode(directory=True))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    normalize_permissions(staging)
    backup = out_dir.with_name(f".{out_dir.name}.replaced-{os.getpid()}") if out_dir.exists() else None
    journal = _journal_path(out_dir)
    atomic_write_json(journal, {"host": _host(), "pid": os.getpid(), "staging": staging.name,
                                "backup": None if backup is None else backup.name})
    _fsync_dir(out_dir.parent)
    if backup is not None:
        os.replace(out_dir, backup)
    os.replace(staging, out_dir)
    _fsync_dir(out_dir.parent)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    journal.unlink()  # last: a kill while the backup is removed leaves the journal to finish that


def normalize_permissions(root: str | Path) -> None:
    """Give every file under ``root`` the mode a plain ``open()`` gives (0644 under umask 022).

    safetensors (and so ``save_pretrained``) and ``mkstemp`` create files readable by their owner only
    (0600); results and exported models are meant to be shared, uploaded and served.
    """
    root = Path(root)
    paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    for path in paths:
        os.chmod(path, _default_mode())
