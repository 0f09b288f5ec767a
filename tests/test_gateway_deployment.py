"""The deployment engine on its own, with fake collaborators instead of a gateway.

The engine sees the gateway through narrow seams (a deployments table, the event log, the
metrics, `connection_for(device_id)` and `start_app(...)`); here each is a few lines of fake, and
the device is a scripted TransferChannel that acknowledges chunks the way firmware does.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import pytest

from wasmbed_hil.gateway import ConnectionLost, Deployment, EventLog, GatewayError, RunRequest
from wasmbed_hil.gateway.deployment import DeploymentEngine
from wasmbed_hil.gateway.registry import DeviceRegistry
from wasmbed_hil.gateway.store import StoredDeployment
from wasmbed_hil.protocol import (
    ChunkAck,
    DeployAck,
    DeployBegin,
    DeployChunk,
    DeployReady,
    DeviceInfo,
    ErrorCode,
    Limits,
    Message,
)

DEVICE = "d" * 32
INFO = DeviceInfo("x86_64", "fake", "test", 1 << 20, 1 << 20, 1 << 16, 16384, 4, 3)
MODULE = bytes(range(256)) * 4  # 1,024 bytes


class Records:
    """The deployments table, in memory."""

    def __init__(self, unfinished: tuple[StoredDeployment, ...] = ()) -> None:
        self.rows: dict[int, StoredDeployment] = {}
        self.states: dict[int, tuple[str, str]] = {}
        for rec in unfinished:
            self.rows[rec.row_id] = rec

    def add_deployment(self, record: StoredDeployment) -> int:
        row_id = len(self.rows) + 1
        self.rows[row_id] = replace(record, row_id=row_id)
        return row_id

    def update_deployment(self, row_id: int, state: str, error: str = "") -> None:
        self.states[row_id] = (state, error)

    def unfinished_deployments(self) -> list[StoredDeployment]:
        return [r for r in self.rows.values() if r.row_id not in self.states]


class Device:
    """A TransferChannel whose device holds `held` bytes already and takes chunks until
    `cut_after` chunks, when its connection drops."""

    def __init__(self, held: bytes = b"", cut_after: int | None = None, refuse: int = 0) -> None:
        self.info = INFO
        self.data = bytearray(held)
        self.cut_after = cut_after
        self.refuse = refuse  # an ErrorCode for DeployAck at DeployBegin
        self.chunks = 0
        self.failed: tuple[ErrorCode, str] | None = None
        self.replies: asyncio.Queue[Message | None] | None = None

    def open_transfer(self, app_id: str) -> asyncio.Queue[Message | None]:
        self.replies = asyncio.Queue()
        return self.replies

    def close_transfer(self, app_id: str) -> None:
        self.replies = None

    def send(self, message: Message, reply_to: int | None = None) -> int:
        assert self.replies is not None
        if isinstance(message, DeployBegin):
            self.size, self.digest = message.size, message.digest
            if self.refuse:
                self.replies.put_nowait(DeployAck(message.app_id, self.refuse, "no"))
            else:
                self.replies.put_nowait(DeployReady(message.app_id, len(self.data)))
        elif isinstance(message, DeployChunk):
            if self.cut_after is not None and self.chunks == self.cut_after:
                self.replies.put_nowait(None)  # the connection dropped
                return 0
            assert message.offset == len(self.data)
            self.data += message.data
            self.chunks += 1
            self.replies.put_nowait(ChunkAck(message.app_id, len(self.data)))
            if len(self.data) == self.size:
                ok = hashlib.sha256(self.data).digest() == self.digest
                code = 0 if ok else int(ErrorCode.DIGEST_MISMATCH)
                self.replies.put_nowait(DeployAck(message.app_id, code, ""))
        return 0

    async def drain(self) -> None:
        pass

    def fail(self, code: ErrorCode, reason: str) -> None:
        self.failed = (code, reason)


class Fixture:
    def __init__(self, devices: list[Device], records: Records | None = None) -> None:
        self.devices = list(devices)
        self.records = records or Records()
        self.events = EventLog()
        self.metrics: Counter[str] = Counter()
        self.started: list[tuple[str, str, str, tuple[int | float, ...]]] = []
        self.start_error: Exception | None = None
        self.engine = DeploymentEngine(
            self.records,
            self.events,
            self.metrics,
            reply_timeout_s=5.0,
            connection_for=self.connection_for,
            start_app=self.start_app,
        )

    async def connection_for(self, device_id: str) -> Device:
        assert device_id == DEVICE
        return self.devices.pop(0)

    async def start_app(
        self, device_id: str, app_id: str, entry: str, args: tuple[int | float, ...]
    ) -> int:
        if self.start_error is not None:
            raise self.start_error
        self.started.append((device_id, app_id, entry, args))
        return 41

    def states(self) -> list[str]:
        return [e.data["state"] for e in self.events.events("deploy")]


def _deployment(chunk_size: int | None = 100, run: RunRequest | None = None) -> Deployment:
    return Deployment(DEVICE, "app", "app", MODULE, hashlib.sha256(MODULE).digest(), Limits(),
                      run, chunk_size)


def test_a_deployment_travels_in_acknowledged_chunks_and_starts():
    async def scenario() -> None:
        device = Device()
        fx = Fixture([device])
        dep = fx.engine.submit(_deployment(run=RunRequest("main", (1, 2))))
        await asyncio.wait_for(dep.done, 5)
        assert dep.state == "installed" and bytes(device.data) == MODULE
        assert (dep.chunks_sent, dep.bytes_sent, dep.attempts) == (11, 1024, 1)
        assert fx.started == [(DEVICE, "app", "main", (1, 2))]
        await asyncio.sleep(0)  # the worker emits "started" after `done`
        assert dep.run_id == 41
        assert fx.states() == ["pending", "transferring", "installed", "started"]
        assert fx.records.states[dep.row_id] == ("installed", "")
        assert fx.metrics == Counter({"deployments_submitted": 1, "deployments_installed": 1,
                                      "chunks_acked": 11})
        await fx.engine.close()

    asyncio.run(scenario())


def test_a_lost_connection_resumes_from_what_the_device_holds():
    async def scenario() -> None:
        first = Device(cut_after=3)  # drops on the fourth chunk, holding three
        second = Device(held=MODULE[:300])  # the same device, reconnected, flash kept
        fx = Fixture([first, second])
        dep = fx.engine.submit(_deployment())
        await asyncio.wait_for(dep.done, 5)
        assert bytes(first.data) == MODULE[:300]
        assert dep.state == "installed" and bytes(second.data) == MODULE
        assert dep.attempts == 2 and dep.resumed_from == [300]
        # Before the cut: three chunks held and three more sent into the dead link (the window
        # refills as acknowledgements arrive); after it, only the 724 bytes the device lacks.
        assert dep.bytes_sent == 600 + 724
        assert fx.states() == ["pending", "transferring", "interrupted", "transferring",
                               "installed"]
        await fx.engine.close()

    asyncio.run(scenario())


def test_a_refusal_by_the_device_fails_the_deployment():
    async def scenario() -> None:
        fx = Fixture([Device(refuse=int(ErrorCode.NO_SPACE))])
        dep = fx.engine.submit(_deployment(run=RunRequest()))
        await asyncio.wait_for(dep.done, 5)
        assert (dep.state, dep.error_code, dep.error) == ("failed", ErrorCode.NO_SPACE, "no")
        assert fx.records.states[dep.row_id] == ("failed", "no")
        assert fx.metrics == Counter({"deployments_submitted": 1, "deployments_failed": 1})
        assert fx.started == []
        await fx.engine.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(("error", "why"), [
    (GatewayError("refused"), "refused"),
    (ConnectionLost(), "the device's connection closed before it answered"),
    (TimeoutError(), "the device did not answer in time"),
])
def test_a_run_that_does_not_start_leaves_the_module_installed(error, why):
    async def scenario() -> None:
        fx = Fixture([Device()])
        fx.start_error = error
        dep = fx.engine.submit(_deployment(chunk_size=None, run=RunRequest()))
        await asyncio.wait_for(dep.done, 5)
        await asyncio.sleep(0)
        assert dep.state == "installed" and dep.chunks_sent == 1  # one chunk: frame limit
        assert dep.error == f"installed, but the run did not start: {why}"  # never empty
        assert fx.states()[-1] == "start_failed"
        await fx.engine.close()

    asyncio.run(scenario())


def test_unfinished_deployments_are_resumed_from_the_records():
    async def scenario() -> None:
        stored = StoredDeployment(DEVICE, "app", "app", MODULE, hashlib.sha256(MODULE).digest(),
                                  (1 << 20, 0, 1000), None, 512, "pending", row_id=7)
        fx = Fixture([Device()], Records((stored,)))
        [dep] = fx.engine.resume_unfinished()
        assert dep.row_id == 7 and dep.limits == Limits(1 << 20, 0, 1000)
        await asyncio.wait_for(dep.done, 5)
        assert dep.state == "installed" and dep.chunks_sent == 2
        assert fx.records.states == {7: ("installed", "")}
        assert len(fx.records.rows) == 1  # resumed, not recorded a second time
        await fx.engine.close()

    asyncio.run(scenario())


def test_a_refused_deployment_is_kept_and_counted_as_refused_but_not_recorded():
    async def scenario() -> None:
        fx = Fixture([])
        dep = fx.engine.refuse(_deployment(), ErrorCode.MODULE_TOO_LARGE, "too big")
        assert dep.done.done() and dep.state == "failed"
        assert fx.engine.history == [dep]
        assert fx.records.rows == {}
        assert fx.metrics == Counter({"deployments_refused": 1})  # never submitted
        [event] = fx.events.events("deploy")
        assert event.data == {"app_id": "app", "state": "failed", "code": "MODULE_TOO_LARGE",
                              "reason": "too big"}

    asyncio.run(scenario())


def _never_connected() -> Fixture:
    """An engine whose device never connects: its deployments wait for the connection."""
    never = asyncio.Event()

    async def connection_for(device_id: str) -> Device:
        await never.wait()
        raise AssertionError("unreachable")

    fx = Fixture([])
    fx.engine.connection_for = connection_for
    return fx


def test_stopping_the_engine_leaves_the_transfer_pending_in_the_records():
    async def scenario() -> None:
        fx = _never_connected()
        dep = fx.engine.submit(_deployment())
        await asyncio.sleep(0)
        await fx.engine.close()
        assert (dep.state, dep.error_code) == ("failed", ErrorCode.SHUTTING_DOWN)
        assert fx.records.unfinished_deployments()[0].row_id == dep.row_id

    asyncio.run(scenario())


# ---------------------------------------------------------------- repeated, lost, reordered acks
# docs/protocol.md, section 10: ChunkAcks are cumulative; a repeated or overtaken one is late;
# a DeployAck(0) after the last chunk went out covers the acks still missing.
class ScrambledAcks(Device):
    """A device whose ChunkAcks pass through `scramble(index, ack)`, which returns what to
    send instead (none: dropped or held; several: repeated or released)."""

    def __init__(self, scramble: Callable[[int, ChunkAck], list[Message]]) -> None:
        super().__init__()
        self.scramble = scramble
        self.index = 0

    def send(self, message: Message, reply_to: int | None = None) -> int:
        if not isinstance(message, DeployChunk) or self.replies is None:
            return super().send(message, reply_to)
        real: asyncio.Queue[Message | None] = self.replies
        captured: asyncio.Queue[Message | None] = asyncio.Queue()
        self.replies = captured
        try:
            super().send(message, reply_to)
        finally:
            self.replies = real
        while not captured.empty():
            reply = captured.get_nowait()
            if isinstance(reply, ChunkAck):
                for out in self.scramble(self.index, reply):
                    real.put_nowait(out)
                self.index += 1
            else:
                real.put_nowait(reply)
        return 0


def _held_swap():
    held: list[ChunkAck] = []

    def scramble(index: int, ack: ChunkAck) -> list[ChunkAck]:
        if index == 0:
            held.append(ack)
            return []
        if index == 1:
            return [ack, held.pop()]  # the second ack overtakes the first
        return [ack]

    return scramble


LAST = 10  # the 11th chunk of MODULE in 100-byte chunks


@pytest.mark.parametrize(("name", "scramble", "late"), [
    ("reordered", _held_swap(), 1),
    ("dropped", lambda i, ack: [] if i == 3 else [ack], 0),
    ("dropped-last", lambda i, ack: [] if i == LAST else [ack], 0),
    ("duplicated", lambda i, ack: [ack, ack] if i == 2 else [ack], 1),
])
def test_chunk_acks_are_cumulative(name, scramble, late):
    async def scenario() -> None:
        device = ScrambledAcks(scramble)
        fx = Fixture([device])
        dep = fx.engine.submit(_deployment())
        await asyncio.wait_for(dep.done, 5)
        assert device.failed is None, device.failed
        assert (dep.state, dep.attempts) == ("installed", 1)
        assert fx.metrics["late_replies"] == late
        await fx.engine.close()

    asyncio.run(scenario())


def test_a_chunk_ack_that_ends_no_chunk_in_flight_is_bad_offset():
    async def scenario() -> None:
        device = ScrambledAcks(lambda i, ack: [replace(ack, next_offset=150)] if i == 1 else [ack])
        fx = Fixture([device, Device(held=MODULE[:500])])
        dep = fx.engine.submit(_deployment())
        await asyncio.wait_for(dep.done, 5)
        assert device.failed is not None and device.failed[0] is ErrorCode.BAD_OFFSET
        assert (dep.state, dep.attempts) == ("installed", 2)  # resumed on the next connection
        await fx.engine.close()

    asyncio.run(scenario())


def test_deploy_ack_success_before_the_last_chunk_went_out_is_unexpected():
    async def scenario() -> None:
        def early(index: int, ack: ChunkAck) -> list[Message]:
            return [DeployAck(ack.app_id, 0, "")] if index == 0 else [ack]

        device = ScrambledAcks(early)
        fx = Fixture([device, Device(held=MODULE[:500])])
        dep = fx.engine.submit(_deployment())
        await asyncio.wait_for(dep.done, 5)
        assert device.failed is not None
        assert device.failed[0] is ErrorCode.UNEXPECTED_MESSAGE
        assert dep.attempts == 2
        await fx.engine.close()

    asyncio.run(scenario())


def test_unfinished_lists_a_devices_queued_and_transferring_deployments_only():
    """What the agent reads per device on every pass (it once scanned the whole history):
    the device's deployments not yet installed or failed, in submission order, never
    another device's, never a refused one; abandon() gives up exactly those."""
    def deployment(device_id: str = DEVICE, app_id: str = "app") -> Deployment:
        return Deployment(device_id, app_id, app_id, MODULE, hashlib.sha256(MODULE).digest(),
                          Limits(), None, 100)

    async def scenario() -> None:
        gate = asyncio.Event()

        async def connection_for(device_id: str) -> Device:
            await gate.wait()
            return Device()

        fx = Fixture([])
        fx.engine.connection_for = connection_for
        assert fx.engine.unfinished(DEVICE) == []
        first = fx.engine.submit(deployment())
        second = fx.engine.submit(deployment(app_id="other"))
        fx.engine.refuse(deployment(), ErrorCode.MODULE_TOO_LARGE, "too big")
        elsewhere = fx.engine.submit(deployment(device_id="elsewhere"))
        assert fx.engine.unfinished(DEVICE) == [first, second]
        assert fx.engine.unfinished("elsewhere") == [elsewhere]
        gate.set()
        await asyncio.wait_for(first.done, 5)
        assert first.state == "installed"
        assert fx.engine.unfinished(DEVICE) in ([second], [])  # the second may be done too
        await asyncio.wait_for(second.done, 5)
        assert second.state == "installed" and fx.engine.unfinished(DEVICE) == []
        fx.engine.abandon(DEVICE, "moved")  # nothing left to give up there
        assert first.state == second.state == "installed"
        await fx.engine.close()

    asyncio.run(scenario())


