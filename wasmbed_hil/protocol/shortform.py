"""The two messages on every heartbeat's path, encoded and recognised by hand.

A heartbeat and its acknowledgement are most of what a gateway and a device exchange: a
gateway of 1,000 devices at 1 Hz handles 1,000 of each a second. Through the catalogue's
codec (messages.py) each one costs a generic CBOR decoding, a check of every field against its
kind and the objects in between; timed inside the gateway at 1,000 devices, decoding a
heartbeat took about 22 µs (median per call) that way, and 8-11 µs with `heartbeat` below
(benchmarks/README.md, "The heartbeat's short form").

So a session first offers each frame to the recogniser of what it receives most
(`Session.receive_data`): `heartbeat` at the gateway, `heartbeat_ack` at the device. A
recogniser accepts only the plainest envelope of its message (no apps, integers in any of
CBOR's widths, nothing else) and returns what `decode_envelope` returns for those bytes;
everything else, including any byte it does not expect, is None and takes the full decoding,
which accepts or refuses it as before. So the recognisers change how fast a frame is decoded,
never whether it is accepted: tests/test_protocol_shortform.py holds them to decode_envelope
on every encoding of these messages and on corrupted ones.

The encoders (`heartbeat_frame`, `cbor_uint`) are the virtual devices' fast path by the
thousand (bench/virtual/lean.py), byte-identical to `frame(encode_envelope(...))`.
"""

from __future__ import annotations

import re

from .framing import HEADER
from .messages import ENVELOPE_HEAD, Heartbeat, HeartbeatAck

# CBOR of the parts: an array head is 0x80 + its length, a small unsigned integer its value.
# (ENVELOPE_HEAD, [version, message_id, message] up to the id, is the codec's own.)
HEARTBEAT_TAG = bytes((0x84, 0x03))  # [3 (Heartbeat), uptime_ms, memory_free, apps]
NO_APPS = b"\x80"  # apps: []
ACK_BODY = bytes((0x81, 0x18, HeartbeatAck.TAG))  # [35] (HeartbeatAck, no fields)
assert Heartbeat.TAG == 3 and HeartbeatAck.TAG == 35  # what the bytes above spell


def cbor_uint(value: int) -> bytes:
    """CBOR head of an unsigned integer (major type 0) in its shortest form."""
    if value < 0:
        raise ValueError(f"{value} is negative")
    if value < 24:
        return bytes((value,))
    if value < 0x100:
        return bytes((0x18, value))
    if value < 0x10000:
        return b"\x19" + value.to_bytes(2, "big")
    if value < 0x100000000:
        return b"\x1a" + value.to_bytes(4, "big")
    if value < 1 << 64:
        return b"\x1b" + value.to_bytes(8, "big")
    raise ValueError(f"{value} does not fit 64 bits")


def heartbeat_frame(message_id: int, uptime_ms: int, memory_free: int) -> bytes:
    """The frame of Heartbeat(uptime_ms, memory_free, apps=()) with `message_id`, as
    `frame(encode_envelope(message_id, Heartbeat(...)))` encodes it."""
    body = b"".join((ENVELOPE_HEAD, cbor_uint(message_id), HEARTBEAT_TAG, cbor_uint(uptime_ms),
                     cbor_uint(memory_free), NO_APPS))
    return len(body).to_bytes(HEADER, "big") + body


# An unsigned integer in any of CBOR's widths (its head, then 0, 1, 2, 4 or 8 bytes), and one
# that fits a message id (u32: not the 8-byte width).
_UINT = rb"([\x00-\x17]|\x18.|\x19..|\x1a....|\x1b........)"
_UINT32 = rb"([\x00-\x17]|\x18.|\x19..|\x1a....)"
# 83 00 <message_id> 84 03 <uptime_ms> <memory_free> 80: [0, id, [3, uptime, free, []]]
_HEARTBEAT = re.compile(
    re.escape(ENVELOPE_HEAD) + _UINT32 + re.escape(HEARTBEAT_TAG) + _UINT + _UINT
    + re.escape(NO_APPS), re.DOTALL)


def heartbeat(payload: bytes) -> tuple[int, Heartbeat] | None:
    """(message_id, Heartbeat) when `payload` (a frame's envelope) is a Heartbeat with no apps,
    as decode_envelope decodes it; None for anything else (the full decoding's to judge)."""
    match = _HEARTBEAT.fullmatch(payload)
    if match is None:
        return None
    # each integer: its head alone (0-23), or the head and its value's bytes, big-endian
    i, u, f = match.groups()
    return (i[0] if len(i) == 1 else int.from_bytes(i[1:], "big"),
            Heartbeat(u[0] if len(u) == 1 else int.from_bytes(u[1:], "big"),
                      f[0] if len(f) == 1 else int.from_bytes(f[1:], "big"), ()))


# The head byte of a message id and the smallest value that form may hold (shortest form).
_ID_WIDTHS = {0x18: (1, 24), 0x19: (2, 0x100), 0x1A: (4, 0x10000)}
_ACK = HeartbeatAck()


def ack_id(payload: bytes) -> int | None:
    """The message id when `payload` (a frame's envelope) is a HeartbeatAck in the shortest
    encoding, as the gateway sends it; None for anything else, which then takes the full
    decoding (so this only ever accepts what decode_envelope accepts)."""
    if len(payload) < 6 or payload[:2] != ENVELOPE_HEAD or payload[-3:] != ACK_BODY:
        return None
    head, size = payload[2], len(payload) - 5  # bytes of the message id, head included
    if head < 24:
        return head if size == 1 else None
    width, least = _ID_WIDTHS.get(head, (0, 0))
    if not width or size != 1 + width:
        return None
    value = int.from_bytes(payload[3:3 + width], "big")
    return value if value >= least else None


def heartbeat_ack(payload: bytes) -> tuple[int, HeartbeatAck] | None:
    """(message_id, HeartbeatAck()) when `payload` is one in the shortest encoding (ack_id),
    as decode_envelope decodes it; None for anything else."""
    message_id = ack_id(payload)
    return None if message_id is None else (message_id, _ACK)
