"""The message catalogue and the envelope codec.

Envelope: CBOR array `[version, message_id, message]`, version 0, message_id a u32.
Message: CBOR array `[tag, fields...]`, fields in the order declared below.
Tags 0..31 travel device -> gateway (0, Error, travels both ways); 32..63 gateway -> device.
docs/protocol.md explains each message; protocol.cddl is the same catalogue as a schema.
"""

from __future__ import annotations

import functools
import io
import re
from dataclasses import dataclass
from enum import Enum as _Enum
from typing import Any, ClassVar

import cbor2

from .fields import (
    Bool,
    Bytes,
    Enum,
    FieldError,
    ListOf,
    Number,
    Optional,
    Struct,
    Text,
    UInt,
    decode_fields,
    encode_fields,
    field,
    kinds,
    show_int,
)
from .types import AppState, ErrorCode, Outcome

PROTOCOL_VERSION = 0
DEVICE_ID_LEN = 16
DIGEST_LEN = 32
NONCE_LEN = 32
MAX_MESSAGE_ID = 0xFFFFFFFF
# Size limits of individual fields (the frame limit bounds everything else).
MAX_APP_ID = 64
MAX_NAME = 128
MAX_ENTRY = 64
MAX_REASON = 256
MAX_ARGS = 16
MAX_APPS = 64
MAX_LOG = 4096
MAX_KEY = 512
MAX_SIGNATURE = 160
MAX_CHUNK = 16 * 1024 * 1024
ENROLL_CONTEXT = b"wasmbed-enroll-v1\x00"


class Direction(_Enum):
    DEVICE_TO_GATEWAY = "device->gateway"
    GATEWAY_TO_DEVICE = "gateway->device"
    BOTH = "both"


class Phase(_Enum):
    """When in a connection a message may travel (session.py derives its tables from it)."""

    HANDSHAKE = "handshake"  # before the session is established: session.py says which state
    ESTABLISHED = "established"  # only once established, and leaves it established
    ANY = "any"  # in every state but closed, and closes the session (Error)


class ProtocolError(Exception):
    """Bytes or a message that violate the protocol; `code` is the ErrorCode to report."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(f"{code.name}: {reason}")
        self.code = code
        self.reason = reason


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What a device is and what it can take. Sent in Hello and on request."""

    architecture: str = field(Text(32, 1))  # "cortex-m3", "x86_64"...
    runtime: str = field(Text(32, 1))  # "wasmtime", "wasm3", "wamr"
    firmware: str = field(Text(64))  # firmware version string
    memory_total: int = field(UInt())  # bytes of RAM for applications
    memory_free: int = field(UInt())
    max_module_size: int = field(UInt(32))  # largest module it accepts, bytes
    max_frame_size: int = field(UInt(32))  # largest frame it accepts, bytes (>= 1024)
    max_apps: int = field(UInt(16))  # how many applications it can hold
    window: int = field(UInt(16))  # deploy chunks it accepts in flight (>= 1)


@dataclass(frozen=True, slots=True)
class Limits:
    """Runtime limits of one application (upstream defaults: 1 MiB, 1000 ms)."""

    memory_bytes: int = field(UInt(32), default=1 << 20)
    fuel: int = field(UInt(), default=50_000_000)  # instruction budget; 0 = no fuel metering
    timeout_ms: int = field(UInt(32), default=1000)  # wall-clock budget of one run


@dataclass(frozen=True, slots=True)
class AppSummary:
    """One installed application in a heartbeat."""

    app_id: str = field(Text(MAX_APP_ID, 1))
    digest: bytes = field(Bytes(DIGEST_LEN, DIGEST_LEN))
    state: AppState = field(Enum(AppState))


# ----------------------------------------------------------------------------- messages


