"""The owner calls the door: auto-answer, candidates, select_answer, busy, negotiate, hangups."""

import dataclasses

import pytest

from intercom.core import (
    AddRemoteCandidates,
    CallEnded,
    CallState,
    CloseMedia,
    Ignored,
    LedState,
    LocalAnswerReady,
    MediaFailed,
    MediaState,
    MediaStateChanged,
    NegotiationAnswerReady,
    Outcome,
    PrepareAnswer,
    PrepareNegotiationAnswer,
    SetLeds,
)

from .helpers import (
    ANSWER_SDP, DOOR_PARTY, END, OFFER_SDP, PHONE, cand, candidates, connect, hangup, invite, make_core, of,
    received, sends, take_call,
)

CALL = "1700000000000abcdef"


def test_owner_invite_is_answered():
    core = make_core()
    actions = core.handle(invite(CALL), 1.0)
    assert of(actions, PrepareAnswer) == [PrepareAnswer(call_id=CALL, offer_sdp=OFFER_SDP)]
    assert of(actions, SetLeds) == [SetLeds(state=LedState.ANSWERING)]
    assert core.state is CallState.ANSWERING
    actions = core.handle(LocalAnswerReady(call_id=CALL, sdp=ANSWER_SDP, stream_id="st"), 1.3)
    ans, eoc = sends(actions)
    assert ans.event_type == "m.call.answer"
    assert ans.content == {"call_id": CALL, "party_id": DOOR_PARTY, "version": "1",
                           "answer": {"type": "answer", "sdp": ANSWER_SDP},
                           "sdp_stream_metadata": {"st": {"purpose": "m.usermedia", "audio_muted": False,
                                                          "video_muted": False}}}
    assert eoc.content["candidates"] == [{"candidate": ""}]
    assert core.state is CallState.CONNECTING
    connect(core, CALL, 1.6)
    assert core.state is CallState.CONNECTED and core.led is LedState.IN_CALL


def test_v0_owner_invite_is_answered():
    core = make_core()
    actions = take_call(core, party=None, version=0)
    assert sends(actions, "m.call.answer")[0].content["version"] == "1"  # we always speak v1


def test_candidates_before_the_invite_are_kept_for_it():
    core = make_core()
    core.handle(candidates(CALL, cand(1)), 0.5)
    core.handle(invite(CALL), 1.0)
    (add,) = of(core.handle(LocalAnswerReady(call_id=CALL, sdp=ANSWER_SDP), 1.2), AddRemoteCandidates)
    assert add.candidates[0].candidate == cand(1)["candidate"]


def test_candidates_wait_for_our_answer_then_flow():
    core = make_core()
    core.handle(invite(CALL), 1.0)
    assert of(core.handle(candidates(CALL, cand(1)), 1.1), AddRemoteCandidates) == []
    (add,) = of(core.handle(LocalAnswerReady(call_id=CALL, sdp=ANSWER_SDP), 1.2), AddRemoteCandidates)
    assert len(add.candidates) == 1
    (add,) = of(core.handle(candidates(CALL, cand(2), END), 1.3), AddRemoteCandidates)
    assert add.candidates[-1].is_end


def test_candidates_from_other_parties_or_strangers_are_dropped():
    core = make_core()
    take_call(core, CALL)
    assert of(core.handle(candidates(CALL, cand(1), party="OTHER"), 1.5), AddRemoteCandidates) == []
    assert of(core.handle(candidates(CALL, cand(1), sender="@x:example.org"), 1.5), AddRemoteCandidates) == []


def test_select_answer_for_us_is_fine_and_for_another_party_ends_quietly():
    core = make_core()
    take_call(core, CALL)
    assert of(core.handle(received("m.call.select_answer", {"call_id": CALL, "party_id": PHONE, "version": "1",
                                                             "selected_party_id": DOOR_PARTY}), 1.5), CallEnded) == []
    actions = core.handle(received("m.call.select_answer", {"call_id": CALL, "party_id": PHONE, "version": "1",
                                                             "selected_party_id": "ELSEWHERE"}), 1.6)
    assert sends(actions) == []
    assert of(actions, CallEnded)[0].summary.outcome is Outcome.ANSWERED_ELSEWHERE


