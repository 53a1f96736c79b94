"""The wire format: what is accepted, what is refused with a reason, and what we send."""

import pytest

from intercom.core import IceCandidate, MalformedCallEvent
from intercom.core import messages as m

SDP = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\n"
BASE = {"call_id": "c123", "party_id": "P1", "version": "1"}


def test_invite_v1_parsed_with_every_field():
    msg = m.parse_call_event(m.INVITE, {**BASE, "lifetime": 90000, "invitee": "@door:x",
                                         "offer": {"type": "offer", "sdp": SDP}})
    assert msg == m.Invite(call_id="c123", party_id="P1", v1=True, lifetime_ms=90000, invitee="@door:x",
                           offer_sdp=SDP)


@pytest.mark.parametrize("version, v1", [(0, False), ("1", True), (1, True), ("0", True), ("2", True),
                                         (None, True), (False, True), (0.0, True)])
def test_version_zero_only_for_integer_zero(version, v1):
    """Only an integer 0 is a version 0 peer; anything else is treated as "1" (spec)."""
    content = {**BASE, "lifetime": 1000, "offer": {"type": "offer", "sdp": SDP}}
    content["version"] = version
    msg = m.parse_call_event(m.INVITE, content)
    assert msg.v1 is v1
    assert msg.party_id == ("P1" if v1 else None)  # a v0 peer's party_id is treated as absent


@pytest.mark.parametrize("event_type, content, reason", [
    (m.INVITE, "not an object", "content is not an object"),
    (m.INVITE, {"version": "1"}, "missing call_id"),
    (m.INVITE, {**BASE, "call_id": 5}, "call_id has the wrong type"),
    (m.INVITE, {**BASE, "call_id": "has space"}, "call_id is not a valid identifier"),
    (m.INVITE, {**BASE, "call_id": "x" * 256}, "call_id is not a valid identifier"),
    (m.INVITE, {**BASE, "call_id": ""}, "call_id is not a valid identifier"),
    (m.INVITE, {**BASE, "party_id": 7, "offer": {"type": "offer", "sdp": SDP}}, "party_id has the wrong type"),
    (m.INVITE, {**BASE}, "missing offer"),
    (m.INVITE, {**BASE, "offer": "sdp"}, "offer has the wrong type"),
    (m.INVITE, {**BASE, "offer": {"type": "answer", "sdp": SDP}}, "offer.type is 'answer'"),
    (m.INVITE, {**BASE, "offer": {"type": "offer", "sdp": "v=0"}}, "no media section"),
    (m.INVITE, {**BASE, "offer": {"type": "offer", "sdp": "m=" * 40000}}, "longer than 65536"),
    (m.INVITE, {**BASE, "lifetime": -1, "offer": {"type": "offer", "sdp": SDP}}, "lifetime is not a non-negative"),
    (m.INVITE, {**BASE, "lifetime": "90000", "offer": {"type": "offer", "sdp": SDP}}, "lifetime is not"),
    (m.INVITE, {**BASE, "lifetime": True, "offer": {"type": "offer", "sdp": SDP}}, "lifetime is not"),
    (m.INVITE, {**BASE, "invitee": ["@a:x"], "offer": {"type": "offer", "sdp": SDP}}, "invitee has the wrong type"),
    (m.ANSWER, {**BASE, "answer": {"type": "offer", "sdp": SDP}}, "answer.type is 'offer'"),
    (m.ANSWER, {**BASE, "answer": {"sdp": SDP}}, "missing type"),
    (m.CANDIDATES, {**BASE, "candidates": "x"}, "candidates has the wrong type"),
    (m.CANDIDATES, {**BASE, "candidates": []}, "no usable candidate"),
    (m.CANDIDATES, {**BASE, "candidates": [{"candidate": "candidate:1"}]}, "no usable candidate"),
    (m.CANDIDATES, {**BASE, "candidates": [{"candidate": ""}] * 201}, "more than 200"),
    (m.SELECT_ANSWER, {**BASE}, "missing selected_party_id"),
    (m.NEGOTIATE, {**BASE, "description": {"type": "pranswer", "sdp": SDP}}, "neither offer nor answer"),
])
def test_malformed_content_is_refused_with_a_reason(event_type, content, reason):
    with pytest.raises(MalformedCallEvent, match=reason.replace("(", r"\(").replace(")", r"\)")):
        m.parse_call_event(event_type, content)


