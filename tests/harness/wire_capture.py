"""What the caller's side of a SIP call sees on the wire: a capture of loopback's UDP (a raw
`AF_PACKET` socket, so root only) that times, per SIP Call-ID, the INVITE leaving the caller, the
200 OK reaching it and the first RTP packet from livekit-sip that carries sound.

The first word is taken from the audio itself, not from any service's log: livekit-sip may send
silence before the agent speaks, so a packet counts once its decoded samples reach `LOUD`.
Times are the kernel's receive timestamps (`SO_TIMESTAMPNS`, wall clock), the clock the services'
logs use, so they sit on the same timeline as `tests.harness.ring_timeline`'s milestones.
"""

from __future__ import annotations

import ctypes
import re
import socket
import struct
import threading
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_ATTACH_FILTER = 26  # Linux; the socket module does not name it
LOUD = 1000  # of 32767: the fake TTS's tone peaks near 6,500, silence decodes to ±8
PCMU, PCMA = 0, 8

_CALL_ID = re.compile(rb"^(?:Call-ID|i)\s*:\s*(\S+)", re.IGNORECASE | re.MULTILINE)
_CSEQ = re.compile(rb"^CSeq\s*:\s*\d+\s+(\w+)", re.IGNORECASE | re.MULTILINE)
_MEDIA_PORT = re.compile(rb"^m=audio (\d+) ", re.MULTILINE)


def _alaw_sample(byte: int) -> int:
    a = byte ^ 0x55
    exponent = (a & 0x70) >> 4
    mantissa = a & 0x0F
    value = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return value if a & 0x80 else -value


def _ulaw_sample(byte: int) -> int:
    u = ~byte & 0xFF
    exponent = (u >> 4) & 0x07
    value = (((u & 0x0F) << 3) + 0x84) << exponent
    value -= 0x84
    return -value if u & 0x80 else value


# Peak magnitude of each G.711 byte, per payload type: one table lookup per sample.
_MAGNITUDE = {
    PCMA: bytes(min(abs(_alaw_sample(b)) >> 7, 255) for b in range(256)),
    PCMU: bytes(min(abs(_ulaw_sample(b)) >> 7, 255) for b in range(256)),
}


def g711_peak(payload: bytes, payload_type: int) -> int | None:
    """The loudest sample of a G.711 payload (0..32767, to 1/256 of the range); None for a
    payload type that is not G.711."""
    table = _MAGNITUDE.get(payload_type)
    if table is None or not payload:
        return None
    return max(payload.translate(table)) << 7


@dataclass(frozen=True)
class SipMessage:
    call_id: str
    method: str  # of the CSeq line
    request: str | None  # "INVITE", "ACK"... for a request; None for a response
    status: int | None  # for a response
    media_port: int | None  # the SDP's audio port, if the message carries one


def parse_sip(payload: bytes) -> SipMessage | None:
    """The parts of a SIP message the capture needs; None for anything else."""
    head = payload[:16]
    if head.startswith(b"SIP/2.0 "):
        try:
            status: int | None = int(payload[8:11])
        except ValueError:
            return None
        request = None
    elif b" sip:" in payload[:64] and payload.split(b" ", 1)[0].isalpha():
        status, request = None, payload.split(b" ", 1)[0].decode()
    else:
        return None
    call_id, cseq = _CALL_ID.search(payload), _CSEQ.search(payload)
    if call_id is None or cseq is None:
        return None
    media = _MEDIA_PORT.search(payload)
    return SipMessage(
        call_id.group(1).decode(),
        cseq.group(1).decode(),
        request,
        status,
        int(media.group(1)) if media else None,
    )


def rtp_payload(udp: bytes) -> tuple[int, bytes] | None:
    """(payload type, payload) of an RTP packet (version 2, no extension handling needed for
    G.711 from livekit-sip beyond skipping CSRCs and an extension); None if not RTP."""
    if len(udp) < 12 or udp[0] >> 6 != 2:
        return None
    payload_type = udp[1] & 0x7F
    offset = 12 + 4 * (udp[0] & 0x0F)
    if udp[0] & 0x10 and len(udp) >= offset + 4:
        offset += 4 + 4 * struct.unpack_from("!H", udp, offset + 2)[0]
    return payload_type, udp[offset:]


@dataclass
class CallOnWire:
    """One call as its caller saw it: wall times (epoch seconds) of each step."""

    call_id: str
    invite: float | None = None
    answered: float | None = None
    first_word: float | None = None
    media_port: int | None = None  # livekit-sip's RTP port for this call


