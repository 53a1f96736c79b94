"""The door calls the owner: press, invite, first answer wins, select_answer, connected, hangup, reject, v0."""

import pytest

from intercom.core import (
    AddRemoteCandidates,
    ApplyAnswer,
    ButtonPressed,
    CallEnded,
    CallState,
    CloseMedia,
    HangupRequested,
    IceCandidate,
    Ignored,
    LedState,
    LocalOfferReady,
    MediaFailed,
    Outcome,
    PrepareOffer,
    PressFeedback,
    SetLeds,
)

from .helpers import (
    DOOR_PARTY, END, OFFER_SDP, OWNER, ROOM, STRANGER, answer, cand, candidates, connect, hangup, make_core, of,
    place_call, received, reject, sends,
)


def test_press_prepares_media_and_lights_calling_at_once():
    core = make_core()
    actions = core.handle(ButtonPressed(), 1.0)
    assert of(actions, PressFeedback) == [PressFeedback(accepted=True)]
    (prep,) = of(actions, PrepareOffer)
    assert prep.call_id.startswith("z")
    assert of(actions, SetLeds) == [SetLeds(state=LedState.CALLING)]
    assert sends(actions) == []  # nothing goes out before the offer exists
    assert core.state is CallState.PREPARING


def test_offer_ready_sends_invite_then_end_of_candidates():
    core = make_core()
    call_id, actions = place_call(core)
    invite, eoc = sends(actions)
    assert invite.event_type == "m.call.invite" and invite.room_id == ROOM
    assert invite.content["version"] == "1"
    assert invite.content["party_id"] == DOOR_PARTY
    assert invite.content["invitee"] == OWNER
    assert invite.content["lifetime"] == 90000
    assert invite.content["offer"] == {"type": "offer", "sdp": OFFER_SDP}
    assert list(invite.content["sdp_stream_metadata"]) == ["stream0"]
    assert eoc.event_type == "m.call.candidates"
    assert eoc.content["candidates"] == [{"candidate": ""}]
    assert core.state is CallState.RINGING


def test_first_answer_wins_and_is_selected():
    core = make_core()
    call_id, _ = place_call(core)
    actions = core.handle(answer(call_id, party="PHONE_A"), 2.0)
    assert of(actions, ApplyAnswer)[0].call_id == call_id
    (select,) = sends(actions, "m.call.select_answer")
    assert select.content["selected_party_id"] == "PHONE_A"
    assert core.state is CallState.CONNECTING

    later = core.handle(answer(call_id, party="PHONE_B"), 2.1)
    assert sends(later) == [] and of(later, ApplyAnswer) == []
    assert "already chosen" in of(later, Ignored)[0].reason


def test_candidates_before_the_answer_are_buffered_by_party():
    core = make_core()
    call_id, _ = place_call(core)
    assert of(core.handle(candidates(call_id, cand(1), party="PHONE_A"), 1.5), AddRemoteCandidates) == []
    core.handle(candidates(call_id, cand(2), party="PHONE_B"), 1.6)
    actions = core.handle(answer(call_id, party="PHONE_A"), 2.0)
    (add,) = of(actions, AddRemoteCandidates)
    assert [c.candidate for c in add.candidates] == [cand(1)["candidate"]]
    assert actions.index(add) > actions.index(of(actions, ApplyAnswer)[0])  # never before the answer is applied


def test_candidates_after_answer_pass_on_until_end_of_candidates():
    core = make_core()
    call_id, _ = place_call(core)
    core.handle(answer(call_id), 2.0)
    (add,) = of(core.handle(candidates(call_id, cand(1), END), 2.1), AddRemoteCandidates)
    assert add.candidates[-1] == IceCandidate(candidate="")
    assert of(core.handle(candidates(call_id, cand(3)), 2.2), AddRemoteCandidates) == []


def test_connected_then_owner_hangs_up():
    core = make_core()
    call_id, _ = place_call(core)
    core.handle(answer(call_id), 2.0)
    assert of(connect(core, call_id, 2.5), SetLeds) == []  # already showing in-call since the answer
    assert core.state is CallState.CONNECTED
    actions = core.handle(hangup(call_id), 32.5)
    assert sends(actions) == []
    assert of(actions, CloseMedia) == [CloseMedia(call_id=call_id)]
    (ended,) = of(actions, CallEnded)
    assert ended.summary.outcome is Outcome.COMPLETED and ended.summary.duration == pytest.approx(30.0)
    assert of(actions, SetLeds) == [SetLeds(state=LedState.ENDED)]
    assert core.state is CallState.IDLE


def test_hangup_from_another_party_does_not_end_the_call():
    core = make_core()
    call_id, _ = place_call(core)
    core.handle(answer(call_id, party="PHONE_A"), 2.0)
    actions = core.handle(hangup(call_id, party="PHONE_B"), 2.1)
    assert of(actions, CloseMedia) == [] and core.state is CallState.CONNECTING


def test_door_hangs_up_on_local_request():
    core = make_core()
    call_id, _ = place_call(core)
    core.handle(answer(call_id), 2.0)
    connect(core, call_id, 2.5)
    (h,) = sends(core.handle(HangupRequested(), 5.0), "m.call.hangup")
    assert h.content["reason"] == "user_hangup" and h.content["call_id"] == call_id


def test_reject_is_declined_and_selected():
    core = make_core()
    call_id, _ = place_call(core)
    actions = core.handle(reject(call_id, party="PHONE_A"), 3.0)
    (select,) = sends(actions, "m.call.select_answer")
    assert select.content["selected_party_id"] == "PHONE_A"
    assert sends(actions, "m.call.hangup") == []
    assert of(actions, CallEnded)[0].summary.outcome is Outcome.DECLINED
    assert of(actions, SetLeds) == [SetLeds(state=LedState.DECLINED)]


