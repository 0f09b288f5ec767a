"""Sans-I/O protocol sessions, one per connection and side (h11-style).

A session is fed the bytes received (`receive_data`) and returns events; the caller asks it to
`send` messages and writes out `data_to_send()`. It owns framing, validation, the connection
state machine, direction and state checks and message ids. It does no I/O and keeps no clock:
the gateway server, the virtual device, fuzzers and tests all drive the same objects.

Any violation by the peer is fatal: the session queues an Error frame for the peer, moves to
CLOSED and returns a Violation event; the driver flushes the bytes and closes the connection.
A violation by the local side (sending a message the state does not allow) raises
LocalProtocolError: that is a bug in the caller, not in the peer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from . import shortform
from .framing import HEADER, MIN_FRAME_LIMIT, FrameBuffer, frame
from .messages import (
    CATALOGUE,
    MAX_MESSAGE_ID,
    DeviceInfoReport,
    Direction,
    EnrollChallenge,
    EnrollProof,
    EnrollReject,
    Error,
    Hello,
    Message,
    Phase,
    ProtocolError,
    Welcome,
    decode_envelope_items,
    decode_message,
    encode_envelope,
    fieldless_body,
)
from .types import ErrorCode

# Every party accepts frames of at least this size, so the messages exchanged before the
# limits are known (Hello, EnrollChallenge, EnrollProof, Welcome, EnrollReject) always fit.
HANDSHAKE_FRAME_LIMIT = MIN_FRAME_LIMIT


class State(Enum):
    # Hashed by identity (members are singletons, compared by identity): Enum's own __hash__
    # is a Python method, and the state is hashed on every message's transition lookup.
    __hash__ = object.__hash__

    IDLE = "idle"  # device: nothing sent yet
    AWAIT_HELLO = "await-hello"  # gateway: waiting for the device's Hello
    DECIDING = "deciding"  # gateway: Hello or proof received, the application must answer
    AWAIT_PROOF = "await-proof"  # gateway: challenge sent
    AWAIT_WELCOME = "await-welcome"  # device: Hello or proof sent
    PROVING = "proving"  # device: challenge received, must send EnrollProof
    ESTABLISHED = "established"
    CLOSED = "closed"


class LocalProtocolError(RuntimeError):
    """The local side tried something the protocol state does not allow."""


class Received(NamedTuple):
    """A message the peer sent, allowed in the state it arrived in. (A named tuple, not a
    frozen dataclass: one is made for every message, and a frozen dataclass's __init__ sets
    each field through object.__setattr__, four times the cost.)"""

    message_id: int
    message: Message


@dataclass(frozen=True, slots=True)
class Violation:
    """The peer broke the protocol; an Error for it is queued and the session is CLOSED."""

    error: ProtocolError


Event = Received | Violation
TraceHook = Callable[[str, int, Message], None]



class Role(Enum):
    """The side of the connection a session plays."""

    DEVICE = "device"
    GATEWAY = "gateway"

    @property
    def sends(self) -> Direction:
        """The direction of the messages this role sends (it receives the other one)."""
        return Direction.DEVICE_TO_GATEWAY if self is Role.DEVICE else Direction.GATEWAY_TO_DEVICE

    @property
    def receives(self) -> Direction:
        return Direction.GATEWAY_TO_DEVICE if self is Role.DEVICE else Direction.DEVICE_TO_GATEWAY

    def may_send(self, message: type[Message]) -> bool:
        return message.DIRECTION in (self.sends, Direction.BOTH)

    def may_receive(self, message: type[Message]) -> bool:
        return message.DIRECTION in (self.receives, Direction.BOTH)


Transitions = dict[tuple[State, type[Message]], State]

# The handshake, the only transitions written out: (state, message) -> next state, one table per
# role, consulted whether the role sends or receives the message (the message's DIRECTION says
# which). The messages of Phase.ESTABLISHED and Phase.ANY are added below from their PHASE.
_HANDSHAKE: dict[Role, Transitions] = {
    Role.DEVICE: {
        (State.IDLE, Hello): State.AWAIT_WELCOME,
        (State.AWAIT_WELCOME, Welcome): State.ESTABLISHED,
        (State.AWAIT_WELCOME, EnrollChallenge): State.PROVING,
        (State.AWAIT_WELCOME, EnrollReject): State.CLOSED,
        (State.PROVING, EnrollProof): State.AWAIT_WELCOME,
    },
    Role.GATEWAY: {
        (State.AWAIT_HELLO, Hello): State.DECIDING,
        (State.DECIDING, Welcome): State.ESTABLISHED,
        (State.DECIDING, EnrollChallenge): State.AWAIT_PROOF,
        (State.DECIDING, EnrollReject): State.CLOSED,
        (State.AWAIT_PROOF, EnrollProof): State.DECIDING,
    },
}
INITIAL_STATE = {Role.DEVICE: State.IDLE, Role.GATEWAY: State.AWAIT_HELLO}


def _states(role: Role) -> list[State]:
    """The states a role's session can be in (CLOSED last)."""
    rows = _HANDSHAKE[role]
    found = {INITIAL_STATE[role], State.ESTABLISHED, State.CLOSED}
    found |= {state for state, _ in rows} | set(rows.values())
    return [state for state in State if state in found]


