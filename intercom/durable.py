"""Durable files: what the door keeps must survive a power cut at any moment.

A Pi on a door loses power without warning, and an SD card reorders writes. Every file the door keeps (its config
and secrets, the Matrix session, the trust pins, the pictures) is written the one way that leaves either the old
or the new content after a cut: a temporary file in the same directory, created with its final mode (and owner),
written and fsynced, renamed over the old one, and the directory fsynced so the rename itself is on the card.

The same holds for the directory entries themselves: a directory made here, a file removed or renamed here is on
the card (its parent directory fsynced) before the function returns, so whatever the caller does next can rely on
it. Only after a call returns is its change durable; a cut during the call leaves the old state or the new one.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["fsync_dir", "make_dirs", "remove_durably", "rename_durably", "write_atomic"]


def fsync_dir(path: Path) -> None:
    """Make the directory entries of ``path`` durable (a rename, a new or removed file) and its own mode and owner.
    Best effort: a file system that cannot fsync a directory (some FAT drivers) is left as it is."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def make_dirs(path: Path, mode: int | None = None, *, uid: int | None = None, gid: int | None = None) -> None:
    """Create the directory ``path`` and its missing parents, each new one durable (its parent fsynced). With
    ``mode`` (and ``uid``/``gid``), ``path`` gets exactly that mode and owner, also when it was there already
    (made durable too); new parents get 0755 less the umask."""
    path = Path(path)
    missing = []
    here = path
    while not here.is_dir():
        missing.append(here)
        here = here.parent
    for new in reversed(missing):
        try:
            os.mkdir(new, mode if new == path and mode is not None else 0o755)  # the umask can only narrow it
        except FileExistsError:  # made meanwhile by someone else
            if not new.is_dir():
                raise
        fsync_dir(new.parent)
    info = path.stat()
    changed = False
    if (uid is not None and info.st_uid != uid) or (gid is not None and info.st_gid != gid):
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
        changed = True
    if mode is not None and stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)
        changed = True
    if changed:
        fsync_dir(path)


def write_atomic(path: Path, data: bytes | str, mode: int = 0o600, *, uid: int | None = None,
                 gid: int | None = None) -> None:
    """Replace ``path`` with ``data`` so that after a power cut it holds either the old or the new content, and
    the new content once this returns. Missing parent directories are made (durably, see :func:`make_dirs`).

    The temporary file has mode ``mode`` (and owner ``uid``/``gid`` when given) from its creation on, so a
    secret is never readable by anyone else, not even for a moment; the umask does not reduce the mode."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    make_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # left by a cut during an earlier write
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o700)
    try:
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def rename_durably(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target`` (replacing it) and make the rename durable."""
    source, target = Path(source), Path(target)
    os.replace(source, target)
    fsync_dir(target.parent)
    if source.parent != target.parent:
        fsync_dir(source.parent)


def remove_durably(path: Path) -> None:
    """Remove ``path`` (if it is there) and make the removal durable."""
    path = Path(path)
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)
