"""Fixed, realistic SDP for tests where the media side is not under test (shaped like aiortc's output)."""

STREAM_ID = "4b8d5a2e-7c39-4e0b-9f5e-2f1f1c8d9a11"

_FINGERPRINT = ":".join(f"{(i * 37 + 11) % 256:02X}" for i in range(32))


def _sdp(setup: str, port: int, ufrag: str, pwd: str) -> str:
    lines = [
        "v=0",
        "o=- 3921110645 3921110645 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic:WMS *",
        f"m=audio {port} UDP/TLS/RTP/SAVPF 96 9 0 8",
        "c=IN IP4 127.0.0.1",
        "a=sendrecv",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=mid:0",
        f"a=msid:{STREAM_ID} 0d7c4f3e-1b2a-4c5d-8e9f-a0b1c2d3e4f5",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=rtcp-mux",
        "a=ssrc:1714066417 cname:6a0f3b1e-8f2d-4f61-9d2c-3b7a5e4c1d20",
        "a=rtpmap:96 opus/48000/2",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        f"a=candidate:8b1f5c3e9a7d2b4c6e0f1a3b5c7d9e1f 1 udp 2130706431 127.0.0.1 {port} typ host",
        "a=end-of-candidates",
        f"a=ice-ufrag:{ufrag}",
        f"a=ice-pwd:{pwd}",
        f"a=fingerprint:sha-256 {_FINGERPRINT}",
        f"a=setup:{setup}",
        f"m=video {port} UDP/TLS/RTP/SAVPF 97 98 99 100",
        "c=IN IP4 127.0.0.1",
        "a=sendrecv",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=mid:1",
        f"a=msid:{STREAM_ID} 9e8d7c6b-5a49-4382-a1b0-c9d8e7f6a5b4",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=rtcp-mux",
        "a=ssrc:2850441203 cname:6a0f3b1e-8f2d-4f61-9d2c-3b7a5e4c1d20",
        "a=rtpmap:97 VP8/90000",
        "a=rtcp-fb:97 nack",
        "a=rtcp-fb:97 nack pli",
        "a=rtcp-fb:97 goog-remb",
        "a=rtpmap:98 rtx/90000",
        "a=fmtp:98 apt=97",
        "a=rtpmap:99 H264/90000",
        "a=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "a=rtpmap:100 rtx/90000",
        "a=fmtp:100 apt=99",
        f"a=ice-ufrag:{ufrag}",
        f"a=ice-pwd:{pwd}",
        f"a=fingerprint:sha-256 {_FINGERPRINT}",
        f"a=setup:{setup}",
    ]
    return "\r\n".join(lines) + "\r\n"


OFFER_SDP = _sdp("actpass", 40823, "Yx3q", "Q2b7mZkT0rVn4sLd8hWc1e")
ANSWER_SDP = _sdp("active", 51377, "Hp9d", "Zr5nW2kQ8tBv1yLm6xCf3a")