@pytest.mark.parametrize("version, party, refusal", [("1", PHONE, "m.call.reject"), (0, None, "m.call.hangup")])
def test_a_second_call_while_busy_is_refused_for_its_version(version, party, refusal):
    core = make_core()
    take_call(core, CALL)
    actions = core.handle(invite("1700000000999second", version=version, party=party), 2.0)
    (ref,) = sends(actions)
    assert ref.event_type == refusal and ref.content["call_id"] == "1700000000999second"
    if refusal == "m.call.hangup":
        assert ref.content["reason"] == "user_busy"
    assert core.call_id == CALL and core.state is CallState.CONNECTING


def test_duplicate_invite_is_ignored():
    core = make_core()
    core.handle(invite(CALL), 1.0)
    actions = core.handle(invite(CALL), 1.1)
    assert sends(actions) == [] and of(actions, PrepareAnswer) == []


def test_replayed_invite_of_an_ended_call_is_ignored():
    core = make_core()
    take_call(core, CALL)
    core.handle(hangup(CALL), 2.0)
    actions = core.handle(invite(CALL), 3.0)
    assert of(actions, PrepareAnswer) == [] and sends(actions) == []


def test_caller_hangup_before_connect_is_cancelled():
    core = make_core()
    core.handle(invite(CALL), 1.0)
    actions = core.handle(hangup(CALL), 1.1)
    assert of(actions, CloseMedia) == [CloseMedia(call_id=CALL)]
    assert of(actions, CallEnded)[0].summary.outcome is Outcome.CANCELLED
    # the answer arriving afterwards is dropped and its media closed
    late = core.handle(LocalAnswerReady(call_id=CALL, sdp=ANSWER_SDP), 1.3)
    assert sends(late) == [] and of(late, CloseMedia)


@pytest.mark.parametrize("version, party, refusal", [("1", PHONE, "m.call.reject"), (0, None, "m.call.hangup")])
def test_media_that_cannot_answer_refuses_the_call(version, party, refusal):
    core = make_core()
    core.handle(invite(CALL, version=version, party=party), 1.0)
    actions = core.handle(MediaFailed(call_id=CALL, detail="camera busy"), 1.2)
    (ref,) = sends(actions)
    assert ref.event_type == refusal
    assert of(actions, CallEnded)[0].summary.outcome is Outcome.FAILED


def _negotiate(kind="offer", party=PHONE, version="1"):
    content = {"call_id": CALL, "version": version, "lifetime": 10000, "description": {"type": kind, "sdp": OFFER_SDP}}
    if party:
        content["party_id"] = party
    return received("m.call.negotiate", content)


def test_negotiate_offer_is_answered_when_media_can():
    core = make_core()
    take_call(core, CALL)
    connect(core, CALL, 1.5)
    assert of(core.handle(_negotiate(), 5.0), PrepareNegotiationAnswer)
    (neg,) = sends(core.handle(NegotiationAnswerReady(call_id=CALL, sdp=ANSWER_SDP), 5.1))
    assert neg.event_type == "m.call.negotiate" and neg.content["description"] == {"type": "answer", "sdp": ANSWER_SDP}
    assert core.state is CallState.CONNECTED


def test_negotiate_the_media_cannot_answer_ends_the_call_cleanly():
    core = make_core()
    take_call(core, CALL)
    connect(core, CALL, 1.5)
    core.handle(_negotiate(), 5.0)
    actions = core.handle(MediaFailed(call_id=CALL, detail="cannot renegotiate"), 5.1)
    (h,) = sends(actions)
    assert h.event_type == "m.call.hangup" and h.content["reason"] == "unknown_error"
    assert core.state is CallState.IDLE