class Message:
    """Base of every message. Subclasses declare TAG, DIRECTION, PHASE and fields."""

    TAG: ClassVar[int]
    DIRECTION: ClassVar[Direction]
    PHASE: ClassVar[Phase]
    REPLY_TO: ClassVar[tuple[str, ...]] = ()  # names of the requests whose message_id it copies

    def to_cbor_obj(self) -> list[Any]:
        return [self.TAG, *encode_fields(self)]


@dataclass(frozen=True, slots=True)
class Error(Message):
    """A fatal protocol error; the sender closes the connection after it."""

    TAG = 0
    DIRECTION = Direction.BOTH
    PHASE = Phase.ANY
    code: ErrorCode = field(Enum(ErrorCode))
    reason: str = field(Text(MAX_REASON))


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """First message on every connection. device_id is null until the device is enrolled."""

    TAG = 1
    DIRECTION = Direction.DEVICE_TO_GATEWAY
    PHASE = Phase.HANDSHAKE
    device_id: bytes | None = field(Optional(Bytes(DEVICE_ID_LEN, DEVICE_ID_LEN)))
    info: DeviceInfo = field(Struct(DeviceInfo))


@dataclass(frozen=True, slots=True)
class EnrollProof(Message):
    """Answer to EnrollChallenge: the public key and a signature of ENROLL_CONTEXT + nonce."""

    TAG = 2
    DIRECTION = Direction.DEVICE_TO_GATEWAY
    PHASE = Phase.HANDSHAKE
    REPLY_TO = ("EnrollChallenge",)
    public_key: bytes = field(Bytes(MAX_KEY))  # SubjectPublicKeyInfo, DER
    signature: bytes = field(Bytes(MAX_SIGNATURE))


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    TAG = 3
    DIRECTION = Direction.DEVICE_TO_GATEWAY
    PHASE = Phase.ESTABLISHED
    uptime_ms: int = field(UInt())
    memory_free: int = field(UInt())
    apps: tuple[AppSummary, ...] = field(ListOf(Struct(AppSummary), MAX_APPS))


@dataclass(frozen=True, slots=True)
class DeviceInfoReport(Message):
    TAG = 4
    DIRECTION = Direction.DEVICE_TO_GATEWAY
    PHASE = Phase.ESTABLISHED
    REPLY_TO = ("DeviceInfoRequest",)
    info: DeviceInfo = field(Struct(DeviceInfo))


@dataclass(frozen=True, slots=True)
class DeployReady(Message):
    """Answer to DeployBegin: the device holds `offset` bytes of that digest already."""

    TAG = 5
    DIRECTION = Direction.DEVICE_TO_GATEWAY
    PHASE = Phase.ESTABLISHED
    REPLY_TO = ("DeployBegin",)
    app_id: str = field(Text(MAX_APP_ID, 1))
    offset: int = field(UInt(32))


@dataclass(frozen=True, slots=True)
class ChunkAck(Message):
    TAG = 6
    DIRECTION = Direction.DEVICE_TO_GATEWAY
    PHASE = Phase.ESTABLISHED
    REPLY_TO = ("DeployChunk",)
    app_id: str = field(Text(MAX_APP_ID, 1))
    next_offset: int = field(UInt(32))


@dataclass(frozen=True, slots=True)
class DeployAck(Message):
    """End of a deployment: code 0 installed, else the ErrorCode that refused it."""

    TAG = 7
    DIRECTION = Direction.DEVICE_TO_GATEWAY
    PHASE = Phase.ESTABLISHED
    REPLY_TO = ("DeployBegin",)
    app_id: str = field(Text(MAX_APP_ID, 1))
    code: int = field(UInt(16))
    reason: str = field(Text(MAX_REASON))


@dataclass(frozen=True, slots=True)
class StartAck(Message):
    TAG = 8
    DIRECTION = Direction.DEVICE_TO_GATEWAY
    PHASE = Phase.ESTABLISHED
    REPLY_TO = ("StartApp",)
    app_id: str = field(Text(MAX_APP_ID, 1))
    run_id: int = field(UInt(32))
    code: int = field(UInt(16))
    reason: str = field(Text(MAX_REASON))


