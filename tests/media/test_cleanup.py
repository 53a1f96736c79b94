"""Twenty calls with full media set up and torn down in one process leave no thread, file or socket behind."""

import asyncio
import gc
import os
import threading

from intercom.media import MediaEngine
from intercom_dev.measure import pad, tone
from intercom_dev.media import FrameLog, StateLog, connect, loopback_settings, write_raw

CALLS = 20


def _open_fds():
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the fd listdir itself used
            pass
    return fds


def _media_threads():
    """Threads of the media layer and aiortc (the loop's executor pool is the loop's, not a call's)."""
    return [t.name for t in threading.enumerate() if not t.name.startswith("asyncio_")]


def test_twenty_calls_leave_nothing_behind(tmp_path):
    write_raw(tmp_path / "door_in.raw", pad(tone(1000, 1.0), 0, 1))
    write_raw(tmp_path / "phone_in.raw", pad(tone(500, 1.0), 0, 1))
    threads_before = _media_threads()
    fds_before = _open_fds()

    async def scenario():
        door_log, phone_log = StateLog(), StateLog()
        door = MediaEngine(loopback_settings(tmp_path / "door_in.raw", tmp_path / "door_out.raw", camera="synthetic"),
                           door_log)
        frames = FrameLog()
        phone = MediaEngine(loopback_settings(tmp_path / "phone_in.raw", tmp_path / "phone_out.raw"), phone_log,
                            on_remote_video=frames)
        during = []
        for i in range(CALLS):
            call_id = f"call-{i}"
            # Alternate who calls, so both the offer and the answer paths are torn down.
            if i % 2:
                await connect(phone, phone_log, door, door_log, call_id)
            else:
                await connect(door, door_log, phone, phone_log, call_id)
            seen = len(frames.frames)
            await frames.wait_for(lambda f: len(f) >= seen + 3)  # media really flowed
            during.append(len(_media_threads()))
            await frames.aclose()
            await door.close(call_id)
            await phone.close(call_id)
            assert (call_id, "closed") in door_log.events and (call_id, "closed") in phone_log.events
        left_in_loop = _media_threads()
        return during, left_in_loop

    during, left_in_loop = asyncio.run(scenario())
    gc.collect()
    # Media was running with its threads (ALSA both ways, camera, decoders) in every call ...
    assert min(during) >= len(threads_before) + 4
    # ... and none of them outlived its call.
    assert sorted(left_in_loop) == sorted(threads_before)
    assert sorted(_media_threads()) == sorted(threads_before)
    leaked = {fd: target for fd, target in _open_fds().items() if fds_before.get(fd) != target}
    assert leaked == {}, leaked
    assert not [t for t in leaked.values() if t.startswith("socket:")]


def test_the_gc_freeze_of_a_call_is_undone_when_it_closes(tmp_path):
    """A call freezes the collector's view (shorter pauses while audio plays); once the last call is closed the
    freeze is undone, or every call's reference cycles would stay for good (a steady leak on a door)."""
    write_raw(tmp_path / "door_in.raw", pad(tone(1000, 1.0), 0, 1))
    write_raw(tmp_path / "phone_in.raw", pad(tone(500, 1.0), 0, 1))
    gc.unfreeze()

    async def scenario():
        door_log, phone_log = StateLog(), StateLog()
        door = MediaEngine(loopback_settings(tmp_path / "door_in.raw", tmp_path / "door_out.raw", camera="synthetic"),
                           door_log)
        frames = FrameLog()
        phone = MediaEngine(loopback_settings(tmp_path / "phone_in.raw", tmp_path / "phone_out.raw"), phone_log,
                            on_remote_video=frames, freeze_gc=False)
        await connect(door, door_log, phone, phone_log, "call")
        await frames.wait_for(lambda f: len(f) >= 3)
        for _ in range(100):  # the speaker starts (and freezes) just after "connected"
            if gc.get_freeze_count():
                break
            await asyncio.sleep(0.02)
        during = gc.get_freeze_count()
        await frames.aclose()
        await phone.close("call")
        await door.close("call")
        return during, gc.get_freeze_count()

    during, after = asyncio.run(scenario())
    assert during > 0, "the call never froze the collector: this test checks nothing"
    assert after == 0