def test_reject_after_an_answer_is_ignored():
    core = make_core()
    call_id, _ = place_call(core)
    core.handle(answer(call_id, party="PHONE_A"), 2.0)
    actions = core.handle(reject(call_id, party="PHONE_B"), 2.1)
    assert of(actions, CallEnded) == [] and core.state is CallState.CONNECTING


def test_v1_hangup_while_ringing_does_not_stop_the_ring():
    """A v1 device that hangs up before answering only stops itself (as in matrix-js-sdk); reject declines."""
    core = make_core()
    call_id, _ = place_call(core)
    assert of(core.handle(hangup(call_id), 3.0), CallEnded) == []
    assert core.state is CallState.RINGING


def test_v0_answer_gets_no_select_answer():
    core = make_core()
    call_id, _ = place_call(core)
    actions = core.handle(answer(call_id, party=None, version=0), 2.0)
    assert of(actions, ApplyAnswer) and sends(actions) == []


def test_v0_hangup_while_ringing_declines():
    core = make_core()
    call_id, _ = place_call(core)
    actions = core.handle(hangup(call_id, party=None, version=0), 3.0)
    assert of(actions, CallEnded)[0].summary.outcome is Outcome.DECLINED
    assert sends(actions) == []  # no select_answer towards a v0 peer


def test_v0_peer_candidates_match_without_party():
    core = make_core()
    call_id, _ = place_call(core)
    core.handle(answer(call_id, party=None, version=0), 2.0)
    assert of(core.handle(candidates(call_id, cand(1), party=None, version=0), 2.1), AddRemoteCandidates)


def test_answers_and_hangups_from_strangers_are_ignored():
    core = make_core()
    call_id, _ = place_call(core)
    for event in (answer(call_id, sender=STRANGER), reject(call_id, sender=STRANGER),
                  answer(call_id, room_id="!other:example.org")):
        actions = core.handle(event, 2.0)
        assert of(actions, Ignored) and core.state is CallState.RINGING


def test_remote_echo_of_our_own_events_is_ignored():
    core = make_core()
    call_id, actions = place_call(core)
    for sent in sends(actions):
        echo = received(sent.event_type, dict(sent.content), sender="@door:example.org")
        result = core.handle(echo, 1.5)
        assert [a.reason for a in of(result, Ignored)] == ["our own event (remote echo)"]
    assert core.state is CallState.RINGING


def test_media_failure_while_preparing_sends_nothing():
    core = make_core()
    (prep,) = of(core.handle(ButtonPressed(), 1.0), PrepareOffer)
    actions = core.handle(MediaFailed(call_id=prep.call_id, detail="no camera"), 1.2)
    assert sends(actions) == []
    assert of(actions, CallEnded)[0].summary.outcome is Outcome.FAILED
    assert of(actions, SetLeds) == [SetLeds(state=LedState.ERROR)]


def test_press_during_a_call_is_acknowledged_but_starts_nothing():
    core = make_core()
    call_id, _ = place_call(core)
    actions = core.handle(ButtonPressed(), 2.0)
    assert of(actions, PressFeedback)[0].accepted
    assert of(actions, PrepareOffer) == [] and core.call_id == call_id


def test_stale_offer_after_the_call_ended_is_closed_again():
    core = make_core()
    (prep,) = of(core.handle(ButtonPressed(), 1.0), PrepareOffer)
    core.handle(HangupRequested(), 1.1)
    actions = core.handle(LocalOfferReady(call_id=prep.call_id, sdp=OFFER_SDP), 1.5)
    assert sends(actions) == []
    assert of(actions, CloseMedia) == [CloseMedia(call_id=prep.call_id)]


def test_trickle_invite_goes_out_at_once_and_later_candidates_follow_it_with_end_of_candidates():
    from intercom.core import LocalCandidatesGathered

    core = make_core()
    core.handle(ButtonPressed(), 1.0)
    call_id = core.call_id
    actions = core.handle(LocalOfferReady(call_id=call_id, sdp=OFFER_SDP, stream_id="stream0",
                                          candidates_complete=False), 1.1)
    # Only the invite: gathering (STUN, TURN) is still going on, so no end-of-candidates yet.
    assert [s.event_type for s in sends(actions)] == ["m.call.invite"]
    relay = {"candidate": "candidate:1 1 udp 16777215 198.51.100.7 50000 typ relay raddr 0.0.0.0 rport 9",
             "sdpMid": "0", "sdpMLineIndex": 0}
    (first,) = sends(core.handle(LocalCandidatesGathered(call_id=call_id, candidates=(relay,)), 1.2))
    assert first.event_type == "m.call.candidates" and first.content["candidates"] == [relay]
    assert first.content["party_id"] == DOOR_PARTY and first.content["call_id"] == call_id
    (last,) = sends(core.handle(LocalCandidatesGathered(call_id=call_id, complete=True), 1.3))
    assert last.content["candidates"] == [{"candidate": ""}]
    # Nothing found and not finished: nothing to send.
    assert sends(core.handle(LocalCandidatesGathered(call_id=call_id), 1.35)) == []
    # After the call: nothing goes out for it.
    core.handle(HangupRequested(), 1.4)
    late = core.handle(LocalCandidatesGathered(call_id=call_id, candidates=(relay,), complete=True), 1.5)
    assert sends(late) == [] and of(late, Ignored)