@dataclass(frozen=True, slots=True)
class StopAck(Message):
    TAG = 9
    DIRECTION = Direction.DEVICE_TO_GATEWAY
    PHASE = Phase.ESTABLISHED
    REPLY_TO = ("StopApp",)
    app_id: str = field(Text(MAX_APP_ID, 1))
    code: int = field(UInt(16))
    reason: str = field(Text(MAX_REASON))


@dataclass(frozen=True, slots=True)
class ExecutionResult(Message):
    """How one run ended. Copies the StartApp's message_id."""

    TAG = 10
    DIRECTION = Direction.DEVICE_TO_GATEWAY
    PHASE = Phase.ESTABLISHED
    REPLY_TO = ("StartApp",)
    app_id: str = field(Text(MAX_APP_ID, 1))
    run_id: int = field(UInt(32))
    outcome: Outcome = field(Enum(Outcome))
    values: tuple[int | float, ...] = field(ListOf(Number(), MAX_ARGS))
    log: bytes = field(Bytes(MAX_LOG))
    fuel_used: int = field(UInt())
    duration_us: int = field(UInt())
    detail: str = field(Text(MAX_REASON))


@dataclass(frozen=True, slots=True)
class Welcome(Message):
    """The session is established; copies the Hello's (or EnrollProof's) message_id."""

    TAG = 32
    DIRECTION = Direction.GATEWAY_TO_DEVICE
    PHASE = Phase.HANDSHAKE
    REPLY_TO = ("Hello", "EnrollProof")
    device_id: bytes = field(Bytes(DEVICE_ID_LEN, DEVICE_ID_LEN))
    heartbeat_interval_ms: int = field(UInt(32))
    max_frame_size: int = field(UInt(32))  # the gateway's inbound limit
    enrolled_now: bool = field(Bool())  # True when this connection performed the enrollment


@dataclass(frozen=True, slots=True)
class EnrollChallenge(Message):
    TAG = 33
    DIRECTION = Direction.GATEWAY_TO_DEVICE
    PHASE = Phase.HANDSHAKE
    REPLY_TO = ("Hello",)
    nonce: bytes = field(Bytes(NONCE_LEN, NONCE_LEN))


@dataclass(frozen=True, slots=True)
class EnrollReject(Message):
    """Enrollment refused; the gateway closes the connection after it."""

    TAG = 34
    DIRECTION = Direction.GATEWAY_TO_DEVICE
    PHASE = Phase.HANDSHAKE
    REPLY_TO = ("Hello", "EnrollProof")
    code: ErrorCode = field(Enum(ErrorCode))
    reason: str = field(Text(MAX_REASON))


@dataclass(frozen=True, slots=True)
class HeartbeatAck(Message):
    TAG = 35
    DIRECTION = Direction.GATEWAY_TO_DEVICE
    PHASE = Phase.ESTABLISHED
    REPLY_TO = ("Heartbeat",)


@dataclass(frozen=True, slots=True)
class DeviceInfoRequest(Message):
    TAG = 36
    DIRECTION = Direction.GATEWAY_TO_DEVICE
    PHASE = Phase.ESTABLISHED


@dataclass(frozen=True, slots=True)
class DeployBegin(Message):
    """Start (or resume) the transfer of a module identified by its SHA-256 digest."""

    TAG = 37
    DIRECTION = Direction.GATEWAY_TO_DEVICE
    PHASE = Phase.ESTABLISHED
    app_id: str = field(Text(MAX_APP_ID, 1))
    name: str = field(Text(MAX_NAME))
    digest: bytes = field(Bytes(DIGEST_LEN, DIGEST_LEN))
    size: int = field(UInt(32))
    chunk_size: int = field(UInt(32))
    limits: Limits = field(Struct(Limits))


