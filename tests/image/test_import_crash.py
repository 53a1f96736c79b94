"""The boot-time import of intercom.toml with the power cut at every step (tests/image/powercut.py models what the
SD card keeps): the door always has its old settings or the new ones, never a torn file and never none; the card
keeps its intercom.toml until the new settings are on the door; and the next boot finishes the job."""

from __future__ import annotations

import inspect
import io
import os
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from intercom import durable
from intercom.service import bootconfig
from intercom.service.bootconfig import CARD_NAME, CONFIG_PATH, ERRORS_MARKER, ERRORS_NAME, Target, import_boot_config

from .powercut import Crash, PowerCut, outcomes, snapshot
from .test_bootconfig import BROKEN, GOOD, MATRIX_PASSWORD

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx me@laptop"
FIRST = GOOD.replace('hostname = "front-door"', f'hostname = "front-door"\nssh_authorized_keys = ["{SSH_KEY}"]')
# A new file over FIRST: another credential (the old password must go, but only once the config names the token),
# another Wi-Fi password, host name and timeout.
SECOND = (FIRST.replace(f'password = "{MATRIX_PASSWORD}"', 'access_token = "syt_new_token_42"')
          .replace('password = "wifi secret 123"', 'password = "another wifi 456"')
          .replace('hostname = "front-door"', 'hostname = "back-door"')
          .replace("ring_timeout = 45", "ring_timeout = 50"))
# The same credential with a new value.
NEW_PASSWORD = FIRST.replace(MATRIX_PASSWORD, "a new door password 7").replace("ring_timeout = 45", "ring_timeout = 30")

Tree = dict[str, tuple[str, bytes, int]]


def door_in(base: Path) -> tuple[Path, Target]:
    """The card and the door's root file system below ``base``."""
    return base / "card", Target(root=base / "root", service_uid=os.getuid(), service_gid=os.getgid(),
                                 root_uid=os.getuid(), root_gid=os.getgid())


