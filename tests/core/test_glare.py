"""Glare, both cases of the spec: an invite while preparing ours, and an invite after ours was sent."""

from intercom.core import (
    ButtonPressed,
    CallEnded,
    CallState,
    CloseMedia,
    Direction,
    LocalOfferReady,
    Outcome,
    PrepareAnswer,
    PrepareOffer,
)
from intercom.core.glare import incoming_wins, new_call_id

from .helpers import OFFER_SDP, answer, hangup, invite, make_core, of, place_call, sends


def test_door_call_ids_sort_after_other_clients_ids():
    """js-sdk/dart-sdk IDs start with epoch-ms digits, Nheko's with 'c': the door always yields."""
    ours = new_call_id("0000")
    for theirs in ("1754550001234AbCdEfGhIjKlMnOp", "c1754550001234", "AbC", "yyyy"):
        assert incoming_wins(ours, theirs)


def test_invite_while_preparing_wins_and_nothing_of_ours_is_sent():
    core = make_core()
    (prep,) = of(core.handle(ButtonPressed(), 1.0), PrepareOffer)
    actions = core.handle(invite("1700000000000abc"), 1.1)
    assert sends(actions) == []
    assert CloseMedia(call_id=prep.call_id) in actions
    assert of(actions, CallEnded)[0].summary.outcome is Outcome.REPLACED
    assert of(actions, PrepareAnswer)[0].call_id == "1700000000000abc"
    # our offer finishing late is dropped, never sent
    late = core.handle(LocalOfferReady(call_id=prep.call_id, sdp=OFFER_SDP), 1.3)
    assert sends(late) == [] and CloseMedia(call_id=prep.call_id) in late
    assert core.call_id == "1700000000000abc" and core.direction is Direction.INCOMING


def test_lesser_incoming_call_id_wins_after_our_invite_was_sent():
    core = make_core()
    ours, _ = place_call(core)
    actions = core.handle(invite("1700000000000abc"), 2.0)
    (h,) = sends(actions)
    assert h.event_type == "m.call.hangup" and h.content == {
        "call_id": ours, "party_id": "DOORPARTY", "version": "1", "reason": "replaced"}
    assert actions.index(h) < actions.index(of(actions, PrepareAnswer)[0])
    assert core.state is CallState.ANSWERING and core.call_id == "1700000000000abc"


def test_greater_incoming_call_id_loses_and_a_v1_caller_gets_a_reject():
    """The owner's invite was never answered: its caller is declined as the spec declines v1 invites."""
    core = make_core(tokens=["0000"])  # our call id: z0000
    ours, _ = place_call(core)
    actions = core.handle(invite("zzzz"), 2.0)
    (r,) = sends(actions)
    assert r.event_type == "m.call.reject" and r.content["call_id"] == "zzzz"
    assert of(actions, PrepareAnswer) == [] and core.call_id == ours and core.state is CallState.RINGING


def test_greater_incoming_call_id_from_a_v0_caller_gets_a_hangup_replaced():
    core = make_core(tokens=["0000"])
    ours, _ = place_call(core)
    (h,) = sends(core.handle(invite("zzzz", version=0, party=None), 2.0))
    assert h.event_type == "m.call.hangup" and h.content["call_id"] == "zzzz" and h.content["reason"] == "replaced"
    assert core.call_id == ours


def test_late_answer_and_hangup_for_our_replaced_call_are_ignored():
    """js-sdk often auto-answers the door's call and later hangs it up as replaced: neither may start a call."""
    core = make_core()
    ours, _ = place_call(core)
    core.handle(invite("1700000000000abc"), 2.0)
    for event in (answer(ours), hangup(ours, reason="replaced")):
        actions = core.handle(event, 2.2)
        assert sends(actions) == [] and of(actions, CallEnded) == []
    assert core.call_id == "1700000000000abc" and core.state is CallState.ANSWERING


def test_invite_after_our_call_was_answered_is_busy_not_glare():
    core = make_core()
    ours, _ = place_call(core)
    core.handle(answer(ours), 2.0)
    (rej,) = sends(core.handle(invite("1700000000000abc"), 2.1))
    assert rej.event_type == "m.call.reject" and core.call_id == ours


def test_owner_invite_before_the_press_is_answered_and_no_call_placed():
    core = make_core()
    core.handle(invite("1700000000000abc"), 1.0)
    actions = core.handle(ButtonPressed(), 1.1)
    assert of(actions, PrepareOffer) == [] and core.direction is Direction.INCOMING