@dataclass
class WireLog:
    """The pure bookkeeping of the capture: feed it UDP datagrams in order, read `calls`."""

    sip_port: int  # livekit-sip's SIP port: what is sent to it comes from the caller
    calls: dict[str, CallOnWire] = field(default_factory=dict)
    _by_media: dict[int, str] = field(default_factory=dict)
    _loud_unmapped: dict[int, float] = field(default_factory=dict)

    def datagram(self, ts: float, src_port: int, dst_port: int, udp: bytes) -> None:
        if src_port == self.sip_port or dst_port == self.sip_port:
            if (msg := parse_sip(udp)) is not None:
                self._sip(ts, msg, to_server=dst_port == self.sip_port)
            return
        call_id = self._by_media.get(src_port)
        if call_id is not None and self.calls[call_id].first_word is not None:
            return  # the common case, kept cheap: this call's first word is known already
        rtp = rtp_payload(udp)
        if rtp is None:
            return
        peak = g711_peak(rtp[1], rtp[0])
        if peak is None or peak < LOUD:
            return
        if call_id is None:
            self._loud_unmapped.setdefault(src_port, ts)
        else:
            self.calls[call_id].first_word = ts

    def _sip(self, ts: float, msg: SipMessage, *, to_server: bool) -> None:
        call = self.calls.setdefault(msg.call_id, CallOnWire(msg.call_id))
        if to_server and msg.request == "INVITE" and call.invite is None:
            call.invite = ts
        if to_server or msg.method != "INVITE" or msg.status is None:
            return
        if msg.media_port is not None and call.media_port is None:
            call.media_port = msg.media_port
            self._by_media[msg.media_port] = msg.call_id  # a port reused later maps anew
            early = self._loud_unmapped.pop(msg.media_port, None)
            if early is not None and call.invite is not None and early >= call.invite:
                call.first_word = early
        if 200 <= msg.status < 300 and call.answered is None:
            call.answered = ts


def _udp_of_frame(frame: bytes) -> tuple[int, int, bytes] | None:
    """(source port, destination port, payload) of an Ethernet/IPv4/UDP frame on loopback."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    if ip[9] != socket.IPPROTO_UDP or struct.unpack_from("!H", ip, 6)[0] & 0x3FFF:
        return None  # not UDP, or a fragment
    udp = ip[(ip[0] & 0x0F) * 4 :]
    src, dst, length = struct.unpack_from("!HHH", udp)
    return src, dst, udp[8:length]


def _udp_only_filter() -> bytes:
    """A classic BPF program (`struct sock_fprog`) keeping IPv4 UDP frames only: loopback carries
    every other test's TCP too, which the capture's thread need not see."""
    program = [
        (0x28, 0, 0, 12),  # ldh [12]: EtherType
        (0x15, 0, 3, 0x0800),  # IPv4, else drop
        (0x30, 0, 0, 23),  # ldb [23]: IP protocol
        (0x15, 0, 1, socket.IPPROTO_UDP),  # UDP, else drop
        (0x06, 0, 0, 0x40000),  # keep the whole frame
        (0x06, 0, 0, 0),  # drop
    ]
    code = b"".join(struct.pack("HBBI", *ins) for ins in program)
    buffer = ctypes.create_string_buffer(code)
    _FILTERS.append(buffer)  # the kernel copies it; kept alive until then regardless
    return struct.pack("HL", len(program), ctypes.addressof(buffer))


_FILTERS: list[ctypes.Array[ctypes.c_char]] = []


class WireCapture:
    """Captures loopback's UDP in a thread while in its `with` block; `log` holds the calls."""

    def __init__(self, sip_port: int, interface: str = "lo") -> None:
        self.log = WireLog(sip_port)
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, _udp_only_filter())
        self._sock.bind((interface, 0))
        self._sock.settimeout(0.2)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wire-capture", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, anc, _flags, addr = self._sock.recvmsg(65535, 64)
            except TimeoutError:
                continue
            if addr[2] == socket.PACKET_OUTGOING:
                continue  # loopback shows each packet twice: keep the incoming copy
            parts = _udp_of_frame(frame)
            if parts is None:
                continue
            ts = next(
                (
                    sec + nsec / 1e9
                    for level, kind, data in anc
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS
                    for sec, nsec in [struct.unpack("qq", data[:16])]
                ),
                None,
            )
            if ts is None:
                continue
            with self._lock:
                self.log.datagram(ts, *parts)

    def calls(self) -> dict[str, CallOnWire]:
        with self._lock:
            return dict(self.log.calls)

    def __enter__(self) -> WireCapture:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
