"""DeviceConnection.request: on a connection that is gone the caller gets ConnectionLost, and
the reply future left behind is not reported by asyncio as "Future exception was never
retrieved" (the failover scenario logged it whenever a gateway died under a request); two
requests of one key at once each get the reply that copies their id; the gateway's requests
after revocations and reconnections."""

from __future__ import annotations

import asyncio
import gc
import ssl
from dataclasses import replace
from typing import Any

import pytest
from gateway_clients import INFO

from wasmbed_hil.gateway import Gateway, GatewayConfig
from wasmbed_hil.gateway.connection import DeviceConnection
from wasmbed_hil.gateway.errors import ConnectionLost
from wasmbed_hil.protocol import (
    DeviceInfoReport,
    DeviceInfoRequest,
    DevicePhase,
    Hello,
    StartAck,
    Welcome,
    encode_envelope,
    frame,
)


class FakeStream:
    def __init__(self) -> None:
        self.closing = False
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def write(self, data: bytes) -> int:
        self.written.append(data)
        return 0

    def write_buffer_size(self) -> int:
        return 0


def _connection() -> DeviceConnection:
    return DeviceConnection(FakeStream(), identity="ab" * 32, name="dev-0",  # type: ignore[arg-type]
                            max_frame_size=4096, write_buffer_limit=1 << 20, trace_limit=0)


def _unretrieved(run: Any) -> list[dict[str, Any]]:
    """The loop's exception-handler calls while `run` runs and its garbage is collected."""
    seen: list[dict[str, Any]] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        await run()
        gc.collect()

    asyncio.run(scenario())
    return [c for c in seen if "never retrieved" in str(c.get("message", ""))]


def test_a_request_on_a_closed_connection_raises_and_leaves_nothing_to_log() -> None:
    async def run() -> None:
        conn = _connection()
        conn.close("the device went away")
        with pytest.raises(ConnectionLost):
            await conn.request(("info", None), DeviceInfoRequest(), 5.0)
        assert conn.waiters == {}

    assert _unretrieved(run) == []



