"""The caller's side of a call on the wire: INVITE, 200 OK and the first audible RTP per Call-ID,
told apart from silence, from other calls' media and from a port reused by a later call."""

from __future__ import annotations

import math
import socket
import struct
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.harness.wire_capture import (
    LOUD,
    PCMA,
    PCMU,
    WireCapture,
    WireLog,
    g711_peak,
    parse_sip,
)

SIP_PORT = 5060
CALLER_PORT = 6000
CALLER_MEDIA = 7000


SEGMENT_ENDS = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def alaw(sample: int) -> int:
    """G.711 A-law encoding of a 16-bit sample (the reference coder's segment search)."""
    value = sample >> 3
    mask = 0xD5 if value >= 0 else 0x55
    if value < 0:
        value = -value - 1
    segment = next((i for i, end in enumerate(SEGMENT_ENDS) if value <= end), 8)
    if segment >= 8:
        return 0x7F ^ mask
    step = 1 if segment < 2 else segment
    return ((segment << 4) | ((value >> step) & 0x0F)) ^ mask


def invite(call_id: str) -> bytes:
    return (
        f"INVITE sip:+918000000001@127.0.0.1:{SIP_PORT} SIP/2.0\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n\r\n"
        f"v=0\r\nm=audio {CALLER_MEDIA} RTP/AVP 8 0\r\n"
    ).encode()


def response(call_id: str, status: int, media_port: int | None, method: str = "INVITE") -> bytes:
    sdp = f"v=0\r\nm=audio {media_port} RTP/AVP 8\r\n" if media_port else ""
    return (f"SIP/2.0 {status} OK\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n\r\n{sdp}").encode()


def rtp(payload: bytes, payload_type: int = PCMA) -> bytes:
    return struct.pack("!BBHII", 0x80, payload_type, 1, 160, 42) + payload


SILENCE = bytes([alaw(0)]) * 160
TONE = bytes(alaw(round(6500 * math.sin(2 * math.pi * i / 18))) for i in range(160))


def answered_call(log: WireLog, call_id: str, media_port: int, t: float) -> None:
    log.datagram(t, CALLER_PORT, SIP_PORT, invite(call_id))
    log.datagram(t + 0.3, SIP_PORT, CALLER_PORT, response(call_id, 200, media_port))


@pytest.mark.unit
def test_sip_messages_name_their_call_method_and_media_port() -> None:
    msg = parse_sip(response("a@h", 200, 30000))
    assert msg is not None
    assert (msg.call_id, msg.method, msg.status, msg.request, msg.media_port) == (
        "a@h",
        "INVITE",
        200,
        None,
        30000,
    )
    req = parse_sip(invite("b@h"))
    assert req is not None
    assert (req.request, req.status, req.call_id) == ("INVITE", None, "b@h")
    assert parse_sip(rtp(TONE)) is None


@pytest.mark.unit
@given(st.integers(-32768, 32767))
def test_g711_peak_is_the_decoded_magnitude_within_a_step(sample: int) -> None:
    """A-law keeps a sample's magnitude within its segment's step (1/16 of it), and the peak is
    read to 1/256 of the range."""
    peak = g711_peak(bytes([alaw(sample)]), PCMA)
    assert peak is not None
    assert abs(peak - abs(sample)) <= abs(sample) // 16 + 128 + 16


@pytest.mark.unit
def test_silence_is_quiet_and_the_tone_loud_and_other_codecs_unknown() -> None:
    assert (g711_peak(SILENCE, PCMA) or 0) < LOUD
    assert (g711_peak(bytes([0xFF]) * 160, PCMU) or 0) < LOUD  # µ-law's silence
    assert (g711_peak(TONE, PCMA) or 0) >= LOUD
    assert g711_peak(TONE, 101) is None


