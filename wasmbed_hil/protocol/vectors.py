"""Protocol test vectors: the byte-exact contract other implementations (the C firmware) are
tested against.

`vectors.json` (next to this file) holds:

- ``valid``: frames every implementation must decode to the stated message and re-encode to
  the same bytes. Each entry is ``{"name", "message", "tag", "message_id", "hex", "decoded"}``;
  ``hex`` is the whole frame including its 4-byte length prefix, ``decoded`` the message's
  fields in JSON form (see `to_json`).
- ``invalid``: frames a receiver must refuse. Each entry names the ``receiver`` ("gateway" or
  "device"), the session ``state`` it is in when the frame arrives (`session_in` says how it
  got there), its ``max_frame_size`` and the expected ``error`` (ErrorCode name and value):
  the receiver queues Error(code) and closes.

JSON form of field values: byte strings are lowercase hex; enums are ``{"name", "value"}``;
records are objects in field order; a WebAssembly value (``Number``) is ``{"int": n}`` or
``{"float": x}`` with x a JSON number or one of "nan", "inf", "-inf".

The file is generated, never edited by hand: ``python -m wasmbed_hil.protocol.vectors``
rewrites it, ``--check`` exits 1 when it differs from what this module builds.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2

from .fields import (
    Bool,
    Bytes,
    Enum,
    Kind,
    ListOf,
    Number,
    Optional,
    Struct,
    Text,
    UInt,
    kinds,
)
from .framing import MIN_FRAME_LIMIT, frame
from .generated import generator_main
from .messages import (
    CATALOGUE,
    ENROLL_CONTEXT,
    MAX_MESSAGE_ID,
    PROTOCOL_VERSION,
    AppSummary,
    ChunkAck,
    DeployAck,
    DeployBegin,
    DeployChunk,
    DeployReady,
    DeviceInfo,
    DeviceInfoReport,
    DeviceInfoRequest,
    EnrollChallenge,
    EnrollProof,
    EnrollReject,
    Error,
    ExecutionResult,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Limits,
    Message,
    ResultAck,
    StartAck,
    StartApp,
    StopAck,
    StopApp,
    Welcome,
    encode_envelope,
)
from .session import DeviceSession, GatewaySession, Session, State
from .types import AppState, ErrorCode, Outcome

VECTORS_PATH = Path(__file__).with_name("vectors.json")
FORMAT = 1

# ----------------------------------------------------------------------------- fixed inputs

# A complete WebAssembly module exporting `main: () -> i32` returning 42 (37 bytes).
MODULE = bytes.fromhex(
    "0061736d01000000"  # magic, version 1
    "010501600001" "7f"  # type section: () -> i32
    "03020100"  # function section: one function of type 0
    "070801046d61696e0000"  # export section: "main" = function 0
    "0a060104" "00412a0b"  # code section: i32.const 42; end
)
MODULE_DIGEST = hashlib.sha256(MODULE).digest()
CHUNK_SIZE = 16

# Enrollment material, fixed so that the file is reproducible. The test suite checks that both
# signatures verify over ENROLL_CONTEXT || NONCE with the given SubjectPublicKeyInfo.
NONCE = hashlib.sha256(b"wasmbed-vectors nonce").digest()
ED25519_SPKI = bytes.fromhex(
    "302a300506032b6570032100fafac110880731082f3587828946afda544b31332a006ba64a0b3cd66c12bf6c"
)
ED25519_SIGNATURE = bytes.fromhex(
    "e6b60c619de1bb5f98d78b42b8ad666ae491789b070a4df39de9224ad5e67825"
    "cc7b018c445c2b6309be5884a1593497d98c6996f8402ab9e0d5c8f4be154101"
)
P256_SPKI = bytes.fromhex(
    "3059301306072a8648ce3d020106082a8648ce3d03010703420004d1783fd462413daffd40d3792fc35afd"
    "4cfca4a463642ab8de8e6a4936e9770a8802e6dafc7c9d5e32e896fad3ea46106e80810eb58630f62ec0a7"
    "7a5eda748d"
)
P256_SIGNATURE = bytes.fromhex(  # ECDSA/SHA-256, DER (RFC 6979 deterministic)
    "30440220460403262069c38763d4ef3824e591e20c3bc5161b350ae0221435eef8164a17"
    "02201cace34748126730dbb748c18482b5367cd302b42c404e36bbcf1a2ff3f09b4f"
)
DEVICE_ID = bytes.fromhex("6a1f3c2e9b8d4f05a7e21c0d33f4b8a9")

U64_MAX = (1 << 64) - 1
I64_MIN = -(1 << 63)

SMALL_DEVICE = DeviceInfo(
    architecture="cortex-m4",
    runtime="wamr",
    firmware="wasmbed-fw 0.1.0",
    memory_total=196_608,
    memory_free=131_072,
    max_module_size=65_536,
    max_frame_size=MIN_FRAME_LIMIT,
    max_apps=4,
    window=1,
)
BIG_DEVICE = DeviceInfo(
    architecture="x86_64",
    runtime="wasmtime",
    firmware="",
    memory_total=U64_MAX,
    memory_free=0,
    max_module_size=0xFFFFFFFF,
    max_frame_size=16 * 1024 * 1024,
    max_apps=0xFFFF,
    window=0xFFFF,
)


# ----------------------------------------------------------------------------- JSON form


def to_json(value: Any, kind: Kind) -> Any:
    """JSON form of one field value of `kind` (see the module docstring)."""
    if isinstance(kind, Optional):
        return None if value is None else to_json(value, kind.inner)
    if isinstance(kind, Enum):
        return {"name": kind.enum(value).name, "value": int(value)}
    if isinstance(kind, Bytes):
        return bytes(value).hex()
    if isinstance(kind, ListOf):
        return [to_json(v, kind.inner) for v in value]
    if isinstance(kind, Struct):
        return {name: to_json(getattr(value, name), k) for name, k in kinds(kind.cls)}
    if isinstance(kind, Number):
        if isinstance(value, float):
            if math.isnan(value):
                return {"float": "nan"}
            if math.isinf(value):
                return {"float": "inf" if value > 0 else "-inf"}
            return {"float": value}
        return {"int": int(value)}
    if isinstance(kind, UInt | Bool | Text):
        return value
    raise TypeError(f"no JSON form for {type(kind).__name__}")


def from_json(data: Any, kind: Kind) -> Any:
    """Inverse of `to_json`."""
    if isinstance(kind, Optional):
        return None if data is None else from_json(data, kind.inner)
    if isinstance(kind, Enum):
        member = kind.enum[data["name"]]
        if int(member) != data["value"]:
            raise ValueError(f"{data['name']} is {int(member)}, not {data['value']}")
        return member
    if isinstance(kind, Bytes):
        return bytes.fromhex(data)
    if isinstance(kind, ListOf):
        return tuple(from_json(v, kind.inner) for v in data)
    if isinstance(kind, Struct):
        return kind.cls(**{name: from_json(data[name], k) for name, k in kinds(kind.cls)})
    if isinstance(kind, Number):
        if "int" in data:
            return int(data["int"])
        return float(data["float"])  # float("nan"), float("inf") and float("-inf") parse
    if isinstance(kind, UInt | Bool | Text):
        return data
    raise TypeError(f"no JSON form for {type(kind).__name__}")


def message_to_json(message: Message) -> dict[str, Any]:
    return {name: to_json(getattr(message, name), k) for name, k in kinds(type(message))}


def message_from_json(name: str, data: dict[str, Any]) -> Message:
    by_name = {cls.__name__: cls for cls in CATALOGUE.values()}
    cls = by_name[name]
    return cls(**{field: from_json(data[field], k) for field, k in kinds(cls)})


# ----------------------------------------------------------------------------- valid frames


def valid_messages() -> list[tuple[str, int, Message]]:
    """(name, message_id, message) of every valid vector, at least one per message class."""
    chunks = [MODULE[i : i + CHUNK_SIZE] for i in range(0, len(MODULE), CHUNK_SIZE)]
    return [
        # -- handshake and enrollment
        ("hello-unenrolled", 0, Hello(None, SMALL_DEVICE)),
        ("hello-enrolled", 0, Hello(DEVICE_ID, BIG_DEVICE)),
        ("enroll-challenge", 0, EnrollChallenge(NONCE)),
        ("enroll-proof-ed25519", 0, EnrollProof(ED25519_SPKI, ED25519_SIGNATURE)),
        ("enroll-proof-p256", 0, EnrollProof(P256_SPKI, P256_SIGNATURE)),
        ("welcome-enrolled-now", 0, Welcome(DEVICE_ID, 30_000, 65_536, True)),
        ("welcome-max-message-id", MAX_MESSAGE_ID, Welcome(DEVICE_ID, 200, MIN_FRAME_LIMIT, False)),
        ("enroll-reject-pairing-disabled", 0,
         EnrollReject(ErrorCode.PAIRING_DISABLED, "unknown device and pairing mode is off")),
        ("enroll-reject-key-mismatch", 1,
         EnrollReject(ErrorCode.KEY_MISMATCH,
                      "enrollment public key differs from the TLS certificate's")),
        ("enroll-reject-revoked", 0, EnrollReject(ErrorCode.REVOKED, "")),
        # -- liveness and information
        ("heartbeat-no-apps", 1, Heartbeat(0, 131_072, ())),
        ("heartbeat-apps", 23, Heartbeat(
            86_400_000, 65_536,
            (AppSummary("blink", MODULE_DIGEST, AppState.RUNNING),
             AppSummary("sensor-\u00e9t\u00e9", bytes(32), AppState.FAILED),
             AppSummary("x" * 64, b"\xff" * 32, AppState.DEPLOYING)),
        )),
        ("heartbeat-max-values", MAX_MESSAGE_ID, Heartbeat(U64_MAX, U64_MAX, ())),
        ("heartbeat-ack", 23, HeartbeatAck()),
        ("device-info-request", 5, DeviceInfoRequest()),
        ("device-info-report", 5, DeviceInfoReport(SMALL_DEVICE)),
        # -- deployment of MODULE in chunks of CHUNK_SIZE
        ("deploy-begin", 6, DeployBegin("hello", "Hello, world", MODULE_DIGEST, len(MODULE),
                                        CHUNK_SIZE, Limits())),
        ("deploy-begin-limits", 7, DeployBegin("\u6e29\u5ea6-sensor", "", MODULE_DIGEST,
                                               len(MODULE), 1000, Limits(65_536, 0, 0xFFFFFFFF))),
        ("deploy-ready-fresh", 6, DeployReady("hello", 0)),
        ("deploy-ready-resume", 6, DeployReady("hello", CHUNK_SIZE)),
        ("deploy-ready-complete", 6, DeployReady("hello", len(MODULE))),
        ("deploy-chunk-first", 7, DeployChunk("hello", 0, chunks[0])),
        ("deploy-chunk-last", 9, DeployChunk("hello", 2 * CHUNK_SIZE, chunks[-1])),
        ("deploy-chunk-empty", 10, DeployChunk("hello", 0, b"")),
        ("deploy-chunk-1000", 11, DeployChunk("hello", 4096, bytes(range(250)) * 4)),
        ("chunk-ack", 7, ChunkAck("hello", CHUNK_SIZE)),
        ("chunk-ack-last", 9, ChunkAck("hello", len(MODULE))),
        ("deploy-ack-installed", 6, DeployAck("hello", 0, "")),
        ("deploy-ack-digest-mismatch", 6,
         DeployAck("hello", int(ErrorCode.DIGEST_MISMATCH), "sha-256 differs")),
        ("deploy-ack-no-space", 6, DeployAck("hello", int(ErrorCode.NO_SPACE), "flash full")),
        # -- runs
        ("start-app", 12, StartApp("hello", 1, "main", ())),
        ("start-app-args", 13, StartApp("calc", 0xFFFFFFFF, "add",
                                        (1, -1, I64_MIN, U64_MAX, 0.5, -2.25, -0.0))),
        ("start-ack", 12, StartAck("hello", 1, 0, "")),
        ("start-ack-busy", 13, StartAck("calc", 0xFFFFFFFF, int(ErrorCode.BUSY), "running")),
        ("execution-result-returned", 12, ExecutionResult(
            "hello", 1, Outcome.RETURNED, (42,), b"", 3, 120, "")),
        ("execution-result-values", 13, ExecutionResult(
            "calc", 0xFFFFFFFF, Outcome.RETURNED,
            (0, -7, I64_MIN, U64_MAX, 1.5, -0.125, 1e300, -0.0, 5e-324),
            "r\u00e9sultat \u2713\n".encode(), U64_MAX, 0, "\u00fcnicode \u2603 detail")),
        # NaN, +inf and -inf are the three half-precision floats of the protocol (f9 ...).
        ("execution-result-non-finite", 14, ExecutionResult(
            "calc", 4, Outcome.RETURNED, (math.inf, -math.inf, math.nan), b"", 1, 2, "")),
        ("execution-result-trapped", 14, ExecutionResult(
            "calc", 2, Outcome.TRAPPED, (), b"\x00\xff", 17, 9,
            "wasm trap: integer divide by zero")),
        ("execution-result-out-of-fuel", 15, ExecutionResult(
            "loop", 3, Outcome.OUT_OF_FUEL, (), b"", 50_000_000, 1_250_000, "fuel exhausted")),
        ("result-ack", 12, ResultAck("hello", 1)),
        ("result-ack-max-run", 13, ResultAck("calc", 0xFFFFFFFF)),
        ("stop-app", 16, StopApp("hello", False)),
        ("stop-app-remove", 17, StopApp("hello", True)),
        ("stop-ack", 16, StopAck("hello", 0, "")),
        ("stop-ack-unknown-app", 17, StopAck("nope", int(ErrorCode.UNKNOWN_APP), "no such app")),
        # -- errors
        ("error-malformed", 0, Error(ErrorCode.MALFORMED, "Heartbeat.uptime_ms: expected "
                                                          "unsigned integer, got str")),
        ("error-empty-reason", 0, Error(ErrorCode.SHUTTING_DOWN, "")),
        ("error-unicode-reason", 3, Error(ErrorCode.INTERNAL, "\u00e9chec \U0001f525" * 20)),
    ]


def valid_vectors() -> list[dict[str, Any]]:
    out = []
    for name, message_id, message in valid_messages():
        out.append({
            "name": name,
            "message": type(message).__name__,
            "tag": message.TAG,
            "message_id": message_id,
            "hex": frame(encode_envelope(message_id, message)).hex(),
            "decoded": message_to_json(message),
        })
    return out


# ----------------------------------------------------------------------------- invalid frames

_HB = Heartbeat(1000, 2048, ())


def _env(body: Any, version: Any = PROTOCOL_VERSION, message_id: Any = 1) -> bytes:
    """A framed envelope built from raw CBOR values (no validation)."""
    return frame(cbor2.dumps([version, message_id, body]))


def _body(message: Message, **replace: Any) -> list[Any]:
    """The CBOR array of `message` with some fields replaced by raw values."""
    names = [name for name, _ in kinds(type(message))]
    body = message.to_cbor_obj()
    for name, value in replace.items():
        body[1 + names.index(name)] = value
    return body


def _info(**replace: Any) -> list[Any]:
    names = [name for name, _ in kinds(DeviceInfo)]
    values = Struct(DeviceInfo).encode(SMALL_DEVICE)
    for name, value in replace.items():
        values[names.index(name)] = value
    return values


def invalid_vectors() -> list[dict[str, Any]]:
    """Frames a receiver must refuse, with the ErrorCode it reports."""
    hb_payload = cbor2.dumps([0, 1, _HB.to_cbor_obj()])
    hello = Hello(None, SMALL_DEVICE)
    cases: list[tuple[str, str, str, bytes, ErrorCode, str]] = [
        # (name, receiver, state, frame bytes, error, description)
        # -- framing
        ("zero-length-frame", "gateway", "await-hello", b"\x00\x00\x00\x00",
         ErrorCode.MALFORMED, "length 0: a frame always holds an envelope"),
        ("frame-over-limit", "gateway", "await-hello",
         (MIN_FRAME_LIMIT + 1).to_bytes(4, "big"), ErrorCode.FRAME_TOO_LARGE,
         "announced length 1025 above the receiver's 1024: refused on the 4 length bytes alone"),
        ("frame-length-max", "device", "idle", b"\xff\xff\xff\xff" + b"\x00" * 8,
         ErrorCode.FRAME_TOO_LARGE, "announced length 2^32-1"),
        # -- CBOR and envelope
        ("not-cbor", "gateway", "await-hello", frame(b"\xff"), ErrorCode.MALFORMED,
         "a lone break code"),
        ("reserved-additional-info", "gateway", "await-hello", frame(b"\x1c"),
         ErrorCode.MALFORMED, "CBOR additional information 28 is reserved"),
        ("truncated-cbor", "gateway", "await-hello", frame(hb_payload[:-1]), ErrorCode.MALFORMED,
         "a Heartbeat envelope missing its last byte, the length prefix says so"),
        ("trailing-bytes", "gateway", "await-hello", frame(hb_payload + b"\x00"),
         ErrorCode.MALFORMED, "one byte after a complete envelope inside the frame"),
        ("envelope-not-array", "gateway", "await-hello", frame(cbor2.dumps({"v": 0})),
         ErrorCode.MALFORMED, "a map instead of [version, message_id, message]"),
        ("envelope-two-items", "gateway", "await-hello", frame(cbor2.dumps([0, 1])),
         ErrorCode.MALFORMED, "envelope array of 2 items"),
        ("envelope-four-items", "gateway", "await-hello",
         frame(cbor2.dumps([0, 1, _HB.to_cbor_obj(), 0])), ErrorCode.MALFORMED,
         "envelope array of 4 items"),
        ("wrong-version", "gateway", "await-hello", _env(_HB.to_cbor_obj(), version=1),
         ErrorCode.UNSUPPORTED_VERSION, "envelope version 1"),
        ("negative-version", "device", "idle", _env(HeartbeatAck().to_cbor_obj(), version=-1),
         ErrorCode.UNSUPPORTED_VERSION, "envelope version -1"),
        ("version-as-text", "gateway", "await-hello", _env(_HB.to_cbor_obj(), version="0"),
         ErrorCode.MALFORMED, "envelope version is a text string"),
        ("message-id-over-u32", "gateway", "await-hello",
         _env(_HB.to_cbor_obj(), message_id=1 << 32), ErrorCode.MALFORMED,
         "message_id 2^32"),
        ("message-id-negative", "gateway", "await-hello",
         _env(_HB.to_cbor_obj(), message_id=-1), ErrorCode.MALFORMED, "message_id -1"),
        ("message-id-bool", "gateway", "await-hello",
         _env(_HB.to_cbor_obj(), message_id=False), ErrorCode.MALFORMED, "message_id false"),
        ("message-empty-array", "gateway", "await-hello", _env([]), ErrorCode.MALFORMED,
         "message [] has no tag"),
        ("message-not-array", "gateway", "await-hello", _env(3), ErrorCode.MALFORMED,
         "message is an integer"),
        ("tag-as-text", "gateway", "await-hello", _env(["Heartbeat", 0, 0, []]),
         ErrorCode.MALFORMED, "tag is a text string"),
        # -- CBOR tags: none in this protocol (a generic decoder drops some of them)
        ("tagged-envelope", "gateway", "established",
         frame(cbor2.dumps(cbor2.CBORTag(55799, [0, 1, _HB.to_cbor_obj()]))),
         ErrorCode.MALFORMED, "a Heartbeat envelope inside tag 55799 (self-described CBOR)"),
        ("tagged-envelope-shareable", "gateway", "established",
         frame(cbor2.dumps(cbor2.CBORTag(28, [0, 1, _HB.to_cbor_obj()]))),
         ErrorCode.MALFORMED, "a Heartbeat envelope inside tag 28 (shareable value)"),
        ("tagged-message", "gateway", "established",
         _env(cbor2.CBORTag(256, _HB.to_cbor_obj())), ErrorCode.MALFORMED,
         "the Heartbeat message inside tag 256 (string reference namespace)"),
        ("tagged-message-self-described", "device", "established",
         _env(cbor2.CBORTag(55799, HeartbeatAck().to_cbor_obj())), ErrorCode.MALFORMED,
         "the HeartbeatAck message inside tag 55799 (self-described CBOR)"),
        ("tagged-message-id", "gateway", "established",
         _env(_HB.to_cbor_obj(), message_id=cbor2.CBORTag(55799, 1)), ErrorCode.MALFORMED,
         "message_id 1 inside tag 55799"),
        ("tagged-field", "gateway", "established",
         _env(_body(_HB, uptime_ms=cbor2.CBORTag(28, 1000))), ErrorCode.MALFORMED,
         "Heartbeat.uptime_ms 1000 inside tag 28"),
        # -- catalogue and direction
        ("unknown-tag-device-range", "gateway", "established", _env([31]),
         ErrorCode.UNKNOWN_MESSAGE, "tag 31 is not in the catalogue"),
        ("unknown-tag-gateway-range", "device", "established", _env([63, "x"]),
         ErrorCode.UNKNOWN_MESSAGE, "tag 63 is not in the catalogue"),
        ("unknown-tag-large", "device", "idle", _env([1000]), ErrorCode.UNKNOWN_MESSAGE,
         "tag 1000 is not in the catalogue"),
        ("wrong-direction-welcome-to-gateway", "gateway", "await-hello",
         _env(Welcome(DEVICE_ID, 1000, 4096, False).to_cbor_obj()), ErrorCode.UNKNOWN_MESSAGE,
         "Welcome travels gateway->device only"),
        ("wrong-direction-deploy-chunk-to-gateway", "gateway", "established",
         _env(DeployChunk("a", 0, b"x").to_cbor_obj()), ErrorCode.UNKNOWN_MESSAGE,
         "DeployChunk travels gateway->device only"),
        ("wrong-direction-hello-to-device", "device", "await-welcome",
         _env(hello.to_cbor_obj()), ErrorCode.UNKNOWN_MESSAGE,
         "Hello travels device->gateway only"),
        ("wrong-direction-heartbeat-to-device", "device", "established",
         _env(_HB.to_cbor_obj()), ErrorCode.UNKNOWN_MESSAGE,
         "Heartbeat travels device->gateway only"),
        # -- field types, sizes, ranges
        ("wrong-field-type", "gateway", "established", _env(_body(_HB, uptime_ms="1000")),
         ErrorCode.MALFORMED, "Heartbeat.uptime_ms is a text string"),
        ("bool-where-uint-expected", "gateway", "established", _env(_body(_HB, uptime_ms=True)),
         ErrorCode.MALFORMED, "Heartbeat.uptime_ms is true (a bool is not an integer)"),
        ("float-where-uint-expected", "gateway", "established",
         _env(_body(_HB, memory_free=2048.0)), ErrorCode.MALFORMED,
         "Heartbeat.memory_free is 2048.0"),
        ("negative-uint", "gateway", "established", _env(_body(_HB, memory_free=-1)),
         ErrorCode.MALFORMED, "Heartbeat.memory_free is -1"),
        ("uint32-over-range", "gateway", "established",
         _env(_body(DeployReady("a", 0), offset=1 << 32)), ErrorCode.MALFORMED,
         "DeployReady.offset 2^32 does not fit 32 bits"),
        ("uint16-over-range", "gateway", "established",
         _env(_body(DeployAck("a", 0, ""), code=1 << 16)), ErrorCode.MALFORMED,
         "DeployAck.code 65536 does not fit 16 bits"),
        ("too-few-fields", "gateway", "established", _env(_HB.to_cbor_obj()[:-1]),
         ErrorCode.MALFORMED, "Heartbeat with 2 fields instead of 3"),
        ("too-many-fields", "gateway", "established", _env([*_HB.to_cbor_obj(), 0]),
         ErrorCode.MALFORMED, "Heartbeat with 4 fields instead of 3"),
        ("fields-on-empty-message", "device", "established", _env([35, 0]),
         ErrorCode.MALFORMED, "HeartbeatAck has no fields"),
        ("oversized-text", "gateway", "await-hello",
         _env(_body(hello, info=_info(architecture="a" * 33))), ErrorCode.MALFORMED,
         "DeviceInfo.architecture of 33 bytes, at most 32"),
        ("oversized-text-utf8", "device", "established",
         _env([0, int(ErrorCode.INTERNAL), "\u20ac" * 86]),
         ErrorCode.MALFORMED,
         "Error.reason of 86 characters but 258 UTF-8 bytes, at most 256 bytes"),
        ("empty-app-id", "gateway", "established", _env(_body(ChunkAck("a", 0), app_id="")),
         ErrorCode.MALFORMED, "app_id must hold at least one byte"),
        ("invalid-utf8", "gateway", "established",
         frame(cbor2.dumps([0, 1, [6, "@@", 0]]).replace(b"\x62@@", b"\x62\xc3\x28")),
         ErrorCode.MALFORMED, "ChunkAck.app_id is not valid UTF-8"),
        ("device-id-wrong-length", "gateway", "await-hello",
         _env(_body(hello, device_id=bytes(15))), ErrorCode.MALFORMED,
         "Hello.device_id of 15 bytes, exactly 16 or null"),
        ("device-id-undefined", "gateway", "await-hello",
         _env(_body(hello, device_id=cbor2.undefined)), ErrorCode.MALFORMED,
         "Hello.device_id is CBOR undefined, not null"),
        ("null-not-optional", "device", "await-welcome",
         _env(_body(Welcome(DEVICE_ID, 1000, 4096, False), device_id=None)),
         ErrorCode.MALFORMED, "Welcome.device_id may not be null"),
        ("record-as-map", "gateway", "await-hello", _env(_body(hello, info={"window": 1})),
         ErrorCode.MALFORMED, "Hello.info is a map, records are arrays"),
        ("nonce-too-short", "device", "await-welcome", _env([33, bytes(31)]),
         ErrorCode.MALFORMED, "EnrollChallenge.nonce of 31 bytes, exactly 32"),
        ("unknown-error-code", "device", "idle", _env([0, 999, "?"]), ErrorCode.MALFORMED,
         "Error.code 999 is not an ErrorCode"),
        ("unknown-app-state", "gateway", "established",
         _env(_body(_HB, apps=[["a", bytes(32), 5]])), ErrorCode.MALFORMED,
         "AppSummary.state 5 is not an AppState"),
        ("unknown-outcome", "gateway", "established",
         _env(_body(ExecutionResult("a", 1, Outcome.RETURNED, (), b"", 0, 0, ""), outcome=7)),
         ErrorCode.MALFORMED, "ExecutionResult.outcome 7 is not an Outcome"),
        ("too-many-values", "gateway", "established",
         _env(_body(ExecutionResult("a", 1, Outcome.RETURNED, (), b"", 0, 0, ""),
                    values=list(range(17)))),
         ErrorCode.MALFORMED, "ExecutionResult.values of 17 items, at most 16"),
        ("value-over-u64", "device", "established",
         _env(_body(StartApp("a", 1, "main", ()), args=[1 << 64])), ErrorCode.MALFORMED,
         "StartApp.args[0] = 2^64 (a bignum) does not fit 64 bits"),
        ("value-under-i64", "device", "established",
         _env(_body(StartApp("a", 1, "main", ()), args=[-(1 << 63) - 1])), ErrorCode.MALFORMED,
         "StartApp.args[0] = -2^63-1 does not fit 64 bits"),
        ("value-as-text", "device", "established",
         _env(_body(StartApp("a", 1, "main", ()), args=["1"])), ErrorCode.MALFORMED,
         "StartApp.args[0] is a text string"),
        # -- session rules
        ("heartbeat-before-hello", "gateway", "await-hello", _env(_HB.to_cbor_obj()),
         ErrorCode.UNEXPECTED_MESSAGE, "nothing but Hello may open a connection"),
        ("proof-without-challenge", "gateway", "await-hello",
         _env(EnrollProof(ED25519_SPKI, ED25519_SIGNATURE).to_cbor_obj()),
         ErrorCode.UNEXPECTED_MESSAGE, "EnrollProof without an EnrollChallenge"),
        ("hello-twice", "gateway", "established", _env(hello.to_cbor_obj()),
         ErrorCode.UNEXPECTED_MESSAGE, "Hello on an established session"),
        ("welcome-before-hello", "device", "idle",
         _env(Welcome(DEVICE_ID, 1000, 4096, False).to_cbor_obj()),
         ErrorCode.UNEXPECTED_MESSAGE, "Welcome to a device that has not sent Hello"),
        ("start-app-before-welcome", "device", "await-welcome",
         _env(StartApp("a", 1, "main", ()).to_cbor_obj()), ErrorCode.UNEXPECTED_MESSAGE,
         "StartApp before Welcome"),
        ("welcome-twice", "device", "established",
         _env(Welcome(DEVICE_ID, 1000, 4096, False).to_cbor_obj()),
         ErrorCode.UNEXPECTED_MESSAGE, "Welcome on an established session"),
        ("hello-frame-limit-below-minimum", "gateway", "await-hello",
         _env(_body(hello, info=_info(max_frame_size=MIN_FRAME_LIMIT - 1))),
         ErrorCode.MALFORMED, "DeviceInfo.max_frame_size 1023, the minimum is 1024"),
        ("hello-window-zero", "gateway", "await-hello", _env(_body(hello, info=_info(window=0))),
         ErrorCode.MALFORMED, "DeviceInfo.window 0, at least 1 chunk must be allowed"),
        ("welcome-frame-limit-below-minimum", "device", "await-welcome",
         _env(Welcome(DEVICE_ID, 1000, MIN_FRAME_LIMIT - 1, False).to_cbor_obj()),
         ErrorCode.MALFORMED, "Welcome.max_frame_size 1023, the minimum is 1024"),
    ]
    return [
        {
            "name": name,
            "receiver": receiver,
            "state": state,
            "max_frame_size": MIN_FRAME_LIMIT,
            "hex": data.hex(),
            "error": {"name": code.name, "value": int(code)},
            "description": description,
        }
        for name, receiver, state, data, code, description in cases
    ]


# ----------------------------------------------------------------------------- receivers


def session_in(receiver: str, state: str, max_frame_size: int = MIN_FRAME_LIMIT) -> Session:
    """A receiver's session brought to `state` (a State value) the way an invalid vector
    assumes, with nothing left to send:

    - gateway: "await-hello" fresh; "deciding" after Hello(null, SMALL_DEVICE); "await-proof"
      after that Hello and an EnrollChallenge; "established" after that Hello and a Welcome.
    - device: "idle" fresh; "await-welcome" after sending Hello; "proving" after Hello and an
      EnrollChallenge; "established" after Hello and Welcome(max_frame_size 1024).
    """
    target = State(state)
    if receiver == "gateway":
        gateway = GatewaySession(max_frame_size)
        if target is not State.AWAIT_HELLO:
            gateway.receive_data(frame(encode_envelope(0, Hello(None, SMALL_DEVICE))))
            if target is State.AWAIT_PROOF:
                gateway.send(EnrollChallenge(NONCE), reply_to=0)
            elif target is State.ESTABLISHED:
                gateway.send(Welcome(DEVICE_ID, 30_000, max_frame_size, False), reply_to=0)
        session: Session = gateway
    elif receiver == "device":
        device = DeviceSession(max_frame_size)
        if target is not State.IDLE:
            device.send(Hello(DEVICE_ID, SMALL_DEVICE))
            if target is State.PROVING:
                device.receive_data(frame(encode_envelope(0, EnrollChallenge(NONCE))))
            elif target is State.ESTABLISHED:
                welcome = Welcome(DEVICE_ID, 30_000, MIN_FRAME_LIMIT, False)
                device.receive_data(frame(encode_envelope(0, welcome)))
        session = device
    else:
        raise ValueError(f"receiver must be 'gateway' or 'device', not {receiver!r}")
    if session.state is not target:
        raise ValueError(f"{receiver} cannot be brought to {state}")
    session.data_to_send()
    return session


# ----------------------------------------------------------------------------- the file


def build() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "generator": "python -m wasmbed_hil.protocol.vectors",
        "protocol_version": PROTOCOL_VERSION,
        "min_frame_limit": MIN_FRAME_LIMIT,
        "enroll_context": ENROLL_CONTEXT.hex(),
        "enroll_nonce": NONCE.hex(),
        "module": MODULE.hex(),
        "valid": valid_vectors(),
        "invalid": invalid_vectors(),
    }


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def load(path: Path = VECTORS_PATH) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None, out: Callable[[str], object] = print) -> int:
    return generator_main(__doc__.splitlines()[0], VECTORS_PATH, lambda: render(build()), argv, out)


if __name__ == "__main__":
    sys.exit(main())
