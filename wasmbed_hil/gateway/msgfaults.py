"""Message faults at the gateway: a test-only interceptor in the session layer.

On the real-firmware path only the gateway sees plaintext, so this is where a test can drop,
delay, duplicate, reorder or corrupt one chosen protocol message. Nothing in the product turns
it on: no configuration field, no CLI switch. A test bench installs rules on an in-process
Gateway (`Gateway.faults.install(...)`, wrapped by the bench's `GatewayHandle.message_faults`);
with none installed every connection pays one None check per message.

Vocabulary (docs/faults.md, "Message faults at the gateway"):

    Drop("DeployChunk", nth=5)              the 5th DeployChunk of each device, once
    Delay("HeartbeatAck", 1.5, nth=2)       the 2nd HeartbeatAck and all behind it wait 1.5 s
    Duplicate("StartApp", nth=1)            the 1st StartApp travels twice
    Reorder("DeployChunk", nth=2)           the 2nd chunk travels after the 3rd
    Corrupt("ChunkAck", nth=1)              the 1st ChunkAck's CBOR breaks (MALFORMED)
    Drop(reply_to="Heartbeat", nth=3)       the gateway's reply to the 3rd Heartbeat
    Drop("Heartbeat", rate=0.2)             each Heartbeat with probability 0.2 (seeded)

A rule selects by message type (the class name of protocol/messages.py) or, with `reply_to`,
the reply to a request type; the direction follows from the type (Error, which travels both
ways, needs `direction`). Ordinals count per device (by TLS identity, across its connections)
from the moment the rules are installed, starting at 1. Device -> gateway messages are faulted
after TLS decryption, before the gateway's session decodes them; gateway -> device messages
after the session encoded them, before TLS encryption.

Every fault applied is counted, appended to the connection's protocol trace (direction
"fault") and emitted as a `message_fault` gateway event.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from ..protocol import CATALOGUE, HEADER, Direction, Message, ProtocolError, decode_envelope

_BY_NAME: dict[str, type[Message]] = {cls.__name__: cls for cls in CATALOGUE.values()}
# Requests by name -> the message types that reply to them.
_REPLIES: dict[str, tuple[type[Message], ...]] = {}
for _cls in CATALOGUE.values():
    for _request in _cls.REPLY_TO:
        _REPLIES[_request] = (*_REPLIES.get(_request, ()), _cls)

CORRUPT_MODES = ("envelope", "last-byte")
DEFAULT_REORDER_HOLD_S = 2.0


def _message_class(name: str, what: str) -> type[Message]:
    cls = _BY_NAME.get(name)
    if cls is None:
        known = ", ".join(sorted(_BY_NAME))
        raise ValueError(f"{what}: unknown message type {name!r} (one of {known})")
    return cls


@dataclass(frozen=True)
class MessageFault:
    """A rule: which messages (selector) and what happens to them (the subclass)."""

    message: str | None = None  # a message type, e.g. "DeployChunk"
    _: KW_ONLY
    nth: int | None = None  # only the nth match per device (1-based); None: every match
    rate: float | None = None  # each match with this probability (seeded); None: always
    reply_to: str | None = None  # instead of `message`: the reply to this request type
    direction: Direction | None = None  # only needed for Error, which travels both ways
    device: str | None = None  # only this device (name, identity or device id)
    limit: int | None = None  # apply at most this many times per device

    ACTION = "fault"

    def __post_init__(self) -> None:
        if (self.message is None) == (self.reply_to is None):
            raise ValueError("a message fault names either `message` or `reply_to`, not both")
        if self.nth is not None and (isinstance(self.nth, bool) or self.nth < 1):
            raise ValueError(f"nth counts from 1, got {self.nth!r}")
        if self.rate is not None and not 0.0 < self.rate <= 1.0:
            raise ValueError(f"rate must be in (0, 1], got {self.rate!r}")
        if self.nth is not None and self.rate is not None:
            raise ValueError("give `nth` (one message) or `rate` (a share of them), not both")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit!r}")
        if self.reply_to is not None:
            request = _message_class(self.reply_to, "reply_to")
            if not _REPLIES.get(request.__name__):
                raise ValueError(
                    f"no message replies to {request.__name__}: the protocol does not "
                    "acknowledge it (docs/protocol.md, section 4)")
        else:
            assert self.message is not None
            cls = _message_class(self.message, "message")
            if cls.DIRECTION is Direction.BOTH and self.direction is None:
                raise ValueError(f"{cls.__name__} travels both ways: give `direction`")
        if self.direction is Direction.BOTH:
            raise ValueError("direction is one way: DEVICE_TO_GATEWAY or GATEWAY_TO_DEVICE")

    @property
    def travels(self) -> Direction:
        """The direction of the messages this rule acts on."""
        if self.reply_to is not None:
            return _opposite(_BY_NAME[self.reply_to].DIRECTION)  # Error has no replies
        cls = _BY_NAME[self.message or ""]
        return self.direction or cls.DIRECTION

    def describe(self) -> str:
        what = self.message or f"reply to {self.reply_to}"
        which = (f"#{self.nth}" if self.nth is not None
                 else f"at rate {self.rate:g}" if self.rate is not None else "every")
        extra = self._detail()
        return f"{self.ACTION} {which} {what}{' ' + extra if extra else ''}"

    def _detail(self) -> str:
        return ""


def _opposite(direction: Direction) -> Direction:
    return (Direction.GATEWAY_TO_DEVICE if direction is Direction.DEVICE_TO_GATEWAY
            else Direction.DEVICE_TO_GATEWAY)


@dataclass(frozen=True)
class Drop(MessageFault):
    """The message never arrives."""

    ACTION = "drop"


@dataclass(frozen=True)
class Delay(MessageFault):
    """The message, and everything behind it in the same direction, waits `seconds`: the
    stream is TLS over TCP, so a late message holds up the ones after it (order is kept)."""

    seconds: float = 1.0
    ACTION = "delay"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.seconds <= 300:
            raise ValueError(f"delay seconds must be in (0, 300], got {self.seconds!r}")

    def _detail(self) -> str:
        return f"by {self.seconds:g}s"


@dataclass(frozen=True)
class Duplicate(MessageFault):
    """The message arrives `copies` + 1 times, back to back."""

    copies: int = 1
    ACTION = "duplicate"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.copies <= 100:
            raise ValueError(f"copies must be in 1..100, got {self.copies!r}")


@dataclass(frozen=True)
class Reorder(MessageFault):
    """The message is held and sent right after the next message in the same direction (or
    after `hold_s` when none follows)."""

    hold_s: float = DEFAULT_REORDER_HOLD_S
    ACTION = "reorder"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.hold_s <= 300:
            raise ValueError(f"hold_s must be in (0, 300], got {self.hold_s!r}")


@dataclass(frozen=True)
class Corrupt(MessageFault):
    """The encoded CBOR is altered. mode "envelope": the envelope's array header says 2 items
    instead of 3 (the receiver MUST answer Error(MALFORMED)); mode "last-byte": the last byte
    is inverted (a DeployChunk's last data byte, an integer's low byte...: a message that may
    still decode, with a wrong value)."""

    mode: str = "envelope"
    ACTION = "corrupt"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in CORRUPT_MODES:
            raise ValueError(f"corrupt mode must be one of {CORRUPT_MODES}, got {self.mode!r}")

    def _detail(self) -> str:
        return f"({self.mode})"


def corrupt_payload(payload: bytes, mode: str) -> bytes:
    """The envelope bytes altered as Corrupt(mode) says."""
    data = bytearray(payload)
    if mode == "envelope":
        data[0] = 0x82  # [version, message_id, message] becomes a 2-item array
    else:
        data[-1] ^= 0xFF
    return bytes(data)


@dataclass(frozen=True)
class AppliedFault:
    """One fault applied: what, to which message, on which device."""

    at: float
    action: str
    rule: str
    direction: Direction
    message: str
    message_id: int
    identity: str
    ordinal: int  # the message's ordinal among the rule's matches on this device


@dataclass
class _RuleState:
    seen: Counter[str] = field(default_factory=Counter)  # matches per identity
    applied: Counter[str] = field(default_factory=Counter)  # applications per identity
    armed: dict[str, set[int]] = field(default_factory=dict)  # reply_to: request ids awaited


class MessageInterceptor:
    """A set of rules and what they did. Lives on the gateway's loop; install one with
    `Gateway.faults.install`."""

    def __init__(self, rules: Iterable[MessageFault], seed: int = 0) -> None:
        self.rules: tuple[MessageFault, ...] = tuple(rules)
        if not self.rules:
            raise ValueError("no message fault rules given")
        for rule in self.rules:
            if not isinstance(rule, MessageFault) or type(rule) is MessageFault:
                raise TypeError(f"not a message fault: {rule!r}")
        self.seed = seed
        self._rng = random.Random(seed)
        self._state = [_RuleState() for _ in self.rules]
        self.applied: list[AppliedFault] = []
        self.counts: Counter[str] = Counter()  # by action

    def decide(
        self,
        identity: str,
        names: tuple[str, ...],
        direction: Direction,
        message: type[Message],
        message_id: int,
    ) -> tuple[MessageFault, int] | None:
        """The rule that applies to this message, with the message's ordinal, or None.

        `names` are the device's name, identity and device id (for a rule's `device`). Every
        rule sees every message (ordinals count even when another rule applied first); the
        first rule that fires wins."""
        chosen: tuple[MessageFault, int] | None = None
        for rule, state in zip(self.rules, self._state, strict=True):
            if rule.device is not None and rule.device not in names:
                continue
            if rule.reply_to is not None:
                fired = self._reply_rule(rule, state, identity, direction, message, message_id)
            else:
                fired = self._type_rule(rule, state, identity, direction, message)
            if fired is not None and chosen is None:
                state.applied[identity] += 1
                chosen = (rule, fired)
        return chosen

    def _fires(self, rule: MessageFault, state: _RuleState, identity: str, ordinal: int) -> bool:
        if rule.limit is not None and state.applied[identity] >= rule.limit:
            return False
        if rule.nth is not None:
            return ordinal == rule.nth
        if rule.rate is not None:
            return self._rng.random() < rule.rate
        return True

    def _type_rule(
        self, rule: MessageFault, state: _RuleState, identity: str, direction: Direction,
        message: type[Message],
    ) -> int | None:
        if message.__name__ != rule.message or direction is not rule.travels:
            return None
        state.seen[identity] += 1
        ordinal = state.seen[identity]
        return ordinal if self._fires(rule, state, identity, ordinal) else None

    def _reply_rule(
        self, rule: MessageFault, state: _RuleState, identity: str, direction: Direction,
        message: type[Message], message_id: int,
    ) -> int | None:
        armed = state.armed.setdefault(identity, set())
        if message.__name__ == rule.reply_to and direction is not rule.travels:
            state.seen[identity] += 1
            ordinal = state.seen[identity]
            if self._fires(rule, state, identity, ordinal):
                armed.add(message_id)
            return None
        if (direction is rule.travels and message_id in armed
                and rule.reply_to in message.REPLY_TO):
            armed.discard(message_id)  # the first reply to that request only
            return state.seen[identity]
        return None

    def record(self, fault: AppliedFault) -> None:
        self.applied.append(fault)
        self.counts[fault.action] += 1


class FaultHook:
    """Where a gateway's connections look for message faults: `interceptor` is None unless a
    test installed one (the product never does)."""

    def __init__(self) -> None:
        self.interceptor: MessageInterceptor | None = None

    def install(self, rules: Iterable[MessageFault], seed: int = 0) -> MessageInterceptor:
        if self.interceptor is not None:
            raise RuntimeError("message faults are installed already; remove them first")
        self.interceptor = MessageInterceptor(rules, seed)
        return self.interceptor

    def remove(self) -> MessageInterceptor | None:
        interceptor, self.interceptor = self.interceptor, None
        return interceptor


Deliver = Callable[[bytes], None]
Report = Callable[[AppliedFault], None]


class _Lane:
    """One direction of one connection: delivers frames in order, except where a fault says
    otherwise (held behind a delay, swapped by a reorder)."""

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._delayed: deque[bytes] = deque()  # frames behind a delay, in order
        self._delay_timer: asyncio.TimerHandle | None = None
        self._held: bytes | None = None  # a reordered frame waiting for the next one
        self._hold_timer: asyncio.TimerHandle | None = None

    def put(self, frame: bytes) -> None:
        """Deliver `frame` in order (after anything delayed), then any reordered frame."""
        if self._delay_timer is not None:
            self._delayed.append(frame)
        else:
            self._deliver(frame)
        if self._held is not None:
            held, self._held = self._held, None
            if self._hold_timer is not None:
                self._hold_timer.cancel()
                self._hold_timer = None
            self.put(held)

    def delay(self, frame: bytes, seconds: float) -> None:
        self._delayed.append(frame)
        if self._delay_timer is None:
            self._delay_timer = asyncio.get_running_loop().call_later(seconds, self._release)

    def hold(self, frame: bytes, hold_s: float) -> None:
        if self._held is not None:  # two reorders in a row: the first goes out now
            self.put(self._held)
        self._held = frame
        self._hold_timer = asyncio.get_running_loop().call_later(hold_s, self._release_held)

    def _release(self) -> None:
        self._delay_timer = None
        while self._delayed and self._delay_timer is None:
            self._deliver(self._delayed.popleft())

    def _release_held(self) -> None:
        self._hold_timer = None
        held, self._held = self._held, None
        if held is not None:
            self.put(held)

    def cancel(self) -> None:
        for timer in (self._delay_timer, self._hold_timer):
            if timer is not None:
                timer.cancel()
        self._delay_timer = self._hold_timer = None
        self._delayed.clear()
        self._held = None


class ConnectionFaults:
    """The fault machinery of one connection: an outbound and an inbound lane, and the
    splitting of the decrypted inbound byte stream into frames."""

    def __init__(
        self,
        hook: FaultHook,
        identity: str,
        names: Callable[[], tuple[str, ...]],
        write: Deliver,
        feed: Deliver,
        report: Report,
        max_frame: int,
    ) -> None:
        self._hook = hook
        self._identity = identity
        self._names = names
        self._report = report
        self._max_frame = max_frame
        self.outbound = _Lane(write)
        self.inbound = _Lane(feed)
        self._inbuf = bytearray()
        self._raw = False  # a bad length prefix: pass bytes through, the session refuses them

    def send(self, frame: bytes, message: type[Message], message_id: int) -> None:
        """One frame the gateway's session encoded (length prefix and envelope)."""
        self._apply(self.outbound, frame, message, message_id, Direction.GATEWAY_TO_DEVICE)

    def receive(self, data: bytes) -> None:
        """Decrypted bytes from the device: split into frames, each faulted or passed on."""
        if self._raw:
            self.inbound.put(data)
            return
        self._inbuf += data
        while len(self._inbuf) >= HEADER:
            length = int.from_bytes(self._inbuf[:HEADER], "big")
            if length == 0 or length > self._max_frame:
                rest, self._inbuf = bytes(self._inbuf), bytearray()
                self._raw = True
                self.inbound.put(rest)
                return
            if len(self._inbuf) < HEADER + length:
                return
            frame = bytes(self._inbuf[: HEADER + length])
            del self._inbuf[: HEADER + length]
            try:
                envelope = decode_envelope(frame[HEADER:])
            except ProtocolError:  # the session will say what is wrong with it
                self.inbound.put(frame)
                continue
            self._apply(self.inbound, frame, type(envelope.message), envelope.message_id,
                        Direction.DEVICE_TO_GATEWAY)

    def _apply(
        self, lane: _Lane, frame: bytes, message: type[Message], message_id: int,
        direction: Direction,
    ) -> None:
        interceptor = self._hook.interceptor
        decision = None if interceptor is None else interceptor.decide(
            self._identity, self._names(), direction, message, message_id)
        if decision is None:
            lane.put(frame)
            return
        rule, ordinal = decision
        assert interceptor is not None
        fault = AppliedFault(time.time(), rule.ACTION, rule.describe(), direction,
                             message.__name__, message_id, self._identity, ordinal)
        interceptor.record(fault)
        self._report(fault)
        if isinstance(rule, Drop):
            return
        if isinstance(rule, Delay):
            lane.delay(frame, rule.seconds)
        elif isinstance(rule, Duplicate):
            for _ in range(rule.copies + 1):
                lane.put(frame)
        elif isinstance(rule, Reorder):
            lane.hold(frame, rule.hold_s)
        elif isinstance(rule, Corrupt):
            lane.put(frame[:HEADER] + corrupt_payload(frame[HEADER:], rule.mode))
        else:  # pragma: no cover - the constructor refuses other rules
            raise TypeError(f"unknown message fault {rule!r}")

    def close(self) -> None:
        self.outbound.cancel()
        self.inbound.cancel()


def describe_applied(faults: Iterable[AppliedFault]) -> list[dict[str, Any]]:
    """Applied faults as plain dicts (reports, Robot)."""
    return [
        {"action": f.action, "rule": f.rule, "direction": f.direction.value,
         "message": f.message, "message_id": f.message_id, "ordinal": f.ordinal}
        for f in faults
    ]