def test_abandon_gives_up_the_unfinished_deployments_of_that_device_only():
    async def scenario() -> None:
        fx = _never_connected()
        mine = fx.engine.submit(_deployment())
        other = fx.engine.submit(Deployment("elsewhere", "app", "app", MODULE,
                                            hashlib.sha256(MODULE).digest(), Limits(), None))
        assert fx.engine.abandon(DEVICE, "moved") == [mine]
        assert mine.state == "failed" and not other.done.done()
        assert fx.engine.unfinished(DEVICE) == [] and fx.engine.unfinished("elsewhere") == [other]
        await fx.engine.close()

    asyncio.run(scenario())


def test_an_abandoned_deployment_stays_abandoned_when_the_device_comes_back():
    """abandon() (the device moved to another gateway) cancels the device's worker, which
    waits for the device's connection (DeviceRegistry.wait_connection, on the event log).
    abandon() also logs the deployment's failure, and on Python 3.11 the event log's wait
    (asyncio.wait_for) swallowed a cancellation that came with an event: the worker went on
    waiting, and when the device came back it installed and ran the abandoned module after
    all, the record turned from failed to installed (what abandon() is there to prevent)."""

    async def scenario() -> None:
        fx = Fixture([])
        registry = DeviceRegistry(fx.events, fx.metrics, 0)
        waiting = asyncio.Event()

        async def connection_for(device_id: str) -> Device:
            waiting.set()  # the worker goes on to its wait without a pause
            return await registry.wait_connection(device_id)  # type: ignore[return-value]

        fx.engine.connection_for = connection_for
        dep = fx.engine.submit(_deployment(run=RunRequest()))
        worker = fx.engine._workers[DEVICE]
        await waiting.wait()  # the worker waits for the device's connection
        assert fx.engine.abandon(DEVICE, "moved") == [dep]
        assert dep.state == "failed"
        back = Device()
        back.closed = asyncio.Event()  # type: ignore[attr-defined]
        registry.connections[DEVICE] = back  # type: ignore[assignment]
        fx.events.emit("connection", DEVICE, state="open")  # the device comes back
        await asyncio.wait({worker}, timeout=5)  # a bound only: the worker ends at once
        assert (dep.state, back.chunks, fx.started) == ("failed", 0, [])
        assert fx.records.states[dep.row_id][0] == "failed"
        assert worker.cancelled()
        await fx.engine.close()

    asyncio.run(scenario())


