"""The C device core (firmware/core) against the Python reference.

- firmware/core/include/wb/msg_catalogue.h (tags, directions, phases, field tables, handshake
  transitions) is generated from the Python catalogue: the committed file must be what
  `python -m wasmbed_hil.protocol.cgen` writes.
- `make -C firmware/tests test` (ASan/UBSan): every vector of vectors.json through the C codec
  and sessions, and the C unit tests of the device core.
- Differential: firmware/tests/build/wbdecode feeds bytes to a C session (receiver and state as
  in vectors.session_in) and prints its events; the same bytes go to the Python session. Inputs:
  hypothesis messages built from the catalogue's field kinds, and mutated frames.

The C decoder is strict where Python is lenient (docs/protocol.md section 3 allows it):
indefinite lengths, non-shortest integers, CBOR tags, simple values other than false/true/null
are MALFORMED in C. A divergence is accepted only there: C reports MALFORMED for a frame whose
envelope is not in that strict canonical form. Everything else must match exactly.
"""

from __future__ import annotations

import fcntl
import importlib.util
import random
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from message_strategies import message_strategy

from wasmbed_hil.protocol import cgen, vectors
from wasmbed_hil.protocol.fields import ListOf, Optional, Struct, Text, UInt, kinds
from wasmbed_hil.protocol.framing import MIN_FRAME_LIMIT, FrameBuffer, frame
from wasmbed_hil.protocol.messages import (
    CATALOGUE,
    MAX_MESSAGE_ID,
    Direction,
    EnrollChallenge,
    EnrollProof,
    EnrollReject,
    Error,
    Hello,
    Message,
    Phase,
    ProtocolError,
    StopApp,
    Welcome,
    encode_envelope,
)
from wasmbed_hil.protocol.session import Received, State, Violation

ROOT = Path(__file__).resolve().parents[1]
HOST = ROOT / "firmware" / "tests"  # the host build: core + ports/host + C tests
WBDECODE = HOST / "build" / "wbdecode"
BIG = 1 << 20

_spec = importlib.util.spec_from_file_location("wbcanon", HOST / "wbcanon.py")
assert _spec is not None and _spec.loader is not None
wbcanon = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wbcanon)


# ----------------------------------------------------------------------------- the C side

def _make(*targets: str) -> subprocess.CompletedProcess[str]:
    """make in firmware/tests, one at a time across test workers (they share its build dir)."""
    (HOST / "build").mkdir(exist_ok=True)
    with (HOST / "build" / ".make.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return subprocess.run(["make", "-C", str(HOST), *targets], capture_output=True,
                              text=True, timeout=900)


def test_host_build_and_unit_tests_pass() -> None:
    """`make -C firmware/tests test`: vectors + device unit tests, under ASan/UBSan."""
    result = _make("test")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    assert "host tests: OK" in out
    assert "vectors: 46 valid, 66 invalid; 112 passed, 0 failed" in out
    assert "0 failed checks" in out and "24 tests" in out
    assert "runtime error" not in out and "AddressSanitizer" not in out


