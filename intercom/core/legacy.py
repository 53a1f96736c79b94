"""Legacy Matrix calls (``m.call.*``, spec VoIP module, versions 0 and 1) as one call technology of the core.

:class:`LegacyWire` is how a :class:`~intercom.core.call.Call` says things in ``m.call.*`` room events;
:func:`classify` turns a parsed ``m.call.*`` event about a call into the call's
:class:`~intercom.core.call.CallInput` (or says why it is not one). The wire format itself is
:mod:`intercom.core.messages`. A second call technology (MatrixRTC) would bring its own pair of these and reuse
the call table unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import messages
from .actions import PrepareAnswer, PrepareOffer, SendCallEvent
from .call import Call, CallInput, Details
from .states import Direction


@dataclass(frozen=True, slots=True)
class LegacyWire:
    """Builds the ``m.call.*`` events of one door (``party_id``) in a call's room."""

    party_id: str

    def _send(self, call: Call, event_type: str, content: dict[str, Any]) -> SendCallEvent:
        return SendCallEvent(room_id=call.room_id, event_type=event_type, content=content)

    def prepare(self, call: Call, *, offer_sdp: str) -> PrepareOffer | PrepareAnswer:
        if call.direction is Direction.OUTGOING:
            return PrepareOffer(call_id=call.call_id)
        return PrepareAnswer(call_id=call.call_id, offer_sdp=offer_sdp)

    def invite(self, call: Call, *, sdp: str, stream_id: str | None, lifetime_ms: int) -> SendCallEvent:
        return self._send(call, messages.INVITE, messages.invite_content(
            call.call_id, self.party_id, sdp=sdp, stream_id=stream_id, lifetime_ms=lifetime_ms, invitee=call.peer))

    def answer(self, call: Call, *, sdp: str, stream_id: str | None) -> SendCallEvent:
        return self._send(call, messages.ANSWER, messages.answer_content(
            call.call_id, self.party_id, sdp=sdp, stream_id=stream_id))

    def candidates(self, call: Call, candidates: Sequence[Mapping[str, Any]], *, end: bool) -> SendCallEvent:
        return self._send(call, messages.CANDIDATES, messages.candidates_content(
            call.call_id, self.party_id, [dict(c) for c in candidates], end=end))

    def select(self, call: Call, party: str) -> SendCallEvent:
        return self._send(call, messages.SELECT_ANSWER, messages.select_answer_content(
            call.call_id, self.party_id, selected_party_id=party))

    def hangup(self, call: Call, reason: str, *, call_id: str | None = None) -> SendCallEvent:
        return self._send(call, messages.HANGUP, messages.hangup_content(
            call_id or call.call_id, self.party_id, reason=reason))

    def refuse_other(self, call: Call, call_id: str, *, v1: bool, reason: str) -> SendCallEvent:
        """Refuse another invite in the call's room (the owner's rival call in glare)."""
        return refusal(call_id, self.party_id, v1=v1, v0_reason=reason, room_id=call.room_id)

    def refuse(self, call: Call, reason: str) -> SendCallEvent:
        """An invite we never answered: ``m.call.reject`` (v1) or ``m.call.hangup`` with ``reason`` (v0)."""
        return refusal(call.call_id, self.party_id, v1=call.peer_v1, v0_reason=reason, room_id=call.room_id)

    def negotiate_answer(self, call: Call, *, sdp: str, stream_id: str | None, lifetime_ms: int) -> SendCallEvent:
        return self._send(call, messages.NEGOTIATE, messages.negotiate_answer_content(
            call.call_id, self.party_id, sdp=sdp, stream_id=stream_id, lifetime_ms=lifetime_ms))


def refusal(call_id: str, party_id: str, *, v1: bool, v0_reason: str, room_id: str) -> SendCallEvent:
    """Refuse an invite: ``m.call.reject`` for v1; never reject/select_answer/negotiate towards a version 0 peer."""
    if v1:
        return SendCallEvent(room_id=room_id, event_type=messages.REJECT,
                             content=messages.reject_content(call_id, party_id))
    return SendCallEvent(room_id=room_id, event_type=messages.HANGUP,
                         content=messages.hangup_content(call_id, party_id, reason=v0_reason))


def classify(call: Call, msg: messages.Message, *, party_id: str) -> tuple[CallInput, Details] | str:
    """The call's input for ``msg`` (from the call's peer user, in its room), or why it is none. Only who sent it
    and what it says are looked at here; what the call does with it, in its state, is the table's business."""
    from_peer = call.peer_chosen and msg.party_id == call.peer_party
    match msg:
        case messages.Candidates():
            return CallInput.REMOTE_CANDIDATES, Details(remote=tuple((msg.party_id, c) for c in msg.candidates))
        case messages.Answer():
            if call.direction is not Direction.OUTGOING:
                return "answer to a call we did not place"
            return CallInput.ANSWER, Details(sdp=msg.answer_sdp, party=msg.party_id, v1=msg.v1)
        case messages.SelectAnswer():
            if call.direction is not Direction.INCOMING or not from_peer:
                return "select_answer that does not concern our answer"
            if msg.selected_party_id == party_id:
                return "select_answer confirms our answer"
            return CallInput.SELECTED_ELSEWHERE, Details(detail=f"the caller chose party {msg.selected_party_id}")
        case messages.Reject():
            if call.direction is not Direction.OUTGOING:
                return "reject after the call was answered"
            return CallInput.REJECT, Details(party=msg.party_id)
        case messages.Hangup():
            if not call.peer_chosen:
                # Ringing out: a v1 device hanging up only stops that device (matrix-js-sdk ignores it too); the
                # owner declines with m.call.reject. A v0 peer has no reject, so its hangup is the decline.
                if msg.v1:
                    return "hangup from a device that did not answer"
            elif not from_peer:
                return "hangup from a party that is not in this call"
            return CallInput.HANGUP, Details(reason=msg.reason)
        case messages.Negotiate():
            if not call.peer_v1:
                return "negotiate outside a version 1 call in progress"
            if not from_peer:
                return "negotiate from a party that is not in this call"
            if msg.description_type != "offer":
                return "negotiate answer, but we sent no offer"
            return CallInput.NEGOTIATE, Details(sdp=msg.sdp)
        case messages.OtherCallEvent():
            return f"{msg.event_type} does not change the call"
        case _:
            return f"{type(msg).__name__} does not change the call"
