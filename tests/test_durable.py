"""intercom.durable, the one writer of everything the door keeps: atomic, with its mode from the start, and on the
card when it returns, checked with the power cut before every step (tests/image/powercut.py)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from intercom import durable

from .image.powercut import Crash, PowerCut, Unmodelled, outcomes


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cuts(top: Path, action: Callable[[], None]) -> Iterator[bool]:
    """Run ``action`` in ``top`` with the power cut before each of its steps, and once after it returned; after
    each cut, for each outcome, yield whether ``action`` had returned (``top`` then is as the card holds it)."""
    start = PowerCut(top)
    with PowerCut(top) as model:
        action()
    assert model.ops, "the model saw no step"
    for cut_at in range(1, len(model.ops) + 2):
        start.cut(lambda inode: True)
        with PowerCut(top, cut_at=cut_at) as model:
            try:
                action()
            except Crash:
                pass
        for _name, keep in outcomes(4):
            model.cut(keep)
            yield not model.crashed


def test_write_atomic_replaces_the_file_with_its_mode_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("old")
    old_umask = os.umask(0o077)  # the umask must not reduce the mode
    try:
        durable.write_atomic(path, "néw\n", 0o640, uid=os.getuid(), gid=os.getgid())
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == "néw\n".encode() and mode(path) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["config"]  # no temporary file left


def test_a_temporary_file_left_by_a_cut_is_replaced(tmp_path: Path) -> None:
    (tmp_path / ".secret.tmp").write_text("half a secr")
    durable.write_atomic(tmp_path / "secret", b"the secret\n")
    assert (tmp_path / "secret").read_bytes() == b"the secret\n" and mode(tmp_path / "secret") == 0o600
    assert not (tmp_path / ".secret.tmp").exists()


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "session.json"
    path.write_text("old")

    def full_card(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "write", full_card)
    with pytest.raises(OSError, match="No space"):
        durable.write_atomic(path, b"new")
    monkeypatch.undo()
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["session.json"]


@pytest.mark.parametrize("existing", [True, False], ids=["over an old file", "in new directories"])
def test_a_cut_leaves_the_old_or_the_new_file_and_after_the_return_the_new_one(tmp_path: Path,
                                                                              existing: bool) -> None:
    path = tmp_path / "etc/intercom/intercom.toml" if not existing else tmp_path / "intercom.toml"
    if existing:
        path.write_bytes(b"old settings\n")
        path.chmod(0o644)
    seen = set()
    for returned in cuts(tmp_path, lambda: durable.write_atomic(path, b"new settings\n", 0o640)):
        now = (path.read_bytes(), mode(path)) if path.exists() else None
        assert now in ((b"old settings\n", 0o644) if existing else None, (b"new settings\n", 0o640))
        assert not returned or now == (b"new settings\n", 0o640)
        seen.add(now)
    assert len(seen) == 2  # both happen: the cuts did reach the disk


def test_made_directories_renames_and_removals_are_on_the_card_when_the_call_returns(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")

    def changes() -> None:
        durable.make_dirs(tmp_path / "x/y/secrets", 0o700)
        durable.rename_durably(tmp_path / "a", tmp_path / "x/a")
        durable.remove_durably(tmp_path / "b")
        durable.remove_durably(tmp_path / "never there")
    for returned in cuts(tmp_path, changes):
        if returned:
            assert (tmp_path / "x/a").read_text() == "a" and not (tmp_path / "a").exists()
            assert not (tmp_path / "b").exists() and mode(tmp_path / "x/y/secrets") == 0o700


def test_make_dirs_sets_the_mode_of_a_directory_that_was_there(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir(mode=0o755)
    durable.make_dirs(tmp_path / "secrets", 0o700, uid=os.getuid(), gid=os.getgid())
    assert mode(tmp_path / "secrets") == 0o700
    durable.make_dirs(tmp_path / "plain/parents")
    assert (tmp_path / "plain/parents").is_dir()


def test_the_model_refuses_a_write_it_cannot_follow(tmp_path: Path) -> None:
    with PowerCut(tmp_path), pytest.raises(Unmodelled):
        (tmp_path / "file").write_text("behind the model's back")
