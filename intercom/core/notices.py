"""What the door tells the room about its calls, in the words the owner reads.

The core decides when a notice goes out (rows of the call table, :mod:`intercom.core.call`) and what it says;
``{time}`` in a text is the local time (HH:MM) when it is sent, filled in by whoever sends it, since the core has
no wall clock.
"""

from __future__ import annotations

from .actions import SendNotice
from .states import Direction

TIME = "{time}"
NO_PICTURE = " (No picture.)"


def missed(room_id: str) -> SendNotice:
    return SendNotice(room_id=room_id, text=f"Missed call from the door at {TIME}: nobody answered.",
                      reply_to_ring=True, no_picture=NO_PICTURE)


def declined(room_id: str) -> SendNotice:
    return SendNotice(room_id=room_id, text=f"Call from the door at {TIME} was declined.", reply_to_ring=True,
                      no_picture=NO_PICTURE)


def no_path(room_id: str, direction: Direction, *, turn: bool) -> SendNotice:
    """A call that was answered but found no network path; why depends on whether the homeserver offers TURN."""
    who = "from the door" if direction is Direction.OUTGOING else "to the door"
    if not turn:
        why = ("your homeserver offers no TURN server, and without one a phone outside the home network often "
               "cannot reach the door (ask its admin to set up TURN, or add STUN servers under [network])")
    else:
        why = "not even through your homeserver's TURN server (is it running, and reachable from both networks?)"
    return SendNotice(room_id=room_id, text=(
        f"Call {who} at {TIME} could not connect: no network path between the door and the phone; {why}."))


def cut_off(room_id: str, direction: Direction) -> SendNotice:
    """A call whose media was lost and not restored."""
    return SendNotice(room_id=room_id, text=(
        f"The call {'from' if direction is Direction.OUTGOING else 'to'} the door was cut off at {TIME}: the "
        "connection to the phone was lost and could not be restored (for example, the phone moved to a network "
        "with no path to the door). Call the door again."))
