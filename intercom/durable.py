"""Durable files: what the door keeps must survive a power cut at any moment.

A Pi on a door loses power without warning, and an SD card reorders writes. Every file the door keeps (its config
and secrets, the Matrix session, the trust pins, the pictures) is written the one way that leaves either the old
or the new content after a cut: a temporary file in the same directory, created with its final mode (and owner),
written and fsynced, renamed over the old one, and the directory fsynced so the rename itself is on the card.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make the directory entries of ``path`` durable (a rename, a new or removed file). Best effort: a file
    system that cannot fsync a directory (some FAT drivers) is left as it is."""
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


def write_atomic(path: Path, data: bytes | str, mode: int = 0o600, *, uid: int | None = None,
                 gid: int | None = None) -> None:
    """Replace ``path`` with ``data`` so that after a power cut it holds either the old or the new content.

    The temporary file has mode ``mode`` (and owner ``uid``/``gid`` when given) from its creation on, so a
    secret is never readable by anyone else, not even for a moment; the umask does not reduce the mode."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
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


def remove_durably(path: Path) -> None:
    """Remove ``path`` (if it is there) and make the removal durable."""
    path = Path(path)
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)
