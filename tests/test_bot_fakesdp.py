"""The bot's fake SDP and ICE candidates look like a browser's."""

from __future__ import annotations

import random
import re

from hypothesis import given
from hypothesis import strategies as st

from vchat.bot.fakesdp import ice_ufrag, make_answer, make_candidates, make_offer, media_sections

_LINE = re.compile(r"^[a-z]=\S.*$")


def _lines(sdp: str) -> list[str]:
    assert sdp.endswith("\r\n")
    lines = sdp[:-2].split("\r\n")
    for line in lines:
        assert _LINE.match(line), line
    return lines


def _attribute(lines: list[str], name: str) -> list[str]:
    return [line.split(":", 1)[1] for line in lines if line.startswith(f"a={name}:")]


def _check_description(sdp: str, setup: str) -> list[str]:
    lines = _lines(sdp)
    assert lines[0] == "v=0"
    assert re.fullmatch(r"o=- \d+ 2 IN IP4 127\.0\.0\.1", lines[1])
    assert lines[2:4] == ["s=-", "t=0 0"]
    assert "a=group:BUNDLE 0 1" in lines
    m_lines = [line for line in lines if line.startswith("m=")]
    assert [m.split()[0] for m in m_lines] == ["m=audio", "m=video"]
    for m in m_lines:
        assert m.split()[1:3] == ["9", "UDP/TLS/RTP/SAVPF"]
    ufrags, pwds = _attribute(lines, "ice-ufrag"), _attribute(lines, "ice-pwd")
    assert len(ufrags) == 2 and len(set(ufrags)) == 1 and 4 <= len(ufrags[0]) <= 256
    assert len(pwds) == 2 and len(pwds[0]) >= 22
    fingerprints = _attribute(lines, "fingerprint")
    assert len(fingerprints) == 2
    assert re.fullmatch(r"sha-256 ([0-9A-F]{2}:){31}[0-9A-F]{2}", fingerprints[0])
    assert _attribute(lines, "setup") == [setup, setup]
    assert _attribute(lines, "mid") == ["0", "1"]
    rtpmaps = " ".join(_attribute(lines, "rtpmap"))
    assert "opus/48000/2" in rtpmaps and "VP8/90000" in rtpmaps
    # every payload type of every m-line has its rtpmap (static ones like PCMU included)
    for section in media_sections(sdp):
        mapped = {int(value.split()[0]) for value in _attribute(lines, "rtpmap")}
        assert set(section.payload_types) <= mapped
    return lines


def test_offer_shape() -> None:
    offer = make_offer(random.Random(1))
    lines = _check_description(offer, "actpass")
    assert "a=ice-options:trickle" in lines
    assert any(line.startswith("a=ssrc-group:FID ") for line in lines)
    assert "H264/90000" in offer and "AV1/90000" in offer


def test_answer_mirrors_the_offer() -> None:
    rng = random.Random(2)
    offer = make_offer(rng)
    answer = make_answer(rng, offer)
    _check_description(answer, "active")
    assert ice_ufrag(answer) != ice_ufrag(offer)
    offered = media_sections(offer)
    answered = media_sections(answer)
    assert [(s.kind, s.mid) for s in answered] == [(s.kind, s.mid) for s in offered]
    for mine, theirs in zip(answered, offered, strict=True):
        assert set(mine.payload_types) <= set(theirs.payload_types)
    assert len(answered[1].payload_types) < len(offered[1].payload_types)


def test_candidates_are_browser_json() -> None:
    rng = random.Random(3)
    offer = make_offer(rng)
    candidates = make_candidates(rng, offer, 4)
    assert len(candidates) == 4
    for candidate in candidates:
        assert set(candidate) == {"candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"}
        assert candidate["sdpMid"] == "0" and candidate["sdpMLineIndex"] == 0
        assert candidate["usernameFragment"] == ice_ufrag(offer)
        fields = candidate["candidate"].split()
        assert fields[0].startswith("candidate:") and fields[1] == "1" and fields[2] in ("udp", "tcp")
        assert int(fields[3]) > 0 and 0 < int(fields[5]) < 65536 and fields[6] == "typ"
        assert fields[7] in ("host", "srflx")
        assert f"ufrag {ice_ufrag(offer)}" in candidate["candidate"]
    assert {c["candidate"].split()[7] for c in candidates} == {"host", "srflx"}


def test_same_seed_same_offer() -> None:
    assert make_offer(random.Random(9)) == make_offer(random.Random(9))
    assert make_offer(random.Random(9)) != make_offer(random.Random(10))


@given(st.integers(min_value=0, max_value=2**32))
def test_any_seed_gives_a_well_formed_exchange(seed: int) -> None:
    rng = random.Random(seed)
    offer = make_offer(rng)
    _check_description(offer, "actpass")
    _check_description(make_answer(rng, offer), "active")


def test_media_sections_without_mid_use_the_index() -> None:
    sdp = "v=0\r\nm=audio 9 RTP/AVP 0\r\nm=video 9 RTP/AVP 96\r\n"
    assert [(s.kind, s.mid, s.payload_types) for s in media_sections(sdp)] == [
        ("audio", "0", (0,)),
        ("video", "1", (96,)),
    ]
    assert ice_ufrag(sdp) is None