def _derive(role: Role) -> Transitions:
    """The whole table of a role: its handshake, then every message by its PHASE."""
    table: Transitions = {}
    for cls in CATALOGUE.values():
        phase = cls.PHASE
        if phase is Phase.HANDSHAKE:
            rows = {key: nxt for key, nxt in _HANDSHAKE[role].items() if key[1] is cls}
            if not rows:
                raise TypeError(f"{cls.__name__} is a handshake message without a transition")
            table.update(rows)
        elif phase is Phase.ESTABLISHED:
            table[State.ESTABLISHED, cls] = State.ESTABLISHED
        elif phase is Phase.ANY:
            table.update({(state, cls): State.CLOSED
                          for state in _states(role) if state is not State.CLOSED})
        else:
            raise TypeError(f"{cls.__name__}: unknown phase {phase!r}")
    stray = {cls for _, cls in _HANDSHAKE[role]} - {
        cls for cls in CATALOGUE.values() if cls.PHASE is Phase.HANDSHAKE}
    if stray:
        raise TypeError(f"handshake rows for messages of another phase: {stray}")
    return table


# (state, message) -> next state, per role, for what the role sends and what it receives.
TRANSITIONS: dict[Role, Transitions] = {role: _derive(role) for role in Role}


def _directed(role: Role, *, sending: bool) -> Transitions:
    """TRANSITIONS[role] restricted to the messages the role may send (or receive): the one
    lookup a session makes per message (its hot path)."""
    allowed = role.may_send if sending else role.may_receive
    return {key: nxt for key, nxt in TRANSITIONS[role].items() if allowed(key[1])}


_SENDING: dict[Role, Transitions] = {role: _directed(role, sending=True) for role in Role}
_RECEIVING: dict[Role, Transitions] = {role: _directed(role, sending=False) for role in Role}


