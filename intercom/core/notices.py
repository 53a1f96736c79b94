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


def _button(label: str) -> str:
    """Which button, in a notice: " (Flat 2)"; nothing for the one button of a house."""
    return f" ({label})" if label else ""


def missed(room_id: str, label: str = "") -> SendNotice:
    return SendNotice(room_id=room_id, text=f"Missed call from the door{_button(label)} at {TIME}: nobody answered.",
                      reply_to_ring=True, no_picture=NO_PICTURE)


def declined(room_id: str, label: str = "") -> SendNotice:
    return SendNotice(room_id=room_id, text=f"Call from the door{_button(label)} at {TIME} was declined.",
                      reply_to_ring=True, no_picture=NO_PICTURE)


def answered_by(room_id: str, who: str, label: str = "") -> SendNotice:
    """The ring rang several residents and another one took it: this one's ringing stopped."""
    return SendNotice(room_id=room_id, text=f"The ring at the door{_button(label)} at {TIME} was answered by {who}.",
                      reply_to_ring=True, no_picture=NO_PICTURE)


def quiet(room_id: str, label: str = "") -> SendNotice:
    """A ring during the resident's quiet hours: the picture, no call."""
    return SendNotice(room_id=room_id, text=(
        f"Someone rang at the door{_button(label)} at {TIME}, during your quiet hours: the door did not call you."),
        reply_to_ring=True, no_picture=NO_PICTURE)


def busy_ring(room_id: str, label: str = "") -> SendNotice:
    """A ring while the door was in another call (one camera, one microphone): the picture, no call."""
    return SendNotice(room_id=room_id, text=(
        f"Someone rang at the door{_button(label)} at {TIME} while the door was busy with another call: it could "
        "not call you."), reply_to_ring=True, no_picture=NO_PICTURE)


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


def _how_to_trust(device_id: str) -> str:
    return (f"If it is yours, verify it from one of your other sessions, send \"!trust {device_id}\" here from a "
            f"session the door trusts, or run \"intercom trust {device_id}\" on the door.")


def _device(device_id: str, name: str) -> str:
    return f"{name} ({device_id})" if name else device_id


def untrusted_device(room_id: str, device_id: str, name: str) -> SendNotice:
    """A new device of the owner's account appeared that the door does not trust (sent once per device)."""
    return SendNotice(room_id=room_id, text=(
        f"A new session of your account appeared: {_device(device_id, name)}. The door does not trust it yet: it "
        "does not answer its calls, obey its commands or share its messages with it. " + _how_to_trust(device_id)))


def call_refused_untrusted(room_id: str, device_id: str, name: str, why: str) -> SendNotice:
    """A call (or command) from the owner's account that the door refused because of the device it came from."""
    return SendNotice(room_id=room_id, text=(
        f"The door refused a call or command at {TIME} from {_device(device_id, name) if device_id else 'a session'}"
        f" of your account: {why}. " + (_how_to_trust(device_id) if device_id else "")).rstrip())


def identity_changed(room_id: str, problem: str) -> SendNotice:
    return SendNotice(room_id=room_id, text=(
        f"Security warning: {problem}. Until this is confirmed on the door itself (run \"intercom trust "
        "--identity\" there, for example over ssh), the door answers no call and opens for nobody. If you did not "
        "reset your encryption keys or sign in anew, someone else may have access to your account: change your "
        "password."))


def identity_pending(room_id: str) -> SendNotice:
    return SendNotice(room_id=room_id, text=(
        "You set up cross-signing. The door keeps trusting the sessions it knew; to have it trust every session "
        "you verify, run \"intercom trust --identity\" on the door."))


def trusted(room_id: str, device_id: str, name: str, by: str) -> SendNotice:
    return SendNotice(room_id=room_id, text=f"The door now trusts {_device(device_id, name)} (confirmed {by}).")


def unencrypted_command(room_id: str, word: str) -> SendNotice:
    return SendNotice(room_id=room_id, text=(
        f"Not done: \"{word}\" arrived unencrypted in this encrypted room. The door acts only on encrypted "
        "messages from your sessions it trusts."))


def rtc_not_joined(room_id: str, why: str) -> SendNotice:
    """A resident started an Element Call (MatrixRTC) in their room and the door did not join it."""
    return SendNotice(room_id=room_id, text=f"The door did not join your call at {TIME}: {why}.")