@dataclass(frozen=True, slots=True)
class DeployChunk(Message):
    TAG = 38
    DIRECTION = Direction.GATEWAY_TO_DEVICE
    PHASE = Phase.ESTABLISHED
    app_id: str = field(Text(MAX_APP_ID, 1))
    offset: int = field(UInt(32))
    data: bytes = field(Bytes(MAX_CHUNK))


@dataclass(frozen=True, slots=True)
class StartApp(Message):
    TAG = 39
    DIRECTION = Direction.GATEWAY_TO_DEVICE
    PHASE = Phase.ESTABLISHED
    app_id: str = field(Text(MAX_APP_ID, 1))
    run_id: int = field(UInt(32))
    entry: str = field(Text(MAX_ENTRY, 1))
    args: tuple[int | float, ...] = field(ListOf(Number(), MAX_ARGS))


@dataclass(frozen=True, slots=True)
class StopApp(Message):
    """Stop the application's run in progress; `remove` also uninstalls it."""

    TAG = 40
    DIRECTION = Direction.GATEWAY_TO_DEVICE
    PHASE = Phase.ESTABLISHED
    app_id: str = field(Text(MAX_APP_ID, 1))
    remove: bool = field(Bool())


@dataclass(frozen=True, slots=True)
class ResultAck(Message):
    """The gateway holds the run's result durably; copies the ExecutionResult's message_id.

    The device keeps each result until its ResultAck arrives and sends the unacknowledged ones
    again after the next Welcome (docs/protocol.md section 11).
    """

    TAG = 41
    DIRECTION = Direction.GATEWAY_TO_DEVICE
    PHASE = Phase.ESTABLISHED
    REPLY_TO = ("ExecutionResult",)
    app_id: str = field(Text(MAX_APP_ID, 1))
    run_id: int = field(UInt(32))


CATALOGUE: dict[int, type[Message]] = {
    cls.TAG: cls
    for cls in (
        Error,
        Hello,
        EnrollProof,
        Heartbeat,
        DeviceInfoReport,
        DeployReady,
        ChunkAck,
        DeployAck,
        StartAck,
        StopAck,
        ExecutionResult,
        Welcome,
        EnrollChallenge,
        EnrollReject,
        HeartbeatAck,
        DeviceInfoRequest,
        DeployBegin,
        DeployChunk,
        StartApp,
        StopApp,
        ResultAck,
    )
}


# ----------------------------------------------------------------------------- envelope


@dataclass(frozen=True, slots=True)
class Envelope:
    message_id: int
    message: Message


@functools.cache
def fieldless_body(cls: type[Message]) -> bytes | None:
    """The CBOR of `[TAG]` when `cls` has no fields (every message of it is that body, always
    valid), else None."""
    return None if kinds(cls) else cbor2.dumps([cls.TAG])


# CBOR of an envelope's start: an array of three items (major type 4, count 3), the version.
# The items of an array follow its head one after the other, each encoded on its own.
ENVELOPE_HEAD = bytes([0x80 | 3]) + cbor2.dumps(PROTOCOL_VERSION)


def encode_envelope(message_id: int, message: Message, body: list[Any] | None = None) -> bytes:
    """CBOR bytes of `[0, message_id, message]` (no length prefix); `body`, when given, is
    `message.to_cbor_obj()` already made by the caller."""
    if not 0 <= message_id <= MAX_MESSAGE_ID:
        raise ValueError(f"message_id {message_id} is not a u32")
    fixed = fieldless_body(type(message))
    if fixed is not None:  # (a heartbeat's acknowledgement: on every heartbeat's path)
        return ENVELOPE_HEAD + cbor2.dumps(message_id) + fixed
    return cbor2.dumps([PROTOCOL_VERSION, message_id,
                        message.to_cbor_obj() if body is None else body])


_BIGNUM_TAGS = (2, 3)


# The initial bytes of a tag (major type 6, argument in the head or 1-8 bytes after it).
_TAG_HEAD = re.compile(rb"[\xc0-\xdb]")