def test_huge_lifetime_is_clamped():
    msg = m.parse_call_event(m.INVITE, {**BASE, "lifetime": 10**15, "offer": {"type": "offer", "sdp": SDP}})
    assert msg.lifetime_ms == m.MAX_LIFETIME_MS


def test_missing_lifetime_uses_js_sdk_default():
    msg = m.parse_call_event(m.INVITE, {**BASE, "offer": {"type": "offer", "sdp": SDP}})
    assert msg.lifetime_ms == m.DEFAULT_LIFETIME_MS


def test_candidates_without_sdpmid_and_end_marker_are_kept():
    """matrix-js-sdk's end-of-candidates has neither sdpMid nor sdpMLineIndex (nio calls that a BadEvent)."""
    msg = m.parse_call_event(m.CANDIDATES, {**BASE, "candidates": [
        {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host", "sdpMLineIndex": 0},
        {"candidate": "candidate:2 1 udp 1 1.2.3.4 6 typ host", "sdpMid": "0"},
        {"candidate": ""},
    ]})
    assert msg.candidates == (
        IceCandidate(candidate="candidate:1 1 udp 1 1.2.3.4 5 typ host", sdp_mline_index=0),
        IceCandidate(candidate="candidate:2 1 udp 1 1.2.3.4 6 typ host", sdp_mid="0"),
        IceCandidate(candidate=""),
    )
    assert msg.candidates[-1].is_end


def test_bad_candidate_entries_are_dropped_alone():
    msg = m.parse_call_event(m.CANDIDATES, {**BASE, "candidates": [
        "junk", {"candidate": 5, "sdpMid": "0"}, {"candidate": "candidate:1", "sdpMid": "0", "sdpMLineIndex": True},
    ]})
    assert msg.candidates == (IceCandidate(candidate="candidate:1", sdp_mid="0"),)


@pytest.mark.parametrize("reason, expected", [("ice_failed", "ice_failed"), ("replaced", "replaced"),
                                              ("userHangup", "user_hangup"), (None, "user_hangup"),
                                              (42, "user_hangup")])
def test_unknown_hangup_reasons_mean_user_hangup(reason, expected):
    content = {**BASE} if reason is None else {**BASE, "reason": reason}
    assert m.parse_call_event(m.HANGUP, content).reason == expected


@pytest.mark.parametrize("event_type", [m.STREAM_METADATA_CHANGED, "m.call.replaces", "m.call.asserted_identity",
                                        "m.call.future_thing"])
def test_other_call_events_are_tolerated(event_type):
    assert isinstance(m.parse_call_event(event_type, BASE), m.OtherCallEvent)


def test_built_invite_has_every_field_protocol_requires():
    content = m.invite_content("zabc", "DOOR", sdp=SDP, stream_id="s1", lifetime_ms=90000, invitee="@o:x")
    assert content == {"call_id": "zabc", "party_id": "DOOR", "version": "1", "lifetime": 90000, "invitee": "@o:x",
                       "offer": {"type": "offer", "sdp": SDP},
                       "sdp_stream_metadata": {"s1": {"purpose": "m.usermedia", "audio_muted": False,
                                                      "video_muted": False}}}
    for forbidden in ("conf_id", "device_id", "dest_session_id", "seq"):
        assert forbidden not in content


def test_stream_metadata_left_out_without_a_stream_id():
    assert "sdp_stream_metadata" not in m.answer_content("c", "DOOR", sdp=SDP, stream_id=None)


def test_our_content_parses_back():
    """What we send is what we accept: the builders and the parser agree."""
    built = {
        m.INVITE: m.invite_content("zabc", "DOOR", sdp=SDP, stream_id=None, lifetime_ms=90000, invitee="@o:x"),
        m.ANSWER: m.answer_content("zabc", "DOOR", sdp=SDP, stream_id="s"),
        m.CANDIDATES: m.end_of_candidates_content("zabc", "DOOR"),
        m.SELECT_ANSWER: m.select_answer_content("zabc", "DOOR", selected_party_id="P"),
        m.REJECT: m.reject_content("zabc", "DOOR"),
        m.HANGUP: m.hangup_content("zabc", "DOOR", reason="invite_timeout"),
        m.NEGOTIATE: m.negotiate_answer_content("zabc", "DOOR", sdp=SDP, stream_id=None, lifetime_ms=10000),
    }
    for event_type, content in built.items():
        msg = m.parse_call_event(event_type, content)
        assert (msg.call_id, msg.party_id, msg.v1) == ("zabc", "DOOR", True)