class Decoder:
    def __init__(self) -> None:
        built = _make("build/wbdecode")
        assert built.returncode == 0, built.stdout + built.stderr
        self.proc = subprocess.Popen([str(WBDECODE)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def events(self, receiver: str, state: str, max_frame: int, data: bytes) -> list[str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{receiver} {state} {max_frame} {data.hex()}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "wbdecode died: " + (self.proc.stderr.read() if self.proc.stderr else "")
        line = line.rstrip("\n")
        return line.split(" | ") if line else []

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)
        err = self.proc.stderr.read() if self.proc.stderr else ""
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()  # an unclosed pipe warns later, in some other test
        assert self.proc.returncode == 0, err
        assert "runtime error" not in err and "Sanitizer" not in err, err


@pytest.fixture(scope="module")
def decoder() -> Any:
    d = Decoder()
    yield d
    d.close()


# ----------------------------------------------------------------------------- the Python side

def strictly_canonical(p: bytes) -> bool:
    """The C decoder's well-formedness pass, in Python (see codec.c well_formed)."""
    pos, need = 0, 1
    while need:
        if pos >= len(p):
            return False
        b = p[pos]
        pos += 1
        major, ai = b >> 5, b & 31
        if ai < 24:
            arg = ai
        elif ai > 27:
            return False
        else:
            n = 1 << (ai - 24)
            if len(p) - pos < n:
                return False
            arg = int.from_bytes(p[pos:pos + n], "big")
            pos += n
            if major == 7:
                if ai == 24:
                    return False
            elif arg < (24, 256, 65536, 1 << 32)[ai - 24]:
                return False
        need -= 1
        left = len(p) - pos
        if major in (2, 3):
            if arg > left:
                return False
            if major == 3:
                try:
                    p[pos:pos + arg].decode("utf-8")
                except UnicodeDecodeError:
                    return False
            pos += arg
        elif major in (4, 5):
            if arg > left:
                return False
            need += 2 * arg if major == 5 else arg
            if need > left:
                return False
        elif major == 6 or (major == 7 and ai < 24 and not 20 <= arg <= 22):
            return False
    return pos == len(p)


def python_events(receiver: str, state: str, max_frame: int,
                  data: bytes) -> tuple[list[str], list[bytes]]:
    """Events in wbdecode's form, and the frame payloads in order."""
    session = vectors.session_in(receiver, state, max_frame)
    payloads: list[bytes] = []
    try:
        for p in FrameBuffer(max_frame).frames(data):
            payloads.append(p)
    except ProtocolError:
        pass
    out = []
    i = 0
    for event in session.receive_data(data):
        if isinstance(event, Violation):
            out.append(f"V {int(event.error.code)}")
            continue
        assert isinstance(event, Received)
        payload = payloads[i]
        same = encode_envelope(event.message_id, event.message) == payload
        out.append(f"R {wbcanon.canon(event.message_id, event.message)} {'=' if same else '~'}")
        i += 1
    return out, payloads


def compare(decoder: Decoder, receiver: str, state: str, max_frame: int, data: bytes,
            allow_strict: bool = True) -> None:
    c = decoder.events(receiver, state, max_frame, data)
    py, payloads = python_events(receiver, state, max_frame, data)
    if c == py:
        return
    # first difference: allowed only as C's strictness on a non-canonical envelope
    pairs = enumerate(zip(c, py, strict=False))
    k = next((i for i, (a, b) in pairs if a != b), min(len(c), len(py)))
    ok = (allow_strict and k < len(c) and c[k] == "V 100" and k == len(c) - 1
          and k < len(payloads) and not strictly_canonical(payloads[k]))
    assert ok, f"{receiver}/{state} {data.hex()}\n C: {c}\n Py: {py}"


# ----------------------------------------------------------------------------- strategies


def receiver_for(message: Message) -> tuple[str, str]:
    """The receiver and state in which the message is allowed (or an obvious place for it)."""
    if isinstance(message, Error):
        return "device", "established"
    if isinstance(message, Hello):
        return "gateway", "await-hello"
    if isinstance(message, EnrollProof):
        return "gateway", "await-proof"
    if isinstance(message, Welcome | EnrollChallenge | EnrollReject):
        return "device", "await-welcome"
    if message.DIRECTION is Direction.DEVICE_TO_GATEWAY:
        return "gateway", "established"
    return "device", "established"


STATES = [("device", s) for s in ("idle", "await-welcome", "proving", "established")] + [
    ("gateway", s) for s in ("await-hello", "deciding", "await-proof", "established")]
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("cls", list(CATALOGUE.values()), ids=lambda c: c.__name__)
@FUZZ
@given(data=st.data(), message_id=st.integers(0, MAX_MESSAGE_ID))
def test_generated_messages_decode_the_same(decoder: Decoder, cls: type[Message],
                                            data: st.DataObject, message_id: int) -> None:
    message = data.draw(message_strategy(cls))
    raw = frame(encode_envelope(message_id, message))
    receiver, state = receiver_for(message)
    # canonical input: no divergence allowed at all
    compare(decoder, receiver, state, BIG, raw, allow_strict=False)
    # the same frame in every other receiver/state: same verdicts
    other = data.draw(st.sampled_from(STATES))
    compare(decoder, *other, BIG, raw, allow_strict=False)


def test_every_vector_frame_in_every_state(decoder: Decoder) -> None:
    doc = vectors.load()
    frames = [bytes.fromhex(v["hex"]) for v in doc["valid"] + doc["invalid"]]
    for raw in frames:
        for receiver, state in STATES:
            compare(decoder, receiver, state, MIN_FRAME_LIMIT, raw)


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        if op == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2 and len(b) > 4:
            del b[rng.randrange(4, len(b))]
        elif op == 3:
            b.insert(rng.randrange(4, len(b) + 1), rng.randrange(256))
        elif op == 4 and len(b) > 5:
            b = b[: rng.randrange(4, len(b))]
        elif op == 5 and len(b) > 4:  # fix the length prefix after a change in size
            b[:4] = (len(b) - 4).to_bytes(4, "big")
    if rng.random() < 0.7 and len(b) > 4:
        b[:4] = (len(b) - 4).to_bytes(4, "big")
    return bytes(b)


@pytest.mark.parametrize("seed", range(4))
def test_mutated_frames_get_the_same_verdict(decoder: Decoder, seed: int) -> None:
    rng = random.Random(seed)
    doc = vectors.load()
    frames = [bytes.fromhex(v["hex"]) for v in doc["valid"]]
    for _ in range(1500):
        raw = rng.choice(frames)
        if rng.random() < 0.2:  # two frames in one read
            raw = raw + rng.choice(frames)
        mutated = _mutate(rng, raw)
        receiver, state = rng.choice(STATES)
        compare(decoder, receiver, state, MIN_FRAME_LIMIT, mutated)


@FUZZ
@given(blob=st.binary(max_size=64))
def test_random_envelopes_get_the_same_verdict(decoder: Decoder, blob: bytes) -> None:
    for receiver, state in (("device", "established"), ("gateway", "await-hello")):
        compare(decoder, receiver, state, MIN_FRAME_LIMIT, frame(blob) if blob else blob)


def test_c_types_match_python() -> None:
    """types.h mirrors types.py (values of every enum)."""
    from wasmbed_hil.protocol.types import AppState, ErrorCode, Outcome
    text = (ROOT / "firmware/core/include/wb/types.h").read_text()
    for enum, prefix in ((ErrorCode, "WB_ERR_"), (Outcome, "WB_OUTCOME_"), (AppState, "WB_APP_")):
        for member in enum:
            name = prefix + member.name
            assert f"{name} = {int(member)}," in text, name


# ----------------------------------------------------------------------------- the generated header

def test_generated_catalogue_header_is_up_to_date() -> None:
    """msg_catalogue.h is what `python -m wasmbed_hil.protocol.cgen` writes from messages.py."""
    header = ROOT / "firmware/core/include/wb/msg_catalogue.h"
    assert header == cgen.HEADER_PATH
    assert header.read_text(encoding="utf-8") == cgen.render(), (
        "msg_catalogue.h drifted from the catalogue: run python -m wasmbed_hil.protocol.cgen")
    assert "GENERATED" in header.read_text(encoding="utf-8").splitlines()[0]


def test_cgen_check_mode(tmp_path: Path) -> None:
    path = tmp_path / "msg_catalogue.h"
    lines: list[str] = []
    assert cgen.main(["--check", "--path", str(path)], out=lines.append) == 1
    assert cgen.main(["--path", str(path)], out=lines.append) == 0
    assert cgen.main(["--check", "--path", str(path)], out=lines.append) == 0
    path.write_text(path.read_text(encoding="utf-8").replace("WB_TAG_HELLO = 1,",
                                                             "WB_TAG_HELLO = 2,"))
    assert cgen.main(["--check", "--path", str(path)], out=lines.append) == 1
    assert "differs" in lines[-1]


def test_the_header_follows_the_catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    """A change to a message's declared facts changes the header (so the drift test fails)."""
    before = cgen.render()
    assert 'X(WB_TAG_STOP_APP, "StopApp", stop_app, WB_DIR_G2D, WB_PHASE_ESTABLISHED, ' in before
    assert "X(stop_app, BOOL, remove, 0, 0)" in before
    assert "X(WB_ROLE_GATEWAY, WB_ST_DECIDING, WB_TAG_WELCOME, WB_ST_ESTABLISHED)" in before
    monkeypatch.setattr(StopApp, "DIRECTION", Direction.BOTH)
    assert "stop_app, WB_DIR_BOTH, WB_PHASE_ESTABLISHED" in cgen.render()
    monkeypatch.setattr(StopApp, "PHASE", Phase.ANY)
    assert "stop_app, WB_DIR_BOTH, WB_PHASE_ANY" in cgen.render()
    assert cgen.render() != before


def test_every_field_kind_has_a_c_kind_and_unknown_ones_are_refused() -> None:
    seen = {cgen.c_kind(kind)[0] for cls in [*CATALOGUE.values(), *cgen.RECORDS]
            for _, kind in kinds(cls)}
    assert seen == {"U16", "U32", "U64", "BOOL", "TEXT", "BYTES", "FIXED", "OPT_FIXED",
                    "ERRCODE", "OUTCOME", "APPSTATE", "INFO", "LIMITS", "APPS", "VALUES"}
    codec = (ROOT / "firmware/core/src/codec.c").read_text(encoding="utf-8")
    for name in seen:  # each one is a kind of the C codec, with its C type
        assert f"K_{name}," in codec and f"#define CTYPE_{name} " in codec, name
    for kind in (UInt(8), ListOf(Text(4), 2), Optional(Text(4)), Struct(Hello)):
        with pytest.raises(TypeError, match="no C codec kind"):
            cgen.c_kind(kind)


def test_c_states_match_python() -> None:
    """session.h's wb_state_t lists the states of session.py in order (WB_STATES names them)."""
    text = (ROOT / "firmware/core/include/wb/session.h").read_text(encoding="utf-8")
    block = re.search(r"typedef enum \{(.*?)\} wb_state_t;", text, re.S)
    assert block is not None
    names = re.findall(r"WB_ST_(\w+)", block.group(1))
    assert names == [state.name for state in State]
    assert "WB_ST_IDLE = 0," in block.group(1)


def test_c_size_limits_match_python() -> None:
    """types.h's size limits (hand-written, not generated) equal messages.py's."""
    from wasmbed_hil.protocol import messages
    text = (ROOT / "firmware/core/include/wb/types.h").read_text(encoding="utf-8")
    expected = {"WB_DEVICE_ID_LEN": messages.DEVICE_ID_LEN, "WB_DIGEST_LEN": messages.DIGEST_LEN,
                "WB_NONCE_LEN": messages.NONCE_LEN, "WB_MIN_FRAME": MIN_FRAME_LIMIT,
                "WB_MAX_APP_ID": messages.MAX_APP_ID, "WB_MAX_NAME": messages.MAX_NAME,
                "WB_MAX_ENTRY": messages.MAX_ENTRY, "WB_MAX_REASON": messages.MAX_REASON,
                "WB_MAX_ARGS": messages.MAX_ARGS, "WB_MAX_LOG": messages.MAX_LOG}
    for name, value in expected.items():
        assert f"#define {name} {value}\n" in text, name