def find_tag(data: bytes) -> tuple[int, int] | None:
    """(offset, number) of the first CBOR tag in `data` other than a bignum's, or None.

    The protocol has no CBOR tags (section 3 of docs/protocol.md), but a generic decoder
    gives some of them meaning and drops them (cbor2: 28 shareable, 256 string references,
    55799 self-described CBOR), so a tagged envelope, message or field would pass as if
    untagged. Only bignums (tags 2 and 3, an integer's other form) are kept, as documented
    leniency. The walk needs no well-formed input: where the bytes stop making sense it stops
    with None and the CBOR decoder reports them. It is iterative: each step consumes a byte
    or closes a level, so it ends within the length of `data`.
    """
    if _TAG_HEAD.search(data) is None:  # no byte could start a tag: skip the walk (hot path)
        return None
    pos, end = 0, len(data)
    levels = [1]  # items still to read at each open level; -1: until a break
    while levels and pos < end:
        if levels[-1] == 0:
            levels.pop()
            continue
        head = data[pos]
        start, pos = pos, pos + 1
        if head == 0xFF:  # break: ends an indefinite level
            if levels[-1] != -1:
                return None
            levels.pop()
            continue
        if levels[-1] > 0:
            levels[-1] -= 1
        major, info = head >> 5, head & 0x1F
        arg: int | None
        if info < 24:
            arg = info
        elif info <= 27:
            size = 1 << (info - 24)
            arg = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        elif info == 31 and major in (2, 3, 4, 5):
            arg = None  # indefinite length
        else:
            return None  # reserved, or a break where none can be
        if major == 6:
            if arg not in _BIGNUM_TAGS:
                return start, int(arg or 0)
            levels.append(1)  # the tagged item is part of this one
        elif major in (2, 3):
            if arg is None:
                levels.append(-1)  # definite chunks until a break
            else:
                pos += arg
        elif major in (4, 5):
            count = -1 if arg is None else arg * (2 if major == 5 else 1)
            if count:
                levels.append(count)
    return None


_MESSAGE_ID = UInt(32)  # made once: decode_envelope is on every message's path

# The heads of the CBOR tags by which one item refers to another (25 and 256: string
# references; 28 and 29: shared values), in every width a head may take. An item decoded from
# them can be far larger re-encoded than the bytes it came from (a reference repeated), so
# _decode_cbor's fast path, which re-encodes, never takes such bytes.
_REFERENCE_TAG = re.compile(
    rb"\xd8[\x19\x1c\x1d]|\xd9(?:\x00[\x19\x1c\x1d]|\x01\x00)"
    rb"|\xda\x00\x00(?:\x00[\x19\x1c\x1d]|\x01\x00)"
    rb"|\xdb\x00\x00\x00\x00\x00\x00(?:\x00[\x19\x1c\x1d]|\x01\x00)"
)


# Larger envelopes (deployment chunks) are walked: the walk steps over a byte string's contents
# in one step, while the search for reference tags reads every byte (about 4 ns each, 60 µs
# for a 16 KiB chunk against the walk's 3 µs).
_RE_ENCODED_MAX = 2048


def _tag_error(tagged: tuple[int, int]) -> ProtocolError:
    offset, number = tagged
    return ProtocolError(
        ErrorCode.MALFORMED, f"CBOR tag {show_int(number)} at byte {offset}: no tags allowed")


