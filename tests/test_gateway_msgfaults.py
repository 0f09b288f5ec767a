"""The gateway's message fault interceptor (gateway/msgfaults.py), without sockets."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from wasmbed_hil.bench.message_faults import fault_from_words
from wasmbed_hil.gateway.msgfaults import (
    ConnectionFaults,
    Corrupt,
    Delay,
    Drop,
    Duplicate,
    FaultHook,
    MessageInterceptor,
    Reorder,
    corrupt_payload,
)
from wasmbed_hil.protocol import (
    ChunkAck,
    DeployChunk,
    DeviceSession,
    Direction,
    ErrorCode,
    GatewaySession,
    Heartbeat,
    HeartbeatAck,
    Received,
    StartApp,
    Violation,
    decode_envelope,
    encode_envelope,
    frame,
)


def in_loop(fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test on a fresh event loop (the lanes' timers need one)."""
    @functools.wraps(fn)
    def run() -> None:
        asyncio.run(fn())
    return run


G2D, D2G = Direction.GATEWAY_TO_DEVICE, Direction.DEVICE_TO_GATEWAY
NAMES = ("dev", "identity-a", "id-a")


def _chunk_frame(offset: int, message_id: int) -> bytes:
    return frame(encode_envelope(message_id, DeployChunk("app", offset, bytes([offset % 256]) * 8)))


# ------------------------------------------------------------------------ rules
@pytest.mark.parametrize(("make", "words"), [
    (lambda: Drop("NoSuchMessage"), "unknown message type"),
    (lambda: Drop(reply_to="ExecutionResult"), "does not acknowledge"),
    (lambda: Drop("DeployChunk", nth=1, rate=0.5), "not both"),
    (lambda: Drop("DeployChunk", nth=0), "from 1"),
    (lambda: Drop("DeployChunk", rate=1.5), "rate"),
    (lambda: Drop("Error"), "both ways"),
    (lambda: Drop(), "either"),
    (lambda: Drop("DeployChunk", reply_to="Heartbeat"), "either"),
    (lambda: Delay("DeployChunk", 0), "seconds"),
    (lambda: Corrupt("DeployChunk", mode="zap"), "mode"),
    (lambda: Duplicate("DeployChunk", copies=0), "copies"),
])
def test_invalid_rules_are_refused_with_the_reason(make, words):
    with pytest.raises(ValueError, match=words):
        make()


def test_a_rule_acts_in_the_direction_of_its_message():
    assert Drop("DeployChunk").travels is G2D
    assert Drop("ChunkAck").travels is D2G
    assert Drop(reply_to="Heartbeat").travels is G2D  # the HeartbeatAck
    assert Drop(reply_to="StartApp").travels is D2G  # StartAck or ExecutionResult
    assert Drop("Error", direction=D2G).travels is D2G


def test_rules_from_robot_words():
    assert fault_from_words("DROP", "DeployChunk", nth=5) == Drop("DeployChunk", nth=5)
    assert fault_from_words("delay", "reply to Heartbeat", seconds=0.5) == Delay(
        reply_to="Heartbeat", seconds=0.5)
    with pytest.raises(ValueError, match="unknown message fault action"):
        fault_from_words("explode", "DeployChunk")


def test_empty_or_foreign_rule_sets_are_refused():
    with pytest.raises(ValueError):
        MessageInterceptor([])
    with pytest.raises(TypeError):
        MessageInterceptor(["drop"])  # type: ignore[list-item]


# ------------------------------------------------------------------------ selection
def _decide(icpt: MessageInterceptor, message: type, direction: Direction = G2D,
            message_id: int = 0, identity: str = "identity-a") -> int | None:
    names = ("dev", identity, "")
    found = icpt.decide(identity, names, direction, message, message_id)
    return None if found is None else found[1]


