"""The pictures kept on the device (SnapshotStore) and posting them (Snapshots) when the disk fails."""

from __future__ import annotations

import asyncio
import errno
import logging
import stat
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from intercom import snapshots
from intercom.snapshots import Snapshots, SnapshotStore

# Wall-clock times of pictures: a Pi without a clock boots in 1970 (or at its last saved time) until NTP.
JAN_2030, JAN_2025, JAN_1970 = 1893456000.0, 1735689600.0, 3600.0
WRITE_ATOMIC = snapshots.write_atomic


def names(store: SnapshotStore) -> list[str]:
    return [p.name for p in store.pictures()]


def jpeg(tag: int, size: int = 100) -> bytes:
    return bytes([tag % 256]) * size


# --- the store ------------------------------------------------------------------------------------------------------


def test_order_and_pruning_follow_the_sequence_not_the_clock(tmp_path):
    """The clock goes backwards between pictures (a boot without RTC, then NTP, then a boot again): the pictures
    taken last are kept, whatever time their names show."""
    store = SnapshotStore(tmp_path, keep=3)
    for tag, taken_at in enumerate([JAN_2025, JAN_2030, JAN_1970, JAN_2025 + 60, JAN_1970 + 60]):
        store.save(jpeg(tag), taken_at, "ring")
    kept = store.pictures()
    assert [p.read_bytes()[0] for p in kept] == [2, 3, 4]  # the last three saved, oldest first
    assert [int(p.name.split("-")[0]) for p in kept] == [3, 4, 5]
    assert time.strftime("-%Y%m%d-", time.localtime(JAN_1970)) in kept[0].name  # the time stays, for people


def test_sequence_continues_from_the_highest_on_disk_after_a_restart(tmp_path):
    first = SnapshotStore(tmp_path, keep=3)
    for tag in range(3):
        first.save(jpeg(tag), JAN_2030, "ring")
    again = SnapshotStore(tmp_path, keep=3)  # a restart, the clock now far behind
    newest = again.save(jpeg(9), JAN_1970, "request")
    assert newest is not None and newest.name.startswith("0000000004-") and newest.name.endswith("-request.jpg")
    assert [p.read_bytes()[0] for p in again.pictures()] == [1, 2, 9]


def test_pictures_of_the_older_layout_count_as_oldest(tmp_path):
    """Names of the earlier layout start with the time; they are pruned before any numbered picture."""
    (tmp_path / "20991231-235959-999-ring.jpg").write_bytes(jpeg(7))
    store = SnapshotStore(tmp_path, keep=2)
    store.save(jpeg(1), JAN_1970, "ring")
    assert names(store)[0] == "20991231-235959-999-ring.jpg"
    store.save(jpeg(2), JAN_1970, "ring")
    assert [p.read_bytes()[0] for p in store.pictures()] == [1, 2]


def test_byte_bound_holds_after_every_picture(tmp_path):
    """The oldest go first until the newest fits; the newest is always kept."""
    store = SnapshotStore(tmp_path, keep=100, max_bytes=2500)
    steps = [(1000, [1000]), (1000, [1000, 1000]), (1000, [1000, 1000]), (400, [1000, 1000, 400]),
             (2400, [2400]), (100, [2400, 100]), (100, [100, 100])]
    for tag, (size, kept) in enumerate(steps):
        store.save(jpeg(tag, size), JAN_2025, "ring")
        assert [p.stat().st_size for p in store.pictures()] == kept
        assert store.total_bytes() <= 2500
        assert store.pictures()[-1].read_bytes() == jpeg(tag, size)


def test_count_bound_holds_too(tmp_path):
    store = SnapshotStore(tmp_path, keep=2, max_bytes=10_000)
    for tag in range(5):
        store.save(jpeg(tag), JAN_2025, "ring")
        assert len(store.pictures()) <= 2
    assert [p.read_bytes()[0] for p in store.pictures()] == [3, 4]


def test_picture_larger_than_the_bound_is_not_kept_and_removes_nothing(tmp_path):
    store = SnapshotStore(tmp_path, keep=10, max_bytes=1000)
    store.save(jpeg(1, 600), JAN_2025, "ring")
    assert store.save(jpeg(2, 1001), JAN_2025, "ring") is None
    assert [p.read_bytes() for p in store.pictures()] == [jpeg(1, 600)]


def test_pictures_are_private_and_no_temporary_file_stays(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots", keep=5)
    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / ".0000000001-x-ring.jpg.tmp").write_bytes(b"cut short by a power cut")
    path = store.save(jpeg(1), JAN_2025, "ring")
    assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == [path.name]


