"""The SDP and candidate facts the engine needs, read without side effects.

aiortc parses SDP inside ``setRemoteDescription``; the engine must know some things before that (which media
kinds an offer has, whether a renegotiation is an ICE restart) and some after (which codec the video goes out
with, which msid the local stream has). Everything here is a pure function of strings and dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiortc import RTCIceCandidate, RTCIceParameters
from aiortc.sdp import SessionDescription, candidate_from_sdp


@dataclass(frozen=True)
class MediaSection:
    """One ``m=`` section of an SDP."""

    kind: str
    "``audio``, ``video`` or ``application``."
    mid: str | None
    direction: str | None
    codecs: tuple[str, ...]
    """Codec names in the section's order of preference, e.g. ``("H264", "VP8", "rtx")``."""
    ice_ufrag: str | None


def parse_sections(sdp: str) -> list[MediaSection]:
    """The media sections of an SDP; raises ValueError if aiortc cannot parse it."""
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises assorted types on malformed input
        raise ValueError(f"unparsable SDP: {exc}") from exc
    sections = []
    for media in description.media:
        codecs = tuple(codec.name for codec in media.rtp.codecs)
        sections.append(
            MediaSection(
                kind=media.kind,
                mid=media.rtp.muxId,
                direction=media.direction,
                codecs=codecs,
                ice_ufrag=media.ice.usernameFragment if media.ice else None,
            )
        )
    return sections


def bundled_candidates(sdp: str) -> tuple[list[RTCIceCandidate], bool]:
    """Every ``a=candidate`` of a remote SDP, each addressed to the BUNDLE-tagged section, and whether any section
    says ``a=end-of-candidates``.

    With BUNDLE, browsers put the candidates in the tagged (first) section only. aiortc 1.16's
    ``setRemoteDescription`` keeps one section per ICE transport, and for an offerer whose sections already share
    one transport (max-bundle) that is the *last* section, so it adds none of the answer's candidates. The door
    then learns the peer only from its incoming checks: enough on one network, never through TURN, where the peer's
    checks reach the door's relay only after the door has sent to the peer (its TURN permission). Adding them again
    is harmless: aioice ignores a candidate whose address it already has.
    """
    description = SessionDescription.parse(sdp)
    if not description.media:
        return [], False
    index = _bundle_index(description)
    tag = description.media[index].rtp.muxId
    candidates = []
    for media in description.media:
        for candidate in media.ice_candidates:
            candidate.sdpMid, candidate.sdpMLineIndex = tag, index
            candidates.append(candidate)
    return candidates, any(media.ice_candidates_complete for media in description.media)


def _bundle_index(description: SessionDescription) -> int:
    """The index of the BUNDLE-tagged section (the first one without BUNDLE); the description has media."""
    bundle = next((group for group in description.group if group.semantic == "BUNDLE" and group.items), None)
    tag = bundle.items[0] if bundle else description.media[0].rtp.muxId
    return next((i for i, media in enumerate(description.media) if media.rtp.muxId == tag), 0)


def remote_ice_parameters(sdp: str) -> RTCIceParameters:
    """The ICE ufrag, pwd and lite flag of the bundle's transport (the tagged section's); ValueError if none."""
    description = SessionDescription.parse(sdp)
    if not description.media:
        raise ValueError("the SDP has no media section")
    ice = description.media[_bundle_index(description)].ice
    if ice is None or not ice.usernameFragment or not ice.password:
        raise ValueError("the SDP's bundled section has no ICE ufrag and pwd")
    return ice


def local_stream_id(sdp: str) -> str | None:
    """The msid stream id of the first sending track (``a=msid:<stream> <track>``), for ``sdp_stream_metadata``.

    aiortc uses one stream id for all tracks of a peer connection. Sections that do not send (recvonly, inactive)
    carry an msid too, but no remote feed comes of them, so they are not taken.
    """
    direction = None
    msid = None
    for line in sdp.splitlines() + ["m="]:
        if line.startswith("m="):
            if msid is not None and direction in ("sendrecv", "sendonly", None):
                return msid
            direction = msid = None
        elif line.startswith("a=msid:"):
            parts = line[len("a=msid:") :].split()
            if parts and parts[0] != "-":
                msid = parts[0]
        elif line[2:] in ("sendrecv", "sendonly", "recvonly", "inactive") and line.startswith("a="):
            direction = line[2:]
    return None


def sending_codec(sdp: str, kind: str) -> str | None:
    """The codec a section of ``kind`` sends with: the first non-RTX codec of an answer (or of our own answer)."""
    for section in parse_sections(sdp):
        if section.kind == kind:
            return next((name for name in section.codecs if name.lower() not in ("rtx", "red", "ulpfec")), None)
    return None


def candidate_from_matrix(entry: Mapping) -> RTCIceCandidate | None:
    """An aiortc candidate from one ``m.call.candidates`` entry; None for end-of-candidates (``candidate: ""``).

    Raises ValueError for anything malformed: a non-string candidate, no ``sdpMid``/``sdpMLineIndex``, or an SDP
    attribute aiortc cannot parse.
    """
    if not isinstance(entry, Mapping):
        raise ValueError(f"candidate entry is not an object: {entry!r}")
    text = entry.get("candidate")
    if not isinstance(text, str):
        raise ValueError(f"candidate is not a string: {text!r}")
    text = text.strip()
    if text == "":
        return None
    if text.startswith("a="):
        text = text[2:]
    if text.startswith("candidate:"):
        text = text[len("candidate:") :]
    mid = entry.get("sdpMid")
    index = entry.get("sdpMLineIndex")
    if mid is not None and not isinstance(mid, str):
        raise ValueError(f"sdpMid is not a string: {mid!r}")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
        raise ValueError(f"sdpMLineIndex is not a non-negative integer: {index!r}")
    if mid is None and index is None:
        raise ValueError("candidate has neither sdpMid nor sdpMLineIndex")
    try:
        candidate = candidate_from_sdp(text)
    except Exception as exc:
        raise ValueError(f"unparsable candidate {text!r}: {exc}") from exc
    candidate.sdpMid = mid
    candidate.sdpMLineIndex = index
    return candidate