def door(base: Path) -> tuple[Path, Target]:
    """A fresh door below ``base``."""
    card, target = door_in(base)
    card.mkdir(parents=True)
    (target.root / "etc").mkdir(parents=True)
    (target.root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tdoorbell\n::1\tlocalhost\n")
    (target.root / "etc/hostname").write_text("doorbell\n")
    return card, target


def run(card: Path, target: Target) -> str:
    return import_boot_config(card, target, io.StringIO()).status


def first_import(base: Path) -> None:
    card, _ = door(base)
    (card / CARD_NAME).write_text(FIRST)


def reimport(new_text: str) -> Callable[[Path], None]:
    def setup(base: Path) -> None:
        card, target = door(base)
        (card / CARD_NAME).write_text(FIRST)
        assert run(card, target) == "applied"
        (card / CARD_NAME).write_text(BROKEN)  # a broken file was rejected once: errors file and marker are there
        assert run(card, target) == "rejected"
        (card / CARD_NAME).write_text(new_text)
    return setup


def rejected_over_previous(base: Path) -> None:
    card, target = door(base)
    (card / CARD_NAME).write_text(FIRST)
    assert run(card, target) == "applied"
    (card / CARD_NAME).write_text(BROKEN)


def is_temporary(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.startswith(".") and name.endswith(".tmp")


def secrets_named(tree: Tree) -> list[str]:
    """The secret files the door's config in ``tree`` names (as paths in the tree)."""
    matrix = tomllib.loads(tree[f"root/{CONFIG_PATH}"][1].decode())["matrix"]
    return [f"root{matrix[key]}" for key in ("password_file", "access_token_file") if key in matrix]


def violations_after_cut(now: Tree, old: Tree, new: Tree) -> list[str]:
    """What is wrong with the door and the card ``now``, after a cut, between ``old`` (before the import) and
    ``new`` (after it)."""
    found = []
    for path in sorted(set(old) | set(new) | set(now)):
        if now.get(path) in (old.get(path), new.get(path)):
            continue
        if path not in old and path not in new and is_temporary(path):
            continue  # a temporary file of a write the cut stopped: never read, replaced by the next import
        state = "missing" if path not in now else f"{now[path][1][:40]!r} (mode {now[path][2]:o})"
        found.append(f"{path} is neither as before nor as after the import: {state}")
    card_file = f"card/{CARD_NAME}"
    if card_file not in now and now != new:
        differ = sorted(path for path in set(now) | set(new) if now.get(path) != new.get(path))
        found.append(f"the card's {CARD_NAME} is gone, but the door is not complete: {differ}")
    # The new config comes after the secrets it names; the old one never loses its secret files. (The old config
    # with a new secret of the same name happens between the two writes: the card's file is still there then, and
    # the next boot, before the intercom starts, finishes; see explore.)
    config = f"root/{CONFIG_PATH}"
    if config in now and now[config] == new.get(config):
        found += [f"the new config names {secret}, which is not the new one yet" for secret in secrets_named(new)
                  if now.get(secret) != new.get(secret)]
    elif config in now and now[config] == old.get(config):
        found += [f"the old config names {secret}, which is gone" for secret in secrets_named(old) if secret not in now]
    return found


def explore(tmp_path: Path, setup: Callable[[Path], None], status: str, choices: int = 2) -> list[str]:
    """Cut the power before every operation of the import (and once after it returned), rebuild the card and the
    root as each outcome leaves them (with ``choices`` random mixtures), check them, then import again (the next
    boot) and check that it finished."""
    base = tmp_path / "base"
    setup(base)
    old = snapshot(base)

    reference = tmp_path / "reference"
    shutil.copytree(base, reference)
    card, target = door_in(reference)
    with PowerCut(card, target.root) as model:
        assert run(card, target) == status
    new = snapshot(reference)
    model.cut(lambda inode: True)
    assert snapshot(reference) == new, "the model missed a change the import made"
    steps = len(model.ops)
    assert steps > 10, model.ops  # the model sees the import's writes

    found = []
    work = tmp_path / "work"
    shutil.copytree(base, work)
    card, target = door_in(work)
    before = PowerCut(card, target.root)
    for cut_at in range(1, steps + 2):  # steps + 1: the power goes right after the import returned
        before.cut(lambda inode: True)  # back to the state before the import
        with PowerCut(card, target.root, cut_at=cut_at) as model:
            try:
                run(card, target)
            except Crash:
                pass
        where = f"cut before {model.ops[-1]!r} (step {cut_at})" if model.crashed else "cut after the import"
        for name, keep in outcomes(choices):
            model.cut(keep)
            found += [f"{where}, {name}: {problem}" for problem in violations_after_cut(snapshot(work), old, new)]
            with PowerCut(card, target.root):  # watched, so that the next boot's writes are modelled too
                rerun = run(card, target) if (card / CARD_NAME).exists() else "absent"
            if snapshot(work) != new or rerun not in (status, "absent"):
                found.append(f"{where}, {name}: the next boot did not finish the import ({rerun})")
    return found


@pytest.mark.parametrize("setup", [first_import, reimport(SECOND), reimport(NEW_PASSWORD)],
                         ids=["first import", "new credential, Wi-Fi, host name", "new password"])
def test_a_cut_at_any_step_leaves_the_old_or_the_new_config_and_the_next_boot_finishes(
        tmp_path: Path, setup: Callable[[Path], None]) -> None:
    assert explore(tmp_path, setup, "applied") == []


def test_a_cut_while_rejecting_leaves_the_door_untouched(tmp_path: Path) -> None:
    assert explore(tmp_path, rejected_over_previous, "rejected") == []

    # Every file was its old or its new self at every cut, and for the door's settings the new is the old: a
    # rejection writes only the errors file on the card and the marker for the LEDs.
    def settings(tree: Tree) -> Tree:
        return {path: value for path, value in tree.items() if path.startswith("root/") and "/run" not in path}
    before, after = snapshot(tmp_path / "base"), snapshot(tmp_path / "reference")
    assert settings(after) == settings(before) and f"card/{ERRORS_NAME}" in after and f"root/{ERRORS_MARKER}" in after


def mutant(monkeypatch: pytest.MonkeyPatch, line: str) -> None:
    """Run the import with ``durable.write_atomic`` without ``line`` (a mutant of the writer)."""
    source = inspect.getsource(durable.write_atomic)
    assert source.count(line + "\n") == 1, line
    namespace = dict(vars(durable))
    exec(compile(source.replace(line + "\n", ""), durable.__file__, "exec"), namespace)
    monkeypatch.setattr(durable, "write_atomic", namespace["write_atomic"])
    monkeypatch.setattr(bootconfig, "write_atomic", namespace["write_atomic"])


def test_the_test_fails_without_the_directory_fsync_after_the_rename(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    mutant(monkeypatch, "    fsync_dir(path.parent)")
    found = explore(tmp_path, first_import, "applied", choices=0)
    assert any("the card's intercom.toml is gone, but the door is not complete" in problem for problem in found)


def test_the_test_fails_without_the_file_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mutant(monkeypatch, "        os.fsync(fd)")
    found = explore(tmp_path, first_import, "applied", choices=0)
    assert any(f"root/{CONFIG_PATH} is neither as before nor as after the import: b''" in problem for problem in found)