class Session:
    """Common machinery; use DeviceSession or GatewaySession."""

    role: Role
    initial_state: State
    # What this side receives most, recognised by its bytes: (message_id, message) as
    # decode_envelope decodes them, or None (shortform.py).
    _short_form: Callable[[bytes], tuple[int, Message] | None]

    def __init__(self, max_frame_size: int, trace: TraceHook | None = None) -> None:
        self.max_frame_size = max_frame_size  # what we accept
        self.peer_max_frame_size = HANDSHAKE_FRAME_LIMIT  # what the peer accepts, once known
        self.state = self.initial_state
        self.closed_reason: ProtocolError | None = None
        self._frames = FrameBuffer(max_frame_size)
        self._out = bytearray()
        self._next_id = 0
        self._trace = trace
        self._sending = _SENDING[self.role]
        self._receiving = _RECEIVING[self.role]

    # -- sending -------------------------------------------------------------------------
    def send(self, message: Message, reply_to: int | None = None) -> int:
        """Queue a message; returns its message_id (reply_to's id for replies)."""
        if self.state is State.CLOSED:
            raise LocalProtocolError(f"cannot send {type(message).__name__}: session closed")
        cls = type(message)
        next_state = self._sending.get((self.state, cls))
        if next_state is None:
            raise LocalProtocolError(
                f"cannot send {cls.__name__} in state {self.state.value}"
            )
        body = None  # a message without fields is [TAG], valid as it is
        if fieldless_body(cls) is None:
            body = message.to_cbor_obj()  # encoded once: checked, then sent
            try:  # what the peer would refuse is refused here, as the caller's bug
                decode_message(body)
            except ProtocolError as exc:
                raise LocalProtocolError(f"invalid {cls.__name__}: {exc.reason}") from None
        message_id = self._next_id if reply_to is None else reply_to
        payload = encode_envelope(message_id, message, body)
        if len(payload) > self.peer_max_frame_size:
            raise LocalProtocolError(
                f"{type(message).__name__} frame of {len(payload)} bytes exceeds the peer's "
                f"limit of {self.peer_max_frame_size}"
            )
        if reply_to is None:
            self._next_id = (self._next_id + 1) & MAX_MESSAGE_ID
        self._out += frame(payload)
        self.state = next_state
        if self._trace is not None:
            self._trace("out", message_id, message)
        return message_id

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def frame_overhead(self) -> int:
        """Upper bound of framing + envelope bytes around a message's own fields."""
        return HEADER + 16

    # -- receiving -----------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        events: list[Event] = []
        try:
            short_form = self._short_form
            for payload in self._frames.frames(data):
                # what this side receives most, recognised by its bytes (shortform.py), else
                # the full decoding, which judges everything else
                known = short_form(payload)
                message_id, message = known if known is not None else decode_envelope_items(
                    payload)
                if isinstance(message, Error):
                    self.state = State.CLOSED
                    self.closed_reason = ProtocolError(message.code, f"peer: {message.reason}")
                    self._traced_in(message_id, message)
                    events.append(Received(message_id, message))
                    return events
                next_state = self._receiving.get((self.state, type(message)))
                if next_state is None:
                    raise self._refusal(type(message))
                self._on_receive(message)
                self.state = next_state
                if self._trace is not None:
                    self._trace("in", message_id, message)
                events.append(Received(message_id, message))
                if next_state is State.CLOSED:  # e.g. EnrollReject: nothing after it counts
                    return events
        except ProtocolError as exc:
            events.append(self.fail(exc))
        return events

    def fail(self, error: ProtocolError) -> Violation:
        """Close the session because of `error`, queueing an Error for the peer."""
        if self.state is not State.CLOSED:
            reason = error.reason.encode()[:200].decode(errors="ignore")
            message = Error(error.code, reason)
            self._out += frame(encode_envelope(0, message))
            if self._trace is not None:
                self._trace("out", 0, message)
            self.state = State.CLOSED
            self.closed_reason = error
        return Violation(error)

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete inbound frame (a slow peer shows here)."""
        return self._frames.pending

    def _traced_in(self, message_id: int, message: Message) -> None:
        if self._trace is not None:
            self._trace("in", message_id, message)

    def _refusal(self, message: type[Message]) -> ProtocolError:
        """Why a received `message` has no transition in the current state."""
        if not self.role.may_receive(message):
            return ProtocolError(
                ErrorCode.UNKNOWN_MESSAGE,
                f"{message.__name__} does not travel {self.role.receives.value}",
            )
        return ProtocolError(
            ErrorCode.UNEXPECTED_MESSAGE,
            f"{message.__name__} not allowed in state {self.state.value}",
        )

    def _on_receive(self, message: Message) -> None:
        """Hook for side-specific checks of a valid, allowed message."""


class GatewaySession(Session):
    role = Role.GATEWAY
    initial_state = INITIAL_STATE[Role.GATEWAY]
    _short_form = staticmethod(shortform.heartbeat)

    def _on_receive(self, message: Message) -> None:
        if isinstance(message, Hello | DeviceInfoReport):
            limit = message.info.max_frame_size
            if limit < HANDSHAKE_FRAME_LIMIT:
                raise ProtocolError(
                    ErrorCode.MALFORMED,
                    f"device max_frame_size {limit} below the minimum {HANDSHAKE_FRAME_LIMIT}",
                )
            if message.info.window < 1:
                raise ProtocolError(ErrorCode.MALFORMED, "device window must be at least 1")
            if isinstance(message, DeviceInfoReport) and limit != self.peer_max_frame_size:
                raise ProtocolError(
                    ErrorCode.MALFORMED,
                    f"device max_frame_size changed within a session ({self.peer_max_frame_size}"
                    f" -> {limit})",
                )
            self.peer_max_frame_size = limit


class DeviceSession(Session):
    role = Role.DEVICE
    initial_state = INITIAL_STATE[Role.DEVICE]
    _short_form = staticmethod(shortform.heartbeat_ack)

    def _on_receive(self, message: Message) -> None:
        if isinstance(message, Welcome):
            if message.max_frame_size < HANDSHAKE_FRAME_LIMIT:
                raise ProtocolError(
                    ErrorCode.MALFORMED,
                    f"gateway max_frame_size {message.max_frame_size} below the minimum",
                )
            self.peer_max_frame_size = message.max_frame_size