@pytest.mark.unit
def test_the_first_word_is_the_first_loud_packet_from_the_calls_media_port() -> None:
    log = WireLog(SIP_PORT)
    answered_call(log, "a@h", 30000, 100.0)
    answered_call(log, "b@h", 30002, 100.1)
    log.datagram(100.5, 30000, CALLER_MEDIA, rtp(SILENCE))  # livekit-sip's silence
    log.datagram(100.6, CALLER_MEDIA, 30000, rtp(TONE))  # the caller's own voice
    log.datagram(100.7, 30002, CALLER_MEDIA, rtp(TONE))  # the other call's agent
    log.datagram(100.8, 30000, CALLER_MEDIA, rtp(TONE))
    log.datagram(100.9, 30000, CALLER_MEDIA, rtp(TONE))
    a, b = log.calls["a@h"], log.calls["b@h"]
    assert (a.invite, a.answered, a.first_word) == (100.0, 100.3, 100.8)
    assert (b.invite, b.first_word) == (100.1, 100.7)
    assert b.answered == pytest.approx(100.4)


@pytest.mark.unit
def test_a_retransmitted_invite_and_a_provisional_answer_keep_the_first_times() -> None:
    log = WireLog(SIP_PORT)
    log.datagram(1.0, CALLER_PORT, SIP_PORT, invite("a@h"))
    log.datagram(1.5, CALLER_PORT, SIP_PORT, invite("a@h"))
    log.datagram(1.6, SIP_PORT, CALLER_PORT, response("a@h", 180, None))
    log.datagram(2.0, SIP_PORT, CALLER_PORT, response("a@h", 200, 30000))
    log.datagram(2.5, SIP_PORT, CALLER_PORT, response("a@h", 200, 30000))
    log.datagram(3.0, SIP_PORT, CALLER_PORT, response("a@h", 200, None, method="BYE"))
    assert (log.calls["a@h"].invite, log.calls["a@h"].answered) == (1.0, 2.0)


@pytest.mark.unit
def test_a_media_port_reused_by_a_later_call_belongs_to_that_call() -> None:
    log = WireLog(SIP_PORT)
    answered_call(log, "a@h", 30000, 1.0)
    log.datagram(1.5, 30000, CALLER_MEDIA, rtp(TONE))
    answered_call(log, "b@h", 30000, 5.0)
    log.datagram(5.6, 30000, CALLER_MEDIA, rtp(TONE))
    assert log.calls["a@h"].first_word == 1.5
    assert log.calls["b@h"].first_word == 5.6


@pytest.mark.unit
def test_sound_sent_before_the_answer_counts_for_the_call_it_then_belongs_to() -> None:
    log = WireLog(SIP_PORT)
    log.datagram(1.0, CALLER_PORT, SIP_PORT, invite("a@h"))
    log.datagram(1.2, 30000, CALLER_MEDIA, rtp(TONE))
    log.datagram(1.3, SIP_PORT, CALLER_PORT, response("a@h", 200, 30000))
    assert log.calls["a@h"].first_word == 1.2


@pytest.mark.service
def test_the_capture_times_real_datagrams_on_loopback_with_the_wall_clock() -> None:
    """Root only (a raw socket); the harness runs as root, so no skip."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    sip_port = receiver.getsockname()[1]
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media.bind(("127.0.0.1", 0))
    media_port = media.getsockname()[1]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    before = time.time()
    with WireCapture(sip_port) as capture:
        sender.sendto(invite("w@h"), ("127.0.0.1", sip_port))
        receiver.sendto(response("w@h", 200, media_port), sender.getsockname())
        media.sendto(rtp(TONE), sender.getsockname())
        deadline = time.monotonic() + 5
        while capture.calls().get("w@h") is None or capture.calls()["w@h"].first_word is None:
            assert time.monotonic() < deadline, capture.calls()
            time.sleep(0.01)
    call = capture.calls()["w@h"]
    assert call.invite is not None
    assert call.answered is not None
    assert call.first_word is not None
    assert before <= call.invite <= call.answered <= call.first_word <= time.time()
    for s in (receiver, media, sender):
        s.close()