def test_abandon_ends_a_worker_whose_transfer_just_lost_its_connection():
    """revoke() and forget() end the device's session, whose transfer queue gets its end
    (None), and then abandon() cancels the worker waiting for the next reply, in the same
    loop turn. That wait (asyncio.wait_for on Python 3.11) returned the end it had just got
    instead of the cancellation: the worker took it for a lost connection and waited for
    the next one, for good (the device is refused now), a task left until the gateway
    stopped."""

    class Silent(Device):
        def __init__(self) -> None:
            super().__init__()
            self.closed = asyncio.Event()
            self.began = asyncio.Event()

        def send(self, message: Message, reply_to: int | None = None) -> int:
            self.began.set()  # DeployBegin: the worker now waits for its reply
            return 0

    async def scenario() -> None:
        fx = Fixture([])
        registry = DeviceRegistry(fx.events, fx.metrics, 0)
        device = Silent()
        registry.connections[DEVICE] = device  # type: ignore[assignment]
        fx.engine.connection_for = registry.wait_connection  # type: ignore[assignment]
        dep = fx.engine.submit(_deployment())
        worker = fx.engine._workers[DEVICE]
        await device.began.wait()
        # What revoke() does: the connection ends (its transfer gets None), then abandon().
        del registry.connections[DEVICE]
        device.closed.set()
        assert device.replies is not None
        device.replies.put_nowait(None)
        assert fx.engine.abandon(DEVICE, "certificate revoked") == [dep]
        await asyncio.wait({worker}, timeout=5)  # a bound only: it ends at once
        assert worker.done() and dep.state == "failed"
        await fx.engine.close()

    asyncio.run(scenario())