def test_nth_fires_once_per_device_on_that_ordinal():
    icpt = MessageInterceptor([Drop("DeployChunk", nth=3)])
    fired = [_decide(icpt, DeployChunk) for _ in range(6)]
    assert fired == [None, None, 3, None, None, None]
    other = [_decide(icpt, DeployChunk, identity="identity-b") for _ in range(3)]
    assert other == [None, None, 3]  # ordinals count per device
    assert _decide(icpt, ChunkAck, D2G) is None  # another type never counts


def test_device_filter_and_limit():
    icpt = MessageInterceptor([Drop("Heartbeat", device="identity-b", limit=2)])
    assert [_decide(icpt, Heartbeat, D2G) for _ in range(3)] == [None, None, None]
    fired = [_decide(icpt, Heartbeat, D2G, identity="identity-b") for _ in range(4)]
    assert fired == [1, 2, None, None]


def test_rate_is_replayed_by_its_seed():
    def picks(seed: int) -> list[int]:
        icpt = MessageInterceptor([Drop("Heartbeat", rate=0.3)], seed=seed)
        return [n for n in (_decide(icpt, Heartbeat, D2G) for _ in range(200)) if n]

    first = picks(11)
    assert first == picks(11)
    assert 20 < len(first) < 100  # about 60 of 200
    assert first != picks(12)


def test_reply_to_fires_on_the_reply_carrying_the_nth_request_id():
    icpt = MessageInterceptor([Drop(reply_to="Heartbeat", nth=2)])
    assert _decide(icpt, Heartbeat, D2G, message_id=7) is None
    assert _decide(icpt, HeartbeatAck, G2D, message_id=7) is None  # reply to the 1st
    assert _decide(icpt, Heartbeat, D2G, message_id=8) is None  # the 2nd: armed
    assert _decide(icpt, StartApp, G2D, message_id=8) is None  # not a reply to a Heartbeat
    assert _decide(icpt, HeartbeatAck, G2D, message_id=8) == 2
    assert _decide(icpt, HeartbeatAck, G2D, message_id=8) is None  # the first reply only


# ------------------------------------------------------------------------ lanes
class _Wire:
    """Both lanes of one ConnectionFaults, recorded; waits end on deliveries."""

    def __init__(self, *rules, max_frame: int = 4096) -> None:
        self.hook = FaultHook()
        self.interceptor = self.hook.install(rules)
        self.out: list[bytes] = []
        self.inbound: list[bytes] = []
        self.reported: list = []
        self.changed = asyncio.Event()
        self.faults = ConnectionFaults(self.hook, "identity-a", lambda: NAMES, self._out,
                                       self._in, self.reported.append, max_frame)

    def _out(self, data: bytes) -> None:
        self.out.append(data)
        self.changed.set()

    def _in(self, data: bytes) -> None:
        self.inbound.append(data)
        self.changed.set()

    def send_chunks(self, count: int) -> list[bytes]:
        frames = [_chunk_frame(8 * i, i) for i in range(count)]
        for i, f in enumerate(frames):
            self.faults.send(f, DeployChunk, i)
        return frames

    async def wait_out(self, count: int) -> None:
        while len(self.out) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)


@in_loop
async def test_drop_duplicate_and_corrupt_outbound():
    wire = _Wire(Drop("DeployChunk", nth=1), Duplicate("DeployChunk", nth=2),
                 Corrupt("DeployChunk", nth=3))
    frames = wire.send_chunks(4)
    assert wire.out[:2] == [frames[1], frames[1]]
    assert wire.out[2] != frames[2] and len(wire.out[2]) == len(frames[2])
    assert wire.out[3] == frames[3]
    assert [f.action for f in wire.reported] == ["drop", "duplicate", "corrupt"]
    assert wire.interceptor.counts == {"drop": 1, "duplicate": 1, "corrupt": 1}


@in_loop
async def test_reorder_swaps_with_the_next_message():
    wire = _Wire(Reorder("DeployChunk", nth=2))
    frames = wire.send_chunks(4)
    assert wire.out == [frames[0], frames[2], frames[1], frames[3]]


