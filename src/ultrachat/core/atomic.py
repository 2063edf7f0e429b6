"""Finished outputs appear whole or not at all, and are never overwritten unless asked.

Every command that writes a finished output (``filter``, ``dedup``, ``export``, ``import``,
``stats``...) writes it under a temporary name beside its final place, ``fsync``s it, renames
it into place and ``fsync``s the folder, so a kill or a full disk leaves either the old state
or the new one, never half a file. An existing output is refused with a one-line error unless
the command was given ``--overwrite`` (generate's resumable folders are not finished outputs:
they are continued, see ``generate/store.py``).

Example::

    refuse_existing(out, overwrite=False)          # ValueError naming out and --overwrite
    with staged_dir(out, overwrite=False) as work:  # a temporary folder beside out
        (work / "data.parquet").write_bytes(...)
    # out now holds exactly what was written to work
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

#: Whether commands may replace finished outputs; set by the CLI's ``--overwrite``.
OVERWRITE: ContextVar[bool] = ContextVar("ultrachat_overwrite", default=False)


@contextmanager
def overwriting(allowed: bool) -> Iterator[None]:
    """Let the outputs written inside the block replace existing ones (``--overwrite``)."""
    token = OVERWRITE.set(allowed)
    try:
        yield
    finally:
        OVERWRITE.reset(token)


def _unfinished(entry: Path) -> bool:
    """A temporary file or folder a killed command left (never a finished output)."""
    return entry.name.endswith((".part", ".tmp")) or ".part-" in entry.name


def is_taken(path: Path) -> bool:
    """A file, or a folder holding a finished output (leftovers of a killed run do not count)."""
    return path.is_file() or (path.is_dir() and any(not _unfinished(e) for e in path.iterdir()))


def refuse_existing(path: Path, overwrite: bool | None = None) -> None:
    """Raise a one-line ``ValueError`` if ``path`` is taken and overwriting was not asked for."""
    if is_taken(path) and not (OVERWRITE.get() if overwrite is None else overwrite):
        raise ValueError(f"{path}: already exists; choose a new --out or pass --overwrite (nothing was written)")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_path(path: Path) -> None:
    """``fsync`` a file, or a folder's entry list (makes renames in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))


def publish(work: Path, out: Path) -> None:
    """Move the finished ``work`` (file or folder) to ``out``, replacing what is there.

    A folder cannot be renamed over a non-empty one, so the old one steps aside first
    (``.NAME.old-PID``) and is removed once the new one is in place.
    """
    old = None
    if out.is_dir() and not out.is_symlink() and any(out.iterdir()):
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(work, out)
    fsync_path(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_dir(out: Path, overwrite: bool | None = None) -> Iterator[Path]:
    """A temporary folder beside ``out``; on success it is fsynced and becomes ``out``; on
    any error it is removed and ``out`` is untouched."""
    refuse_existing(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.part-", dir=out.parent))
    work.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would become out's mode
    try:
        yield work
        fsync_tree(work)
        publish(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
