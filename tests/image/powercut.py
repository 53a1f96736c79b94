"""A power cut at any moment, for tests: a model of what a file system keeps when the power goes.

:class:`PowerCut` watches the os-level operations that change files below some directories (``os.open`` creating
or truncating, ``os.write``, ``os.fsync``, ``os.replace``/``rename``, ``os.unlink``/``remove``, ``os.mkdir``/``rmdir``,
``os.chmod``/``fchmod``, ``os.chown``/``fchown``), counts them, and, when asked, cuts the power before operation
``cut_at``: that operation and every later one raises :class:`Crash` (a ``BaseException``, so no ``except
Exception`` can swallow it) and never reaches the disk. Any other way of changing a file there (``open(..., "w")``,
``Path.write_text``, ``os.fdopen``, ``truncate``, links, ``dir_fd`` operations) fails the test as
:class:`Unmodelled`, so nothing escapes the model.

Beside the real files it keeps, for every file and directory (an "inode"), what it holds now and what is on the
card, which is what it held at its last ``fsync``: a file's bytes and mode; a directory's entries (names of inodes)
and mode. At first, everything is on the card. A new file is on the card empty, with the mode it was created with
(creating it is its parent directory's change); a new directory is on the card empty. After the cut,
:meth:`PowerCut.cut` rebuilds the directories from that model as the card could hold them after the power came
back, POSIX's rules: each inode with changes since its last fsync either keeps them all or loses them all, chosen
by ``keep``. Losing a directory's changes undoes renames, creations and removals in it; losing a file's undoes
its writes (a file renamed into place without its fsync comes back empty). ``keep=lambda inode: False`` is the
worst case, ``lambda inode: True`` what a test with an exception instead of a cut would see, and a seeded random
choice the mixtures in between (a real file system writes back in any order).
"""

from __future__ import annotations

import builtins
import io
import os
import random
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Crash(BaseException):
    """The power was cut before this operation."""


class Unmodelled(AssertionError):
    """The code changed a watched file in a way the model does not follow."""


@dataclass(eq=False)
class Inode:
    is_dir: bool
    mode: int
    data: bytes = b""
    entries: dict[str, Inode] = field(default_factory=dict)
    # what is on the card: as of the last fsync
    synced_mode: int = 0
    synced_data: bytes = b""
    synced_entries: dict[str, Inode] = field(default_factory=dict)

    def sync(self) -> None:
        self.synced_mode, self.synced_data, self.synced_entries = self.mode, self.data, dict(self.entries)


def _scan(path: Path) -> Inode:
    info = path.stat()
    if stat.S_ISDIR(info.st_mode):
        inode = Inode(True, stat.S_IMODE(info.st_mode), entries={child.name: _scan(child) for child in path.iterdir()})
    else:
        inode = Inode(False, stat.S_IMODE(info.st_mode), data=path.read_bytes())
    inode.sync()
    return inode


def snapshot(top: Path) -> dict[str, tuple[str, bytes, int]]:
    """Every file and directory below ``top``: relative path -> ("file" or "dir", content, mode)."""
    out = {}
    for path in sorted(top.rglob("*")):
        mode = stat.S_IMODE(path.stat().st_mode)
        out[str(path.relative_to(top))] = ("dir", b"", mode) if path.is_dir() else ("file", path.read_bytes(), mode)
    return out


def outcomes(randoms: int = 2) -> Iterator[tuple[str, Callable[[Inode], bool]]]:
    """The choices of what survives a cut, by name: all unsynced changes lost, all kept, and ``randoms`` seeded
    mixtures (each inode's changes kept or lost by a coin, the same for the same inode)."""
    yield "everything unsynced lost", lambda inode: False
    yield "everything kept", lambda inode: True
    for seed in range(randoms):
        yield f"mixture {seed}", _coin(seed)


def _coin(seed: int) -> Callable[[Inode], bool]:
    rng, chosen = random.Random(seed), {}

    def keep(inode: Inode) -> bool:
        if id(inode) not in chosen:
            chosen[id(inode)] = rng.random() < 0.5
        return chosen[id(inode)]
    return keep


_WATCHED = ("open", "write", "fsync", "close", "replace", "rename", "unlink", "remove", "mkdir", "rmdir", "chmod",
            "fchmod", "chown", "fchown")