def _decode_cbor(data: bytes) -> tuple[Any, bool]:
    """The one CBOR item `data` holds, and whether it was proven to hold no CBOR tag that
    decoding dropped. Raises ProtocolError (a tag found, not CBOR, trailing bytes).

    The fast path decodes, re-encodes and compares: bytes equal to the item's own encoding
    hold no trailing bytes and no tag that cbor2 drops or turns into a plain value (28, 55799
    and the others; cbor2 never encodes a plain value with a tag but a bignum, tags 2 and 3,
    allowed). Any other tag decodes to an object no field accepts (a CBORTag, a datetime...),
    and decode_envelope reports it as a tag when validation refuses it. Every other input
    (another encoding of the same item, reference tags, a decoding error) takes the slow
    path: find_tag's walk first, then the decoder; so do envelopes over _RE_ENCODED_MAX
    bytes. (Before this path, every envelope holding a byte that could start a tag was
    walked, and a heartbeat's three integers, spread over 32 bits, hold one three times in
    four: in a tight loop the walk was a third of a heartbeat's and its ack's bytecodes.)"""
    if len(data) <= _RE_ENCODED_MAX and _REFERENCE_TAG.search(data) is None:
        try:
            obj = cbor2.loads(data)
            if cbor2.dumps(obj) == data:
                return obj, False
        except Exception:  # the slow path reports it
            pass
    tagged = find_tag(data)
    if tagged is not None:
        raise _tag_error(tagged)
    try:
        stream = io.BytesIO(data)
        obj = cbor2.CBORDecoder(stream).decode()
        if stream.tell() != len(data):
            raise ProtocolError(ErrorCode.MALFORMED, f"{len(data) - stream.tell()} trailing bytes")
    except ProtocolError:
        raise
    except Exception as exc:  # cbor2 raises several types on bad input
        raise ProtocolError(ErrorCode.MALFORMED, f"not CBOR: {exc}") from None
    return obj, True


def decode_envelope(data: bytes) -> Envelope:
    """Decode and validate one envelope. Raises ProtocolError, never anything else."""
    return Envelope(*decode_envelope_items(data))


def decode_envelope_items(data: bytes) -> tuple[int, Message]:
    """decode_envelope's (message_id, message), without the Envelope (the session's path)."""
    obj, walked = _decode_cbor(data)
    try:
        return _envelope_items(obj)
    except ProtocolError:
        # A tag cbor2 kept as an object (a CBORTag, a datetime...) fails validation: it is
        # reported as the tag it is, as the walk would have (the walk finds it again).
        tagged = None if walked else find_tag(data)
        if tagged is not None:
            raise _tag_error(tagged) from None
        raise


def _envelope_items(obj: Any) -> tuple[int, Message]:
    if not isinstance(obj, list) or len(obj) != 3:
        raise ProtocolError(ErrorCode.MALFORMED, "envelope must be [version, message_id, message]")
    version, message_id, body = obj
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError(ErrorCode.MALFORMED, "envelope version must be an integer")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION, f"version {show_int(version)}, expected 0"
        )
    if type(message_id) is not int or not 0 <= message_id <= MAX_MESSAGE_ID:
        try:  # (a plain int in range, the hot path, needs no call)
            message_id = _MESSAGE_ID.decode(message_id, "message_id")
        except FieldError as exc:
            raise ProtocolError(ErrorCode.MALFORMED, str(exc)) from None
    return message_id, decode_message(body)


def decode_message(body: Any) -> Message:
    if not isinstance(body, list) or not body:
        raise ProtocolError(ErrorCode.MALFORMED, "message must be a non-empty array [tag, ...]")
    tag = body[0]
    if not isinstance(tag, int) or isinstance(tag, bool):
        raise ProtocolError(ErrorCode.MALFORMED, "message tag must be an integer")
    cls = CATALOGUE.get(tag)
    if cls is None:
        raise ProtocolError(ErrorCode.UNKNOWN_MESSAGE, f"unknown message tag {show_int(tag)}")
    try:
        return decode_fields(cls, body[1:], cls.__name__)
    except FieldError as exc:
        raise ProtocolError(ErrorCode.MALFORMED, str(exc)) from None


def message_fields(message: Message) -> dict[str, Any]:
    """The message's fields as a plain dict (for traces and reports)."""
    from dataclasses import asdict

    return asdict(message)  # type: ignore[call-overload]