@in_loop
async def test_reorder_without_a_next_message_releases_after_its_hold():
    wire = _Wire(Reorder("DeployChunk", nth=2, hold_s=0.05))
    frames = wire.send_chunks(2)
    assert wire.out == [frames[0]]
    await wire.wait_out(2)
    assert wire.out == frames


@in_loop
async def test_delay_holds_the_messages_behind_it_in_order():
    wire = _Wire(Delay("DeployChunk", 0.05, nth=2))
    frames = wire.send_chunks(4)
    assert wire.out == [frames[0]]  # the 2nd waits, and the 3rd and 4th behind it
    await wire.wait_out(4)
    assert wire.out == frames


@in_loop
async def test_closing_cancels_what_is_held():
    wire = _Wire(Delay("DeployChunk", 0.01, nth=1))
    wire.send_chunks(2)
    wire.faults.close()
    lane = wire.faults.outbound
    assert lane._delay_timer is None and not lane._delayed  # nothing left to deliver
    assert wire.out == []


# ------------------------------------------------------------------------ inbound
def _ack_frame(next_offset: int, message_id: int) -> bytes:
    return frame(encode_envelope(message_id, ChunkAck("app", next_offset)))


@in_loop
async def test_inbound_bytes_are_split_into_frames_however_they_arrive():
    wire = _Wire(Drop("ChunkAck", nth=2))
    frames = [_ack_frame(8 * (i + 1), i) for i in range(3)]
    stream = b"".join(frames)
    for i in range(0, len(stream), 5):  # 5-byte pieces, across frame boundaries
        wire.faults.receive(stream[i:i + 5])
    assert wire.inbound == [frames[0], frames[2]]
    assert wire.reported[0].direction is D2G and wire.reported[0].message_id == 1


@in_loop
async def test_a_bad_length_prefix_passes_through_for_the_session_to_refuse():
    wire = _Wire(Drop("ChunkAck"))
    wire.faults.receive(b"\x7f\xff\xff\xff" + b"x" * 10)
    wire.faults.receive(_ack_frame(8, 0))
    assert b"".join(wire.inbound).startswith(b"\x7f\xff\xff\xff")
    assert wire.reported == []  # nothing is parsed after it


def test_corrupt_envelope_is_malformed_for_both_sessions():
    payload = encode_envelope(3, ChunkAck("app", 8))
    broken = corrupt_payload(payload, "envelope")
    with pytest.raises(Exception) as info:
        decode_envelope(broken)
    assert getattr(info.value, "code", None) is ErrorCode.MALFORMED
    gateway = GatewaySession(4096)
    events = gateway.receive_data(frame(broken))
    assert isinstance(events[-1], Violation) and events[-1].error.code is ErrorCode.MALFORMED
    device = DeviceSession(4096)
    events = device.receive_data(frame(corrupt_payload(encode_envelope(0, HeartbeatAck()),
                                                       "envelope")))
    assert isinstance(events[-1], Violation) and events[-1].error.code is ErrorCode.MALFORMED


def test_corrupt_last_byte_of_a_chunk_keeps_it_valid_with_other_data():
    chunk = DeployChunk("app", 0, b"\x01\x02\x03")
    received = decode_envelope(corrupt_payload(encode_envelope(0, chunk), "last-byte"))
    assert isinstance(received.message, DeployChunk)
    assert received.message.data == b"\x01\x02\xfc"
    assert not isinstance(received, Received)


def test_the_product_has_no_switch_for_message_faults():
    from dataclasses import fields

    from wasmbed_hil.gateway import GatewayConfig

    assert not [f.name for f in fields(GatewayConfig) if "fault" in f.name]
    assert FaultHook().interceptor is None
    hook = FaultHook()
    hook.install([Drop("Heartbeat")])
    with pytest.raises(RuntimeError, match="already"):
        hook.install([Drop("Heartbeat")])
    assert hook.remove() is not None and hook.interceptor is None
