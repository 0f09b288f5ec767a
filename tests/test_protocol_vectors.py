"""vectors.json: generated from vectors.py, decoded and refused exactly as it states."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from wasmbed_hil.pki import verify_signature
from wasmbed_hil.protocol import vectors
from wasmbed_hil.protocol.fields import kinds
from wasmbed_hil.protocol.framing import HEADER, FrameBuffer
from wasmbed_hil.protocol.messages import (
    CATALOGUE,
    ENROLL_CONTEXT,
    MAX_MESSAGE_ID,
    Direction,
    EnrollChallenge,
    EnrollProof,
    Error,
    Hello,
    Welcome,
    decode_envelope,
    encode_envelope,
)
from wasmbed_hil.protocol.session import (
    DeviceSession,
    GatewaySession,
    Received,
    Session,
    State,
    Violation,
)
from wasmbed_hil.protocol.types import ErrorCode

DOC = vectors.load()
VALID = DOC["valid"]
INVALID = DOC["invalid"]


def test_file_is_what_the_generator_builds() -> None:
    built = vectors.build()
    assert built == DOC, "vectors.json drifted: run python -m wasmbed_hil.protocol.vectors"
    assert vectors.VECTORS_PATH.read_text(encoding="utf-8") == vectors.render(built)


def test_check_mode(tmp_path: Path) -> None:
    path = tmp_path / "v.json"
    lines: list[str] = []
    assert vectors.main(["--check", "--path", str(path)], out=lines.append) == 1
    assert vectors.main(["--path", str(path)], out=lines.append) == 0
    assert vectors.main(["--check", "--path", str(path)], out=lines.append) == 0
    path.write_text(path.read_text(encoding="utf-8").replace('"format": 1', '"format": 2'))
    assert vectors.main(["--check", "--path", str(path)], out=lines.append) == 1
    assert "differs" in lines[-1]


def test_every_message_has_a_vector_and_names_are_unique() -> None:
    assert {v["message"] for v in VALID} == {cls.__name__ for cls in CATALOGUE.values()}
    names = [v["name"] for v in VALID + INVALID]
    assert len(names) == len(set(names))


def test_edge_values_are_covered() -> None:
    by_message: dict[str, list[dict[str, Any]]] = {}
    for v in VALID:
        by_message.setdefault(v["message"], []).append(v["decoded"])
    assert MAX_MESSAGE_ID in {v["message_id"] for v in VALID}
    assert any(d["device_id"] is None for d in by_message["Hello"])
    assert any(d["apps"] == [] for d in by_message["Heartbeat"])
    assert any(d["args"] == [] for d in by_message["StartApp"])
    values = [x for d in by_message["ExecutionResult"] for x in d["values"]]
    assert {"float": "nan"} in values and {"float": "inf"} in values
    assert any("float" in x and isinstance(x["float"], float) and x["float"] < 0 for x in values)
    assert any("int" in x and x["int"] < 0 for x in values)
    assert any(not d["reason"].isascii() for d in by_message["Error"])
    assert any(not d["detail"].isascii() for d in by_message["ExecutionResult"])
    assert {d["code"]["name"] for d in by_message["EnrollReject"]} >= {
        "PAIRING_DISABLED", "KEY_MISMATCH", "REVOKED"}


def test_invalid_cases_cover_every_kind_of_fault() -> None:
    names = {v["name"] for v in INVALID}
    assert {
        "wrong-version", "truncated-cbor", "trailing-bytes", "wrong-field-type",
        "bool-where-uint-expected", "too-few-fields", "too-many-fields", "unknown-tag-device-range",
        "oversized-text", "wrong-direction-welcome-to-gateway", "wrong-direction-hello-to-device",
        "frame-over-limit", "zero-length-frame", "heartbeat-before-hello", "hello-twice",
        "start-app-before-welcome",
    } <= names
    codes = {v["error"]["name"] for v in INVALID}
    assert codes == {"MALFORMED", "UNSUPPORTED_VERSION", "UNKNOWN_MESSAGE", "UNEXPECTED_MESSAGE",
                     "FRAME_TOO_LARGE"}
    assert {v["receiver"] for v in INVALID} == {"gateway", "device"}


@pytest.mark.parametrize("vector", VALID, ids=[v["name"] for v in VALID])
def test_valid_vector_decodes_and_reencodes(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    assert int.from_bytes(data[:HEADER], "big") == len(data) - HEADER
    payload = data[HEADER:]
    envelope = decode_envelope(payload)
    message = envelope.message
    assert type(message).__name__ == vector["message"]
    assert vector["tag"] == message.TAG
    assert envelope.message_id == vector["message_id"]
    assert vectors.message_to_json(message) == vector["decoded"]
    assert encode_envelope(envelope.message_id, message) == payload
    # The JSON form is complete: a message rebuilt from it encodes to the same bytes.
    rebuilt = vectors.message_from_json(vector["message"], vector["decoded"])
    assert encode_envelope(vector["message_id"], rebuilt) == payload
    assert json.loads(json.dumps(vector["decoded"], allow_nan=False)) == vector["decoded"]


def _accepting_session(message_name: str) -> Session:
    """A receiver in a state where the message is allowed."""
    cls = next(c for c in CATALOGUE.values() if c.__name__ == message_name)
    if cls is Hello:
        return vectors.session_in("gateway", "await-hello", 1 << 24)
    if cls is EnrollProof:
        return vectors.session_in("gateway", "await-proof", 1 << 24)
    if cls in (Welcome, EnrollChallenge) or cls.__name__ == "EnrollReject":
        return vectors.session_in("device", "await-welcome", 1 << 24)
    receiver = "device" if cls.DIRECTION is Direction.GATEWAY_TO_DEVICE else "gateway"
    return vectors.session_in(receiver, "established", 1 << 24)


@pytest.mark.parametrize("vector", VALID, ids=[v["name"] for v in VALID])
def test_valid_vector_is_received_by_a_session(vector: dict[str, Any]) -> None:
    session = _accepting_session(vector["message"])
    data = bytes.fromhex(vector["hex"])
    events = []
    for i in range(0, len(data), 7):  # in pieces, to exercise the reassembly too
        events += session.receive_data(data[i : i + 7])
    assert len(events) == 1 and isinstance(events[0], Received), events
    assert events[0].message_id == vector["message_id"]
    assert vectors.message_to_json(events[0].message) == vector["decoded"]
    assert session.data_to_send() == b""  # receiving never queues anything by itself
    if vector["message"] == "Error":
        assert session.state is State.CLOSED


def _check_refusal(session: Session, events: list[Any], code: ErrorCode) -> None:
    assert len(events) == 1 and isinstance(events[0], Violation), events
    assert events[0].error.code is code
    assert session.state is State.CLOSED
    assert session.closed_reason is events[0].error
    (out,) = FrameBuffer(1 << 24).feed(session.data_to_send())
    error = decode_envelope(out)
    assert error.message_id == 0
    assert isinstance(error.message, Error) and error.message.code is code


@pytest.mark.parametrize("vector", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_vector_is_refused(vector: dict[str, Any]) -> None:
    code = ErrorCode[vector["error"]["name"]]
    assert int(code) == vector["error"]["value"]
    session = vectors.session_in(vector["receiver"], vector["state"], vector["max_frame_size"])
    events = session.receive_data(bytes.fromhex(vector["hex"]))
    _check_refusal(session, events, code)
    assert session.receive_data(b"\x00\x00\x00\x05\x83\x00\x00\x81\x00") == []  # closed


@pytest.mark.parametrize("vector", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_vector_is_refused_byte_by_byte(vector: dict[str, Any]) -> None:
    session = vectors.session_in(vector["receiver"], vector["state"], vector["max_frame_size"])
    data = bytes.fromhex(vector["hex"])
    events = []
    for i in range(len(data)):
        events += session.receive_data(data[i : i + 1])
    _check_refusal(session, events, ErrorCode[vector["error"]["name"]])


def test_session_in_reaches_each_state() -> None:
    for receiver, states in (("gateway", ["await-hello", "deciding", "await-proof",
                                          "established"]),
                             ("device", ["idle", "await-welcome", "proving", "established"])):
        for state in states:
            session = vectors.session_in(receiver, state, 2048)
            kind = GatewaySession if receiver == "gateway" else DeviceSession
            assert isinstance(session, kind) and session.state is State(state)
            assert session.max_frame_size == 2048
    with pytest.raises(ValueError):
        vectors.session_in("gateway", "idle")
    with pytest.raises(ValueError):
        vectors.session_in("broker", "idle")


def test_enrollment_proofs_verify() -> None:
    signed = ENROLL_CONTEXT + vectors.NONCE
    assert ENROLL_CONTEXT == b"wasmbed-enroll-v1\x00"
    assert bytes.fromhex(DOC["enroll_context"]) == ENROLL_CONTEXT
    assert bytes.fromhex(DOC["enroll_nonce"]) == vectors.NONCE
    assert verify_signature(vectors.ED25519_SPKI, vectors.ED25519_SIGNATURE, signed)
    assert verify_signature(vectors.P256_SPKI, vectors.P256_SIGNATURE, signed)
    assert not verify_signature(vectors.P256_SPKI, vectors.P256_SIGNATURE, signed[:-1] + b"\x00")
    proofs = [v["decoded"] for v in VALID if v["message"] == "EnrollProof"]
    assert {p["public_key"] for p in proofs} == {vectors.ED25519_SPKI.hex(),
                                                 vectors.P256_SPKI.hex()}
    challenge = next(v for v in VALID if v["message"] == "EnrollChallenge")
    assert challenge["decoded"]["nonce"] == vectors.NONCE.hex()


def test_deployment_vectors_tell_one_story() -> None:
    module = bytes.fromhex(DOC["module"])
    wasmtime.Module(wasmtime.Engine(), module)  # a real, loadable module
    begin = next(v["decoded"] for v in VALID if v["name"] == "deploy-begin")
    assert begin["digest"] == hashlib.sha256(module).hexdigest()
    assert begin["size"] == len(module)
    chunks = {v["decoded"]["offset"]: bytes.fromhex(v["decoded"]["data"])
              for v in VALID if v["name"] in ("deploy-chunk-first", "deploy-chunk-last")}
    for offset, data in chunks.items():
        assert module[offset : offset + len(data)] == data
        assert len(data) <= begin["chunk_size"]
    assert max(o + len(d) for o, d in chunks.items()) == len(module)
    ready = next(v["decoded"] for v in VALID if v["name"] == "deploy-ready-complete")
    assert ready["offset"] == len(module)


def test_non_finite_floats_use_half_precision() -> None:
    vector = next(v for v in VALID if v["name"] == "execution-result-non-finite")
    data = bytes.fromhex(vector["hex"])
    assert b"\xf9\x7c\x00\xf9\xfc\x00\xf9\x7e\x00" in data
    message = decode_envelope(data[HEADER:]).message
    inf, ninf, nan = message.values  # type: ignore[attr-defined]
    assert inf == math.inf and ninf == -math.inf and math.isnan(nan)


def test_json_form_round_trips_every_kind() -> None:
    for _name, message_id, message in vectors.valid_messages():
        as_json = vectors.message_to_json(message)
        back = vectors.message_from_json(type(message).__name__, as_json)
        assert encode_envelope(message_id, back) == encode_envelope(message_id, message)
    with pytest.raises(ValueError, match="is 100"):
        vectors.from_json({"name": "MALFORMED", "value": 101},
                          kinds(Error)[0][1])