_FORBIDDEN_FD = ("fdopen", "ftruncate", "pwrite", "writev", "fdatasync")
_FORBIDDEN_PATH = ("truncate", "link", "symlink")
_CHANGES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class PowerCut:
    """Watch the files below ``tops`` while in a ``with`` block; cut the power before operation ``cut_at`` (counted
    from 1; None: never). ``ops`` lists the operations counted (the last one is where the power was cut)."""

    def __init__(self, *tops: Path, cut_at: int | None = None) -> None:
        self.tops = {os.path.abspath(top): _scan(Path(top)) for top in tops}
        self.cut_at = cut_at
        self.ops: list[str] = []
        self.crashed = False
        self._fds: dict[int, list[Any]] = {}  # fd -> [inode, offset]
        self._real: dict[str, Any] = {}

    # --- where a path is in the model ---------------------------------------------------------------------------

    def _where(self, path: Any) -> tuple[str, list[str]] | None:
        if isinstance(path, int):
            return None
        full = os.path.abspath(os.fspath(path))
        for top in self.tops:
            if full == top or full.startswith(top + os.sep):
                return top, [part for part in full[len(top):].split(os.sep) if part]
        return None

    def _inode(self, top: str, parts: list[str]) -> Inode | None:
        inode: Inode | None = self.tops[top]
        for part in parts:
            inode = inode.entries.get(part) if inode is not None else None
        return inode

    def _parent(self, top: str, parts: list[str]) -> tuple[Inode, str]:
        parent = self._inode(top, parts[:-1])
        assert parent is not None and parent.is_dir, f"the model lost {'/'.join(parts[:-1])}"
        return parent, parts[-1]

    def _step(self, what: str) -> None:
        if self.crashed:
            raise Crash(f"after the cut: {what}")
        self.ops.append(what)
        if self.cut_at is not None and len(self.ops) >= self.cut_at:
            self.crashed = True
            raise Crash(what)

    # --- the watched operations ---------------------------------------------------------------------------------

    def open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        where = self._where(path)
        self._no_dir_fd(dir_fd)
        if where is None:
            return self._real["open"](path, flags, mode, dir_fd=dir_fd)
        if flags & _CHANGES:
            self._step(f"open {'/'.join(where[1])} {'create' if flags & os.O_CREAT else 'write'}")
        fd = self._real["open"](path, flags, mode)
        inode = self._inode(*where)
        if inode is None:
            parent, name = self._parent(*where)
            inode = parent.entries[name] = Inode(False, stat.S_IMODE(os.fstat(fd).st_mode))
            inode.synced_mode = inode.mode
        elif flags & os.O_TRUNC:
            inode.data = b""
        if flags & os.O_APPEND:
            raise Unmodelled("O_APPEND")
        self._fds[fd] = [inode, 0]
        return fd

    def write(self, fd: int, data: Any) -> int:
        if fd not in self._fds:
            return self._real["write"](fd, data)
        self._step("write")
        written = self._real["write"](fd, data)
        inode, offset = self._fds[fd]
        inode.data = inode.data[:offset] + bytes(data)[:written] + inode.data[offset + written:]
        self._fds[fd][1] = offset + written
        return written

    def fsync(self, fd: Any) -> None:
        if not isinstance(fd, int):
            fd = fd.fileno()
        if fd not in self._fds:
            return self._real["fsync"](fd)
        self._step("fsync " + ("directory" if self._fds[fd][0].is_dir else "file"))
        self._fds[fd][0].sync()  # in the model only: the real disk's fsync would only make the tests slow

    def close(self, fd: int) -> None:
        self._fds.pop(fd, None)
        self._real["close"](fd)

    def replace(self, src: Any, dst: Any, **kwargs: Any) -> None:
        self._move("replace", src, dst, kwargs)

    def rename(self, src: Any, dst: Any, **kwargs: Any) -> None:
        self._move("rename", src, dst, kwargs)

    def _move(self, how: str, src: Any, dst: Any, kwargs: dict[str, Any]) -> None:
        source, target = self._where(src), self._where(dst)
        self._no_dir_fd(kwargs.get("src_dir_fd"), kwargs.get("dst_dir_fd"))
        if source is None and target is None:
            return self._real[how](src, dst, **kwargs)
        if source is None or target is None:
            raise Unmodelled(f"{how} across the model's edge: {src} -> {dst}")
        self._step(f"{how} {'/'.join(source[1])} -> {'/'.join(target[1])}")
        self._real[how](src, dst)
        old_parent, old_name = self._parent(*source)
        new_parent, new_name = self._parent(*target)
        new_parent.entries[new_name] = old_parent.entries.pop(old_name)

    def unlink(self, path: Any, *, dir_fd: int | None = None) -> None:
        self._remove("unlink", path, dir_fd)

    def remove(self, path: Any, *, dir_fd: int | None = None) -> None:
        self._remove("remove", path, dir_fd)

    def rmdir(self, path: Any, *, dir_fd: int | None = None) -> None:
        self._remove("rmdir", path, dir_fd)

    def _remove(self, how: str, path: Any, dir_fd: int | None) -> None:
        where = self._where(path)
        self._no_dir_fd(dir_fd)
        if where is None:
            return self._real[how](path, dir_fd=dir_fd)
        self._step(f"{how} {'/'.join(where[1])}")
        self._real[how](path)
        parent, name = self._parent(*where)
        del parent.entries[name]

    def mkdir(self, path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        where = self._where(path)
        self._no_dir_fd(dir_fd)
        if where is None:
            return self._real["mkdir"](path, mode, dir_fd=dir_fd)
        self._step(f"mkdir {'/'.join(where[1])}")
        self._real["mkdir"](path, mode)
        parent, name = self._parent(*where)
        inode = parent.entries[name] = Inode(True, stat.S_IMODE(os.stat(path).st_mode))
        inode.synced_mode = inode.mode

    def chmod(self, path: Any, mode: int, **kwargs: Any) -> None:
        self._metadata("chmod", path, (mode,), kwargs)

    def fchmod(self, fd: int, mode: int) -> None:
        self._metadata("fchmod", fd, (mode,), {})

    def chown(self, path: Any, uid: int, gid: int, **kwargs: Any) -> None:
        self._metadata("chown", path, (uid, gid), kwargs)

    def fchown(self, fd: int, uid: int, gid: int) -> None:
        self._metadata("fchown", fd, (uid, gid), {})

    def _metadata(self, how: str, path: Any, args: tuple[int, ...], kwargs: dict[str, Any]) -> None:
        self._no_dir_fd(kwargs.get("dir_fd"))
        if isinstance(path, int):
            inode = self._fds.get(path, [None])[0]
            name = "an open file"
        else:
            where = self._where(path)
            inode = self._inode(*where) if where is not None else None
            name = "/".join(where[1]) if where is not None else ""
        if inode is None:
            return self._real[how](path, *args, **kwargs)
        self._step(f"{how} {name}")
        self._real[how](path, *args)
        # Ownership is not modelled (the tests run as one user); the mode is, like the content.
        inode.mode = stat.S_IMODE(os.stat(path).st_mode)

    def _no_dir_fd(self, *fds: int | None) -> None:
        if any(fd in self._fds for fd in fds if fd is not None):
            raise Unmodelled("an operation relative to a watched directory's fd")

    def _forbid_fd(self, name: str) -> Callable[..., Any]:
        def guard(fd: Any, *args: Any, **kwargs: Any) -> Any:
            if fd in self._fds:
                raise Unmodelled(f"os.{name} on a watched file")
            return self._real[name](fd, *args, **kwargs)
        return guard

    def _forbid_path(self, name: str) -> Callable[..., Any]:
        def guard(path: Any, *args: Any, **kwargs: Any) -> Any:
            if self._where(path) is not None or any(self._where(arg) for arg in args if isinstance(arg, (str, Path))):
                raise Unmodelled(f"os.{name} on a watched path")
            return self._real[name](path, *args, **kwargs)
        return guard

    def _open_file(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(flag in mode for flag in "wax+") and (self._where(file) is not None or file in self._fds):
            raise Unmodelled(f"open({file!r}, {mode!r}): a write the model cannot follow; use os-level writes")
        return self._real["builtin open"](file, mode, *args, **kwargs)

    # --- installing the watch, and the cut ----------------------------------------------------------------------

    def __enter__(self) -> PowerCut:
        for name in (*_WATCHED, *_FORBIDDEN_FD, *_FORBIDDEN_PATH):
            self._real[name] = getattr(os, name)
        for name in _WATCHED:
            setattr(os, name, getattr(self, name))
        for name in _FORBIDDEN_FD:
            setattr(os, name, self._forbid_fd(name))
        for name in _FORBIDDEN_PATH:
            setattr(os, name, self._forbid_path(name))
        self._real["builtin open"] = builtins.open
        builtins.open = io.open = self._open_file  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        for name in (*_WATCHED, *_FORBIDDEN_FD, *_FORBIDDEN_PATH):
            setattr(os, name, self._real[name])
        builtins.open = io.open = self._real["builtin open"]
        for fd in self._fds:  # left open by the cut
            os.close(fd)
        self._fds.clear()

    def cut(self, keep: Callable[[Inode], bool]) -> None:
        """Make the watched directories what the card holds after the power came back (see the module's
        docstring); ``keep(inode)`` says whether an inode's unsynced changes survived. Call it after the ``with``
        block, as often as wanted: the model is not changed. (Without a ``with`` block: back to the scanned state.)"""
        assert not self._real or os.open is self._real["open"], "cut() after the with block"
        for top, inode in self.tops.items():
            _build(inode, Path(top), keep)


def _build(directory: Inode, path: Path, keep: Callable[[Inode], bool]) -> None:
    """Make the real directory ``path`` what ``directory`` holds, touching only what differs."""
    kept = keep(directory)
    wanted = directory.entries if kept else directory.synced_entries
    for child in list(path.iterdir()):
        inode = wanted.get(child.name)
        if inode is None or inode.is_dir != child.is_dir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    for name, inode in wanted.items():
        child = path / name
        if inode.is_dir:
            if not child.is_dir():
                child.mkdir()
            _build(inode, child, keep)
            continue
        data, mode = (inode.data, inode.mode) if keep(inode) else (inode.synced_data, inode.synced_mode)
        if not child.exists() or child.read_bytes() != data:
            child.write_bytes(data)
        if stat.S_IMODE(child.stat().st_mode) != mode:
            child.chmod(mode)
    mode = directory.mode if kept else directory.synced_mode
    if stat.S_IMODE(path.stat().st_mode) != mode:
        path.chmod(mode)