class SignallingStream(FakeStream):
    """A FakeStream that says when something was written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.wrote = asyncio.Event()

    def write(self, data: bytes) -> int:
        waiting = super().write(data)
        self.wrote.set()
        return waiting


def test_a_run_starts_on_the_connection_the_device_has_once_the_run_is_published() -> None:
    """The device reconnects while the run is published (on_run_recorded: the agent writes
    it to the API server, seconds when that is busy): its StartApp goes to the new
    connection. It went to the connection looked up before, closed by then, and the run
    failed to start ("the device's connection closed before it answered") on a device
    connected all along but for that moment."""

    async def scenario() -> None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.verify_mode, tls.minimum_version = ssl.CERT_REQUIRED, ssl.TLSVersion.TLSv1_3
        gateway = Gateway(GatewayConfig.for_tests(), tls)
        try:
            dev, _ = gateway.store.enroll("ab" * 32, "dev-0")
            gateway.registry.status_for(dev, DevicePhase.CONNECTED)
            first = _connection()
            second = DeviceConnection(SignallingStream(), identity="ab" * 32,  # type: ignore[arg-type]
                                      name="dev-0", max_frame_size=4096,
                                      write_buffer_limit=1 << 20, trace_limit=0)
            for conn in (first, second):  # welcomed: StartApp is allowed
                conn.session.receive_data(frame(encode_envelope(1, Hello(None, INFO))))
                conn.session.send(Welcome(bytes.fromhex(dev.device_id), 1000, 4096, False), 1)
                conn.session.data_to_send()
            gateway.registry.attach(first, dev)

            async def reconnected_meanwhile(device_id: str) -> None:
                gateway.registry.attach(second, dev)  # supersedes (closes) the first

            gateway.on_run_recorded = reconnected_meanwhile
            start = asyncio.create_task(gateway.start_app(dev.device_id, "app"))
            sent = asyncio.create_task(second.stream.wrote.wait())  # type: ignore[attr-defined]
            await asyncio.wait({start, sent}, return_when=asyncio.FIRST_COMPLETED)
            assert not start.done(), start.exception()  # ConnectionLost: sent on the first
            assert first.closed.is_set()
            [(kind, (app_id, run_id))] = second.waiters
            [message_id] = second.waiters[(kind, (app_id, run_id))]
            assert (kind, app_id) == ("start", "app")
            assert second.resolve((kind, (app_id, run_id)), StartAck("app", run_id, 0, ""),
                                  message_id)
            assert await start == run_id
        finally:
            gateway.store.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("ending", ["forget", "revoke"])
def test_a_device_forgotten_or_revoked_leaves_no_deployment_waiting_for_it(
        tmp_path, ending: str) -> None:
    """forget(): the control plane deletes a Device while a deployment to it waits for its
    connection (the device is off, or reconnecting); revoke(): the device's session ends,
    which interrupts a transfer to it, and it is refused from then on. Either gives the
    device's deployments up. They went on waiting for a connection that never comes (a
    forgotten device enrolls again under a new id; a revoked one is refused), their worker
    task left behind, their records pending and so resumed, and left waiting again, by every
    later incarnation of the gateway."""

    async def scenario() -> None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.verify_mode, tls.minimum_version = ssl.CERT_REQUIRED, ssl.TLSVersion.TLSv1_3
        gateway = Gateway(GatewayConfig.for_tests(), tls, tmp_path)
        try:
            dev, _ = gateway.store.enroll("ab" * 32, "dev-0")
            gateway.registry.status_for(dev, DevicePhase.DISCONNECTED)
            dep = gateway.deploy(dev.device_id, b"\0asm\1\0\0\0", app_id="app")
            worker = gateway.deployments._workers[dev.device_id]
            if ending == "forget":
                assert gateway.forget(dev.identity)
            else:
                gateway.revoke(dev.identity)
            assert dep.done.done() and dep.state == "failed", dep.state
            assert gateway.store.unfinished_deployments() == []
            await asyncio.wait({worker}, timeout=5)  # a bound only: it ends at once
            assert worker.done()
        finally:
            await gateway.stop()

    asyncio.run(scenario())


def test_a_gateway_started_after_a_revocation_resumes_nothing_for_that_device(tmp_path) -> None:
    """`wasmbed-hil gateway --revoke ID` revokes before start(), and start() resumes the
    deployments a previous incarnation left unfinished: the revoked device's were resumed
    after revoke() had given up what there was (nothing yet), and waited for a connection
    refused for good. Those of a device no longer enrolled (forgotten) likewise."""

    async def scenario() -> None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.verify_mode, tls.minimum_version = ssl.CERT_REQUIRED, ssl.TLSVersion.TLSv1_3
        first = Gateway(GatewayConfig.for_tests(), tls, tmp_path)
        dev, _ = first.store.enroll("ab" * 32, "dev-0")
        first.registry.status_for(dev, DevicePhase.DISCONNECTED)
        first.deploy(dev.device_id, b"\0asm\1\0\0\0", app_id="app")
        await first.stop()  # the deployment stays pending, for the next incarnation
        second = Gateway(GatewayConfig.for_tests(), tls, tmp_path)
        second.revoke(dev.identity)  # as --revoke does, before start()
        await second.start()
        try:
            assert [d.state for d in second.deployments.history] == ["failed"]
            assert second.deployments.unfinished(dev.device_id) == []
            assert second.store.unfinished_deployments() == []
        finally:
            await second.stop()

    asyncio.run(scenario())


def _welcomed() -> DeviceConnection:
    conn = _connection()
    conn.session.receive_data(frame(encode_envelope(1, Hello(None, INFO))))
    conn.session.send(Welcome(b"\x01" * 16, 1000, 4096, False), 1)
    conn.session.data_to_send()
    return conn


async def _until_waiting(conn: DeviceConnection, n: int) -> None:
    """Until `n` info requests were sent (each task's first step: a loop turn or two)."""
    for _ in range(10):
        if len(conn.waiters.get(("info", None), {})) >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{n} requests were not sent: {conn.waiters}")


def test_two_requests_of_one_key_at_once_each_get_their_own_reply() -> None:
    """Two callers asking one device's information at once: the second request used to take
    the first one's place, which then timed out although the device had answered it."""
    async def scenario() -> None:
        conn = _welcomed()
        first = asyncio.create_task(conn.request(("info", None), DeviceInfoRequest(), 5.0))
        second = asyncio.create_task(conn.request(("info", None), DeviceInfoRequest(), 5.0))
        await _until_waiting(conn, 2)
        first_id, second_id = conn.waiters[("info", None)]
        assert first_id != second_id
        # answered in the other order, each reply copying its request's id
        older, newer = DeviceInfoReport(INFO), DeviceInfoReport(replace(INFO, window=9))
        assert conn.resolve(("info", None), newer, second_id)
        assert conn.resolve(("info", None), older, first_id)
        assert await first is older and await second is newer
        assert conn.waiters == {}
        assert not conn.resolve(("info", None), older, first_id)  # late now: nobody waits

    asyncio.run(scenario())


def test_a_reply_whose_id_matches_no_request_goes_to_the_oldest_of_its_key() -> None:
    async def scenario() -> None:
        conn = _welcomed()
        first = asyncio.create_task(conn.request(("info", None), DeviceInfoRequest(), 5.0))
        second = asyncio.create_task(conn.request(("info", None), DeviceInfoRequest(), 5.0))
        await _until_waiting(conn, 2)
        reply = DeviceInfoReport(INFO)
        assert conn.resolve(("info", None), reply, 12345)  # a device that does not copy ids
        assert await first is reply
        assert not second.done()
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert conn.waiters == {}

    asyncio.run(scenario())


@pytest.mark.backend_specific("virtual", reason="calls the in-process Gateway directly")
def test_two_callers_asking_a_device_at_once_both_get_its_information(gateway, device):
    """Through a real gateway and device: both requests are sent in one loop turn, before
    either reply; each returns the device's information (the first used to time out)."""
    gw = gateway.gateway

    async def both() -> list[Any]:
        return list(await asyncio.gather(*(gw.request_device_info(device.device_id)
                                           for _ in range(2))))

    first, second = gateway.loop.run(both(), timeout=30)
    assert first.max_frame_size == second.max_frame_size >= 1024
    asked = [e for e in gateway.trace(device) if e[1] == "out" and e[3] == "DeviceInfoRequest"]
    assert len(asked) == 2