@pytest.mark.parametrize("event, why", [
    (_negotiate(kind="answer"), "we sent no offer"),
    (_negotiate(party="OTHER"), "not in this call"),
    (_negotiate(version=0, party=None), "not in this call"),
])
def test_negotiates_we_must_not_act_on_are_ignored(event, why):
    core = make_core()
    take_call(core, CALL)
    connect(core, CALL, 1.5)
    actions = core.handle(event, 5.0)
    assert of(actions, PrepareNegotiationAnswer) == [] and why in of(actions, Ignored)[0].reason


def test_negotiate_towards_a_v0_call_is_ignored():
    core = make_core()
    take_call(core, CALL, party=None, version=0)
    connect(core, CALL, 1.5)
    actions = core.handle(_negotiate(version=0, party=None), 5.0)
    assert of(actions, PrepareNegotiationAnswer) == [] and "version 1" in of(actions, Ignored)[0].reason


@pytest.mark.parametrize("event_type", ["m.call.sdp_stream_metadata_changed", "m.call.asserted_identity",
                                        "m.call.replaces", "m.call.whatever"])
def test_other_call_events_in_a_call_are_tolerated(event_type):
    core = make_core()
    take_call(core, CALL)
    actions = core.handle(received(event_type, {"call_id": CALL, "party_id": PHONE, "version": "1",
                                                "sdp_stream_metadata": {}}), 2.0)
    assert of(actions, Ignored) and core.state is CallState.CONNECTING


def test_media_failure_after_connecting_hangs_up_with_ice_timeout():
    core = make_core()
    take_call(core, CALL)
    connect(core, CALL, 1.5)
    (h,) = sends(core.handle(MediaStateChanged(call_id=CALL, state=MediaState.FAILED), 9.0))
    assert h.content["reason"] == "ice_timeout"


def test_media_failure_before_connecting_hangs_up_with_ice_failed():
    core = make_core()
    take_call(core, CALL)
    (h,) = sends(core.handle(MediaStateChanged(call_id=CALL, state=MediaState.FAILED), 3.0))
    assert h.content["reason"] == "ice_failed"


def test_an_internal_error_mid_call_still_ends_it_with_call_ended_and_the_error_pattern(monkeypatch):
    core = make_core()
    take_call(core, CALL)
    connect(core, CALL, 2.0)
    monkeypatch.setattr(core, "_on_media_state", lambda *args: 1 / 0)  # a bug in one handler
    actions = core.handle(MediaStateChanged(call_id=CALL, state=MediaState.DISCONNECTED), 20.0)
    assert any(isinstance(a, Ignored) and a.reason.startswith("internal error") for a in actions)
    (hangup_sent,) = [s for s in sends(actions) if s.event_type == "m.call.hangup"]
    assert hangup_sent.content["reason"] == "unknown_error"
    assert of(actions, CloseMedia) == [CloseMedia(call_id=CALL)]
    (ended,) = of(actions, CallEnded)
    assert ended.summary.call_id == CALL and ended.summary.reason == "unknown_error"
    assert ended.summary.outcome is Outcome.COMPLETED and ended.summary.ended_at == 20.0
    assert of(actions, SetLeds) == [SetLeds(state=LedState.ERROR)]
    assert core.state is CallState.IDLE


def test_handle_never_raises_even_when_choosing_the_leds_fails(monkeypatch):
    """The LED choice runs inside the same guard as everything else."""
    core = make_core()
    take_call(core, CALL)

    def broken():
        raise RuntimeError("bug in the panel state")

    monkeypatch.setattr(core, "_wanted_led", broken)
    actions = core.handle(MediaStateChanged(call_id=CALL, state=MediaState.CONNECTED), 2.0)
    reasons = [a.reason for a in of(actions, Ignored)]
    assert any(r.startswith("internal error handling") for r in reasons)
    assert any(r.startswith("internal error choosing the LEDs") for r in reasons)
    assert of(actions, CallEnded) and core.state is CallState.IDLE


@pytest.mark.parametrize("ending", ["m.call.hangup", "m.call.reject"])
def test_a_call_that_ended_before_its_invite_arrived_is_never_answered(ending):
    """Events of one call can arrive out of order (two syncs, a retried send): the invite then finds it over."""
    core = make_core()
    content = {"call_id": CALL, "party_id": PHONE, "version": "1", "reason": "user_hangup"}
    core.handle(received(ending, content), 1.0)
    actions = core.handle(invite(CALL), 1.1)
    assert of(actions, PrepareAnswer) == [] and sends(actions) == []
    assert "already handled" in of(actions, Ignored)[0].reason


