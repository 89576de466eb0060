"""Realistic fake WebRTC session descriptions and ICE candidates, shaped like a browser's: pure, no I/O."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any

_ICE_CHARS = string.ascii_letters + string.digits + "+/"

# (payload type, rtpmap, fmtp or None, rtcp-fb list) in a browser's order of preference.
_AUDIO_CODECS: list[tuple[int, str, str | None, tuple[str, ...]]] = [
    (111, "opus/48000/2", "minptime=10;useinbandfec=1", ("transport-cc",)),
    (63, "red/48000/2", "111/111", ()),
    (9, "G722/8000", None, ()),
    (0, "PCMU/8000", None, ()),
    (8, "PCMA/8000", None, ()),
    (13, "CN/8000", None, ()),
    (110, "telephone-event/48000", None, ()),
    (126, "telephone-event/8000", None, ()),
]
_VIDEO_FEEDBACK = ("goog-remb", "transport-cc", "ccm fir", "nack", "nack pli")
# (payload type, rtpmap, fmtp, retransmission payload type)
_VIDEO_CODECS: list[tuple[int, str, str | None, int]] = [
    (96, "VP8/90000", None, 97),
    (98, "VP9/90000", "profile-id=0", 99),
    (100, "VP9/90000", "profile-id=2", 101),
    (102, "H264/90000", "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f", 103),
    (104, "H264/90000", "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", 105),
    (45, "AV1/90000", "level-idx=5;profile=0;tier=0", 46),
]
_AUDIO_EXTMAPS = [
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "urn:ietf:params:rtp-hdrext:sdes:mid",
]
_VIDEO_EXTMAPS = [
    "urn:ietf:params:rtp-hdrext:toffset",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "urn:3gpp:video-orientation",
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
]


@dataclass(frozen=True, slots=True)
class MediaSection:
    """One m= section of a description: its kind, mid and payload types."""

    kind: str
    mid: str
    payload_types: tuple[int, ...]


def _token(rng: random.Random, length: int, alphabet: str = _ICE_CHARS) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _fingerprint(rng: random.Random) -> str:
    return ":".join(f"{rng.getrandbits(8):02X}" for _ in range(32))


def _ssrc(rng: random.Random) -> int:
    return rng.randrange(1, 2**32)


def _session_lines(rng: random.Random, mids: list[str], stream: str) -> list[str]:
    return [
        "v=0",
        f"o=- {rng.randrange(10**18, 10**19)} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE " + " ".join(mids),
        "a=extmap-allow-mixed",
        f"a=msid-semantic: WMS {stream}",
    ]


def _transport_lines(ufrag: str, pwd: str, fingerprint: str, setup: str, mid: str) -> list[str]:
    return [
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        f"a=ice-ufrag:{ufrag}",
        f"a=ice-pwd:{pwd}",
        "a=ice-options:trickle",
        f"a=fingerprint:sha-256 {fingerprint}",
        f"a=setup:{setup}",
        f"a=mid:{mid}",
    ]


def _audio_section(
    rng: random.Random,
    codecs: list[tuple[int, str, str | None, tuple[str, ...]]],
    transport: list[str],
    stream: str,
) -> list[str]:
    lines = ["m=audio 9 UDP/TLS/RTP/SAVPF " + " ".join(str(c[0]) for c in codecs), *transport]
    lines += [f"a=extmap:{i} {uri}" for i, uri in enumerate(_AUDIO_EXTMAPS, start=1)]
    track, ssrc, cname = _uuid(rng), _ssrc(rng), _token(rng, 16)
    lines += ["a=sendrecv", f"a=msid:{stream} {track}", "a=rtcp-mux"]
    for pt, rtpmap, fmtp, feedback in codecs:
        lines.append(f"a=rtpmap:{pt} {rtpmap}")
        lines += [f"a=rtcp-fb:{pt} {fb}" for fb in feedback]
        if fmtp is not None:
            lines.append(f"a=fmtp:{pt} {fmtp}")
    lines += [f"a=ssrc:{ssrc} cname:{cname}", f"a=ssrc:{ssrc} msid:{stream} {track}"]
    return lines


def _video_section(
    rng: random.Random, codecs: list[tuple[int, str, str | None, int]], transport: list[str], stream: str
) -> list[str]:
    pts = [str(p) for codec in codecs for p in (codec[0], codec[3])]
    lines = ["m=video 9 UDP/TLS/RTP/SAVPF " + " ".join(pts), *transport]
    lines += [f"a=extmap:{i} {uri}" for i, uri in enumerate(_VIDEO_EXTMAPS, start=14)]
    track, ssrc, rtx_ssrc, cname = _uuid(rng), _ssrc(rng), _ssrc(rng), _token(rng, 16)
    lines += ["a=sendrecv", f"a=msid:{stream} {track}", "a=rtcp-mux", "a=rtcp-rsize"]
    for pt, rtpmap, fmtp, rtx in codecs:
        lines.append(f"a=rtpmap:{pt} {rtpmap}")
        lines += [f"a=rtcp-fb:{pt} {fb}" for fb in _VIDEO_FEEDBACK]
        if fmtp is not None:
            lines.append(f"a=fmtp:{pt} {fmtp}")
        lines += [f"a=rtpmap:{rtx} rtx/90000", f"a=fmtp:{rtx} apt={pt}"]
    lines += [
        f"a=ssrc-group:FID {ssrc} {rtx_ssrc}",
        f"a=ssrc:{ssrc} cname:{cname}",
        f"a=ssrc:{ssrc} msid:{stream} {track}",
        f"a=ssrc:{rtx_ssrc} cname:{cname}",
        f"a=ssrc:{rtx_ssrc} msid:{stream} {track}",
    ]
    return lines


def _join(lines: list[str]) -> str:
    return "\r\n".join(lines) + "\r\n"


def make_offer(rng: random.Random) -> str:
    """A browser-like SDP offer with one audio and one video m-line, bundled, trickling ICE."""
    mids = ["0", "1"]
    stream = _uuid(rng)
    ufrag, pwd, fingerprint = _token(rng, 4), _token(rng, 24), _fingerprint(rng)
    lines = _session_lines(rng, mids, stream)
    lines += _audio_section(
        rng, _AUDIO_CODECS, _transport_lines(ufrag, pwd, fingerprint, "actpass", "0"), stream
    )
    lines += _video_section(
        rng, _VIDEO_CODECS, _transport_lines(ufrag, pwd, fingerprint, "actpass", "1"), stream
    )
    return _join(lines)


def media_sections(sdp: str) -> list[MediaSection]:
    """The m= sections of a description, in order, with their mids."""
    sections: list[MediaSection] = []
    kind: str | None = None
    pts: tuple[int, ...] = ()
    mid = ""
    for line in sdp.splitlines():
        if line.startswith("m="):
            if kind is not None:
                sections.append(MediaSection(kind, mid, pts))
            fields = line[2:].split()
            kind, pts, mid = fields[0], tuple(int(p) for p in fields[3:]), str(len(sections))
        elif line.startswith("a=mid:") and kind is not None:
            mid = line[len("a=mid:") :]
    if kind is not None:
        sections.append(MediaSection(kind, mid, pts))
    return sections


def ice_ufrag(sdp: str) -> str | None:
    """The first a=ice-ufrag of a description, or None."""
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line[len("a=ice-ufrag:") :]
    return None


def make_answer(rng: random.Random, offer: str) -> str:
    """A browser-like SDP answer to `offer`: same m-lines and mids, the preferred codecs it offered."""
    sections = media_sections(offer)
    mids = [s.mid for s in sections]
    stream = _uuid(rng)
    ufrag, pwd, fingerprint = _token(rng, 4), _token(rng, 24), _fingerprint(rng)
    lines = _session_lines(rng, mids, stream)
    for section in sections:
        transport = _transport_lines(ufrag, pwd, fingerprint, "active", section.mid)
        offered = set(section.payload_types)
        if section.kind == "audio":
            audio = [c for c in _AUDIO_CODECS if c[0] in offered] or _AUDIO_CODECS[:1]
            lines += _audio_section(rng, audio, transport, stream)
        elif section.kind == "video":
            video = [c for c in _VIDEO_CODECS if c[0] in offered][:2] or _VIDEO_CODECS[:1]
            lines += _video_section(rng, video, transport, stream)
        else:
            lines += [f"m={section.kind} 0 UDP/TLS/RTP/SAVPF 0", *transport, "a=inactive"]
    return _join(lines)


def make_candidates(rng: random.Random, sdp: str, count: int = 3) -> list[dict[str, Any]]:
    """`count` trickled ICE candidates for a bundled description, as `RTCIceCandidate.toJSON()` maps."""
    sections = media_sections(sdp)
    mid = sections[0].mid if sections else "0"
    ufrag = ice_ufrag(sdp) or _token(rng, 4)
    port = rng.randrange(49152, 65535)
    public_ip = f"203.0.113.{rng.randrange(1, 255)}"
    candidates = []
    for i in range(count):
        foundation = rng.randrange(10**8, 10**10)
        if i % 3 == 0:
            line = (
                f"candidate:{foundation} 1 udp 2122260223 {_uuid(rng)}.local {port + i} typ host"
                f" generation 0 ufrag {ufrag} network-id 1"
            )
        elif i % 3 == 1:
            line = (
                f"candidate:{foundation} 1 udp 1686052607 {public_ip} {port + i} typ srflx"
                f" raddr 0.0.0.0 rport 0 generation 0 ufrag {ufrag} network-id 1"
            )
        else:
            line = (
                f"candidate:{foundation} 1 tcp 1518280447 {_uuid(rng)}.local 9 typ host"
                f" tcptype active generation 0 ufrag {ufrag} network-id 1"
            )
        candidates.append({"candidate": line, "sdpMid": mid, "sdpMLineIndex": 0, "usernameFragment": ufrag})
    return candidates