def test_a_store_that_keeps_none_writes_nothing(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots", keep=0)
    assert store.save(jpeg(1), JAN_2025, "ring") is None
    assert not (tmp_path / "snapshots").exists()


def test_a_store_whose_directory_cannot_exist_does_not_fail_until_it_saves(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    store = SnapshotStore(tmp_path / "file" / "snapshots", keep=5)  # the door still starts
    with pytest.raises(OSError):
        store.save(jpeg(1), JAN_2025, "ring")


# --- posting when the disk fails --------------------------------------------------------------------------------------


class FakeMessenger:
    def __init__(self) -> None:
        self.uploads: list[bytes] = []
        self.events: list[dict] = []

    async def upload(self, data, content_type, filename, *, encrypt):
        self.uploads.append(data)
        return f"mxc://example.org/{len(self.uploads)}", None

    async def send_event(self, room_id, event_type, content):
        self.events.append(content)
        return f"$event{len(self.events)}"

    async def send_notice(self, room_id, text, *, reply_to=None):
        return True

    def room_is_encrypted(self, room_id):
        return False


class FakeCamera:
    def __init__(self, size: int = 100) -> None:
        self.size, self.taken = size, 0

    async def snapshot(self):
        self.taken += 1
        return SimpleNamespace(jpeg=jpeg(self.taken, self.size), width=640, height=480, thumbnail=b"thumb",
                               thumbnail_width=160, thumbnail_height=120, taken_at=JAN_2025)


def failing_writes(monkeypatch, error: OSError | None) -> None:
    """Make every picture write fail with ``error`` (``None``: write as usual again)."""
    def write(path, data, mode=0o600, **kwargs):
        if error is not None:
            raise error
        return WRITE_ATOMIC(path, data, mode, **kwargs)

    monkeypatch.setattr(snapshots, "write_atomic", write)


def post_pictures(pictures: Snapshots, count: int, reason: str = "ring") -> list[str | None]:
    async def main():
        return [await pictures.post("!room:example.org", reason) for _ in range(count)]

    return asyncio.run(main())


def kept_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "picture" in r.getMessage()]


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   OSError(errno.EROFS, "Read-only file system")])
def test_a_full_or_read_only_card_still_posts_every_picture_and_logs_once(tmp_path, monkeypatch, caplog, error):
    camera, matrix = FakeCamera(), FakeMessenger()
    store = SnapshotStore(tmp_path / "snapshots", keep=10)
    pictures = Snapshots(camera, matrix, store, owner="@alice:example.org")
    failing_writes(monkeypatch, error)
    with caplog.at_level(logging.INFO, logger="intercom"):
        assert post_pictures(pictures, 3) == ["$event1", "$event2", "$event3"]
    assert [e["msgtype"] for e in matrix.events] == ["m.image"] * 3
    assert matrix.uploads[::2] == [jpeg(1), jpeg(2), jpeg(3)]  # from memory, each picture its own
    assert store.pictures() == []
    (warning,) = kept_warnings(caplog)
    assert "could not keep the picture" in warning and error.strerror in warning


def test_saving_that_works_again_is_logged_and_a_new_failure_is_logged_again(tmp_path, monkeypatch, caplog):
    camera, matrix = FakeCamera(), FakeMessenger()
    store = SnapshotStore(tmp_path / "snapshots", keep=10)
    pictures = Snapshots(camera, matrix, store, owner="@alice:example.org")
    with caplog.at_level(logging.INFO, logger="intercom"):
        failing_writes(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
        post_pictures(pictures, 2)
        failing_writes(monkeypatch, OSError(errno.EIO, "Input/output error"))  # another kind: logged too
        post_pictures(pictures, 2)
        failing_writes(monkeypatch, None)
        post_pictures(pictures, 1)
        failing_writes(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
        post_pictures(pictures, 1)
    warnings = kept_warnings(caplog)
    assert [("No space" in w, "Input/output" in w) for w in warnings] == [(True, False), (False, True), (True, False)]
    assert any("kept on the device again" in r.getMessage() for r in caplog.records)
    assert len(matrix.events) == 6
    assert [p.read_bytes() for p in store.pictures()] == [jpeg(5)]


def test_a_store_directory_that_cannot_be_made_still_posts(tmp_path, caplog):
    (tmp_path / "file").write_bytes(b"")
    matrix = FakeMessenger()
    pictures = Snapshots(FakeCamera(), matrix, SnapshotStore(tmp_path / "file" / "snapshots", keep=10),
                         owner="@alice:example.org")
    with caplog.at_level(logging.INFO, logger="intercom"):
        assert post_pictures(pictures, 2, "request") == ["$event1", "$event2"]
    assert len(kept_warnings(caplog)) == 1


def test_a_picture_larger_than_the_bound_is_posted_not_kept(tmp_path, caplog):
    matrix = FakeMessenger()
    store = SnapshotStore(tmp_path / "snapshots", keep=10, max_bytes=1000)
    pictures = Snapshots(FakeCamera(size=2000), matrix, store, owner="@alice:example.org")
    with caplog.at_level(logging.INFO, logger="intercom"):
        assert post_pictures(pictures, 2) == ["$event1", "$event2"]
    assert store.pictures() == []
    (warning,) = kept_warnings(caplog)
    assert "snapshots_max_mb" in warning


def test_pictures_are_kept_when_the_disk_works(tmp_path):
    matrix = FakeMessenger()
    store = SnapshotStore(tmp_path / "snapshots", keep=2)
    pictures = Snapshots(FakeCamera(), matrix, store, owner="@alice:example.org")
    post_pictures(pictures, 3)
    assert [p.read_bytes() for p in store.pictures()] == [jpeg(2), jpeg(3)]
    assert isinstance(store.pictures()[0], Path)


def test_a_ring_group_posts_one_still_to_every_room_kept_once(tmp_path):
    camera, matrix = FakeCamera(), FakeMessenger()
    store = SnapshotStore(tmp_path / "snapshots", keep=10)
    pictures = Snapshots(camera, matrix, store, owner="@alice:example.org")

    async def main():
        return await asyncio.gather(
            pictures.post("!alice:example.org", "ring", label="Flat 2", mention="@alice:example.org", ring_id="z1"),
            pictures.post("!bob:example.org", "ring", label="Flat 2", mention="@bob:example.org", ring_id="z1"))

    assert asyncio.run(main()) == ["$event1", "$event2"]
    assert camera.taken == 1 and len(store.pictures()) == 1  # one still, kept once
    assert [e["m.mentions"]["user_ids"] for e in matrix.events] == [["@alice:example.org"], ["@bob:example.org"]]
    assert all(e["body"] == "Someone is at the door (Flat 2)" for e in matrix.events)
    post_pictures(pictures, 1)  # another ring (no ring ID): a new still
    assert camera.taken == 2