def test_an_event_delivered_twice_is_acted_on_once():
    """A retried sync or a late decryption can hand the same event over again: a repeated negotiate must not be
    answered twice, nor candidates applied twice."""
    core = make_core()
    take_call(core, CALL)
    connect(core, CALL, 2.0)
    batch = dataclasses.replace(candidates(CALL, cand(1)), event_id="$cands")
    assert of(core.handle(batch, 3.0), AddRemoteCandidates)
    again = core.handle(batch, 3.1)
    assert of(again, AddRemoteCandidates) == [] and "handled already" in of(again, Ignored)[0].reason
    negotiate = received("m.call.negotiate", {"call_id": CALL, "party_id": PHONE, "version": "1", "lifetime": 10000,
                                              "description": {"type": "offer", "sdp": OFFER_SDP}})
    negotiate = dataclasses.replace(negotiate, event_id="$negotiate")
    assert of(core.handle(negotiate, 4.0), PrepareNegotiationAnswer)
    assert of(core.handle(negotiate, 4.1), PrepareNegotiationAnswer) == []


@pytest.mark.parametrize("party", ["has space", "ü", "x" * 256, "<script>"])
def test_a_party_id_outside_the_spec_grammar_is_malformed_and_never_echoed(party):
    core = make_core()
    actions = core.handle(invite(CALL, party=party), 1.0)
    assert of(actions, PrepareAnswer) == [] and sends(actions) == []
    assert "party_id" in of(actions, Ignored)[0].reason


def test_the_current_calls_held_candidates_survive_a_flood_of_unknown_call_ids():
    core = make_core()
    core.handle(invite(CALL), 1.0)  # answering: candidates are held until our answer is out
    core.handle(candidates(CALL, cand(1)), 1.05)
    for n in range(40):
        core.handle(candidates(f"1700000000000flood{n}", cand(2)), 1.06)
    (add,) = of(core.handle(LocalAnswerReady(call_id=CALL, sdp=ANSWER_SDP), 1.2), AddRemoteCandidates)
    assert [c.candidate for c in add.candidates] == [cand(1)["candidate"]]


def test_a_negotiate_past_its_lifetime_is_not_answered():
    """The peer gave up on an offer older than its lifetime; answering it would start a stale negotiation."""
    core = make_core()
    take_call(core, CALL)
    connect(core, CALL, 1.5)
    stale = dataclasses.replace(_negotiate(), age_ms=12_000)  # lifetime 10 s
    actions = core.handle(stale, 5.0)
    assert of(actions, PrepareNegotiationAnswer) == [] and "lifetime" in of(actions, Ignored)[0].reason
    assert core.state is CallState.CONNECTED
    assert of(core.handle(dataclasses.replace(_negotiate(), age_ms=500, event_id="$fresh"), 6.0),
              PrepareNegotiationAnswer)


def test_no_answer_goes_out_after_the_invites_lifetime_ran_out():
    """An invite 50 s old with a 60 s lifetime: the caller gives up ~7 s after it arrives (3 s grace), so an answer
    the media side finishes later than that must not be sent; the call ends instead."""
    core = make_core()  # prepare_timeout 10 s
    core.handle(invite(CALL, lifetime=60_000, age_ms=50_000), 1.0)
    assert core.next_deadline() <= 1.0 + 7.0
    actions = core.handle(LocalAnswerReady(call_id=CALL, sdp=ANSWER_SDP), 8.5)
    assert sends(actions, "m.call.answer") == []
    assert core.state is CallState.IDLE
    # An answer ready in time is sent as usual.
    core.handle(invite("1700000000001abc", lifetime=60_000, age_ms=50_000), 20.0)
    assert sends(core.handle(LocalAnswerReady(call_id="1700000000001abc", sdp=ANSWER_SDP), 21.0), "m.call.answer")
