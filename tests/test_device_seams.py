"""The device seams without an emulator: the firmware handle over a fake Machine and Link,
fault actions and what a backend does not offer, Backend.close() and backend settings."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from wasmbed_hil.bench.backends import backend_classes, get_backend
from wasmbed_hil.bench.backends.base import Backend, BackendOption
from wasmbed_hil.bench.backends.firmware import FirmwareBackend, FirmwareDeviceHandle
from wasmbed_hil.bench.consolelog import ConsoleLog
from wasmbed_hil.bench.device import DeviceHandle, Faults, FaultUnsupported, Lifecycle
from wasmbed_hil.bench.errors import InfrastructureError, MachineDied, MachineError
from wasmbed_hil.bench.link.impairments import Partition, Stall
from wasmbed_hil.bench.link.pump import Impairment, Impairments
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.machines.base import Machine
from wasmbed_hil.bench.machines.qemu import QemuMachine
from wasmbed_hil.bench.machines.renode import RenodeMachine
from wasmbed_hil.bench.seams import Console, Power, Reset
from wasmbed_hil.gateway.events import WaitTimeout
from wasmbed_hil.pki import FleetCA
from wasmbed_hil.protocol import ErrorCode

ONLINE_ID = "0123456789abcdef0123456789abcdef"


class FakeMachine:
    """A Machine with no emulator behind it: the test types its console lines."""

    label = "fake board"

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.console = ConsoleLog()
        self.died: MachineDied | None = None
        self.on_line: Any = None
        self.boots = 0
        self.resets = 0
        self.typed: list[str] = []
        self.closed = False
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    @property
    def pid(self) -> int | None:
        return None

    def line(self, text: str) -> None:  # on the loop, as a machine's reader would
        self.console.append(text)
        if self.on_line is not None:
            self.on_line(text)

    async def start(self) -> None:
        if not self._running:
            self._running = True
            self.boots += 1
            self.line(f"[harness] power on (boot {self.boots})")

    async def power_cut(self) -> None:
        if self._running:
            self._running = False
            self.line("[harness] power off")

    async def reset(self) -> None:
        if not self._running:
            raise MachineError(f"{self.name}: cannot reset, not running")
        self.resets += 1

    async def write_console(self, text: str) -> None:
        if not self._running:
            raise MachineError(f"{self.name}: not running")
        self.typed.append(text)

    async def close(self) -> None:
        await self.power_cut()
        self.closed = True

    def exit_report(self) -> str:
        return ""

    def stats(self) -> dict[str, Any]:
        return {"boots": self.boots, "resets": self.resets}


@dataclass
class FakeStats:
    bytes_up: int = 10
    bytes_down: int = 20
    upstream_connections: int = 1


@dataclass
class FakeLink:
    port: int = 1
    stats: FakeStats = field(default_factory=FakeStats)
    drops: int = 0
    closed: bool = False
    impairments: Impairments = field(default_factory=Impairments)

    async def drop_upstream(self) -> None:
        self.drops += 1

    async def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("seams-test-loop")
    yield thread
    assert thread.close() == []


@pytest.fixture(scope="module")
def ca() -> FleetCA:
    return FleetCA.create("seams test CA")


@pytest.fixture
def parts(loop: LoopThread, ca: FleetCA) -> tuple[FirmwareDeviceHandle, FakeMachine, FakeLink]:
    machine, link = FakeMachine(), FakeLink()
    handle = FirmwareDeviceHandle(loop, "dev-0", ca.issue_device("dev-0"), machine, link,
                                  backend="fake")
    return handle, machine, link


def test_machines_and_the_fake_implement_the_machine_protocol(tmp_path: Path) -> None:
    assert isinstance(FakeMachine(), Machine)
    qemu = QemuMachine("q", ["qemu-system-arm"], tmp_path / "q")
    renode = RenodeMachine("r", tmp_path / "r", lambda *_: "", control="socket")
    for machine in (qemu, renode):
        assert isinstance(machine, Machine)
        assert machine.stats()["boots"] == 0 and not machine.running
    assert renode.stats()["control"] == "socket"
    assert issubclass(MachineError, InfrastructureError)


def test_the_firmware_handle_follows_the_console(loop: LoopThread, parts: Any) -> None:
    handle, machine, link = parts
    assert isinstance(handle, DeviceHandle)
    assert all(isinstance(handle, p) for p in (Power, Reset, Console))
    assert handle.backend == "fake" and handle.lifecycle is Lifecycle.OFF
    handle.power_on()
    assert machine.running and machine.boots == 1
    loop.call(machine.line, "connecting to 127.0.0.1:4423")
    assert handle.lifecycle is Lifecycle.CONNECTING
    loop.call(machine.line, f"online as {ONLINE_ID} (enrolled_now=1)")
    assert handle.wait_online(1) == ONLINE_ID
    assert handle.device_id == ONLINE_ID and handle.online_count == 1
    loop.call(machine.line, "link down: peer closed")
    assert handle.lifecycle is Lifecycle.BACKOFF
    loop.call(machine.line, "enrollment rejected: KEY_MISMATCH: key differs")
    assert handle.wait_rejected(1) == (ErrorCode.KEY_MISMATCH, "key differs")
    # a refusal stays the state until the device is online again
    loop.call(machine.line, "connection failed: refused")
    loop.call(machine.line, "connecting to 127.0.0.1:4423")
    assert handle.lifecycle is Lifecycle.REJECTED
    loop.call(machine.line, "gateway error REVOKED: revoked by the operator")
    assert handle.last_reject == (ErrorCode.REVOKED, "revoked by the operator")
    loop.call(machine.line, f"online as {ONLINE_ID} (enrolled_now=0)")
    assert handle.lifecycle is Lifecycle.ONLINE and handle.last_reject is None
    assert handle.online_count == 2
    handle.reset()
    assert machine.resets == 1 and handle.lifecycle is Lifecycle.CONNECTING
    assert handle.stats() == {"connections": 1, "boots": 1, "resets": 1, "bytes_up": 10,
                              "bytes_down": 20, "online_count": 2}
    assert handle.console[-1].startswith("online as") and handle.extra_seen() == ""
    handle.power_off()
    assert not machine.running and handle.lifecycle is Lifecycle.OFF
    assert handle.extra_seen() == ", fake board not running (nothing reported)"
    handle.reboot()
    assert machine.boots == 2
    handle.close()
    assert machine.closed and link.closed and handle.lifecycle is Lifecycle.OFF


def test_a_failed_wait_says_what_the_firmware_handle_saw(loop: LoopThread, parts: Any) -> None:
    handle, machine, _ = parts
    handle.power_on()
    loop.call(machine.line, "enrollment rejected: BAD_PROOF: signature")
    handle.power_off()
    with pytest.raises(WaitTimeout) as info:
        handle.wait_online(0.2)
    text = str(info.value)
    assert "dev-0 (fake): online not reached within 0.2s" in text
    assert "lifecycle is off, last rejection BAD_PROOF: signature" in text
    assert "fake board not running" in text and "[harness] power off" in text


def test_firmware_faults_are_console_commands_and_link_cuts(loop: LoopThread,
                                                           parts: Any) -> None:
    handle, machine, link = parts
    assert handle.faults.supported == {"silence", "cut_link", "impair"}
    handle.power_on()
    handle.faults.silence(True)
    handle.set_silent(False)  # the Robot library's name for the same action
    handle.write_line("help")
    handle.forget_enrollment()
    assert machine.typed == ["silent 1\n", "silent 0\n", "help\n", "forget\n"]
    handle.faults.cut_link()
    assert link.drops == 1
    handle.power_off()
    handle.forget_enrollment()  # RAM is gone with the power: nothing to tell
    assert machine.typed[-1] == "forget\n" and len(machine.typed) == 4
    with pytest.raises(MachineError, match="not running"):
        handle.faults.silence(True)


@pytest.mark.parametrize(("action", "args"), [
    ("enroll_with", (None,)), ("corrupt_proof", ()), ("drop_link_after_chunks", (5,)),
])
def test_an_unsupported_fault_names_the_backend_and_the_action(parts: Any, action: str,
                                                               args: tuple[Any, ...]) -> None:
    handle, _, _ = parts
    with pytest.raises(FaultUnsupported) as info:
        getattr(handle.faults, action)(*args)
    assert isinstance(info.value, NotImplementedError)
    assert info.value.backend == "fake" and info.value.action == action
    assert str(info.value) == (f"fault {action!r} is not available on the fake backend "
                               "(it offers: cut_link, impair, silence)")


def test_a_link_impairment_holds_for_the_block_and_is_applied_on_the_loop(
    loop: LoopThread, parts: Any
) -> None:
    handle, _, link = parts
    seen: list[str] = []

    class Probe(Impairment):
        def on_add(self, impairments: Impairments) -> None:
            seen.append(f"add on {threading.current_thread().name}")

        def on_remove(self) -> None:
            seen.append(f"remove on {threading.current_thread().name}")

    with handle.faults.impair(Probe()) as probe:
        assert list(link.impairments) == [probe]
    assert list(link.impairments) == []
    assert seen == ["add on seams-test-loop", "remove on seams-test-loop"]
    with pytest.raises(RuntimeError, match="boom"), handle.faults.impair(Partition()):
        raise RuntimeError("boom")
    assert list(link.impairments) == []  # taken off also when the block fails


def test_the_link_handle_applies_schedules_and_waits_on_the_loop(parts: Any) -> None:
    handle, _, link = parts
    later, stall = Stall(start=60.0), Stall(duration=0.05)
    handle.link.add(later, stall)
    assert handle.link.impairments == [later, stall]
    assert later.state == "pending" and stall.active
    handle.link.wait_ended(stall, 5)  # its duration ended: it took itself off
    assert handle.link.impairments == [later]
    handle.link.start(later)  # the test as its trigger
    handle.link.wait_started(later, 1)
    timeout = r"dev-0: Stall\(start=60\) \[active\] not ended within 0\.1s"
    with pytest.raises(AssertionError, match=timeout):
        handle.link.wait_ended(later, 0.1)
    handle.link.clear()
    assert handle.link.impairments == [] and later.ended.is_set()
    with pytest.raises(ValueError, match="is not on dev-0's link"):
        handle.link.start(later)
    with pytest.raises(ValueError, match="at least one"), handle.link.impair():
        pass
    with pytest.raises(ValueError, match="applied already"):
        handle.link.add(Partition(), later)  # the second fails: the first is taken off too
    assert handle.link.impairments == []
    latency = handle.link.apply("latency", delay=0.5)
    assert handle.link.impairments == [latency]
    handle.link.remove(latency)
    assert link.drops == 0
    handle.link.cut()
    assert link.drops == 1
    assert handle.link.stats is link.stats and handle.link.port == link.port


def test_faults_base_offers_nothing() -> None:
    bare = Faults("bare")
    assert bare.supported == frozenset()
    with pytest.raises(FaultUnsupported, match="on the bare backend \\(it offers: none\\)"):
        bare.cut_link()


def test_the_virtual_device_takes_the_firmware_console_commands(loop: LoopThread, ca: FleetCA,
                                                               tmp_path: Path) -> None:
    backend = get_backend("virtual")(loop, tmp_path)
    handle = backend.create("v", ca.issue_device("v"), ("127.0.0.1", 9))
    device = handle.device  # type: ignore[attr-defined]
    # The reference model has them all, link impairments included: it dials the gateway
    # through its relay, whose listener the device's link handle names.
    assert handle.faults.supported == set(Faults.ACTIONS)
    assert handle.link.raw is backend.relays["v"]
    assert (device.config.gateway_host, device.config.gateway_port) == ("127.0.0.1",
                                                                         handle.link.port)
    with handle.faults.impair(Partition()) as partition:
        assert handle.link.impairments == [partition]
    assert handle.link.impairments == []
    device.flash.device_id = bytes(16)
    handle.write_line("silent 1")
    assert device.faults.silent
    handle.faults.silence(False)
    assert not device.faults.silent
    handle.write_line("forget")
    assert handle.device_id is None
    handle.write_line("dance")
    assert handle.console[-3:][0].endswith("heartbeats resumed")
    assert handle.console[-2].endswith("device id forgotten")
    assert handle.console[-1].endswith('console: unknown command "dance"')
    handle.faults.drop_link_after_chunks(3)
    handle.faults.corrupt_proof()
    assert device.faults.drop_after_chunks == 3 and device.faults.corrupt_proof
    handle.faults.cut_link()  # no connection yet: nothing to cut
    handle.close()
    assert backend.relays == {}  # the relay stopped with its device
    backend.close()
    backend.close()


def test_a_virtual_device_without_relay_dials_the_gateway_and_has_no_link(
    loop: LoopThread, ca: FleetCA, tmp_path: Path
) -> None:
    backend = get_backend("virtual")(loop, tmp_path)
    handle = backend.create("direct", ca.issue_device("direct"), ("127.0.0.1", 9), relay=False)
    assert handle.device.config.gateway_port == 9  # type: ignore[attr-defined]
    assert backend.relays == {}
    with pytest.raises(RuntimeError, match="has no link to impair"):
        handle.link.add(Partition())
    kept = backend.create("kept", ca.issue_device("kept"), ("127.0.0.1", 9))
    port = kept.link.port
    handle.close()
    backend.close()  # closes the relay of a device not closed itself

    async def dial() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()

    with pytest.raises(OSError):
        loop.run(dial())


class FakeFirmwareBackend(FirmwareBackend):
    name = "fake"
    board = "fake board (tests)"

    @classmethod
    def firmware_image(cls) -> Path:
        return Path("/nonexistent/wasmbed.elf")  # never read: the fake machine runs nothing

    def make_machine(self, name: str, devdir: Path, blob: Path, link: Any) -> FakeMachine:
        assert blob.is_file() and devdir == blob.parent and link.port > 0
        return FakeMachine(name)


def test_a_firmware_backend_is_its_machine_and_closes_its_links(loop: LoopThread, ca: FleetCA,
                                                                tmp_path: Path) -> None:
    backend = FakeFirmwareBackend(loop, tmp_path)
    with pytest.raises(TypeError, match=r"not supported on the fake backend: \['warp'\]"):
        backend.create("d", ca.issue_device("d"), ("127.0.0.1", 9), warp=9)
    assert backend.bridge.links == {}
    handle = backend.create("d", ca.issue_device("d"), ("127.0.0.1", 9), max_apps=2)
    assert isinstance(handle, FirmwareDeviceHandle) and handle.backend == "fake"
    assert isinstance(handle.machine, FakeMachine)
    link = backend.bridge.links["d"]
    assert handle.link.raw is link and handle.link.port == link.port

    async def dial() -> None:  # the listener is open until the backend closes
        _, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.close()

    loop.run(dial())
    handle.close()  # frees the name: a device of the same name can be made again
    assert backend.bridge.links == {}
    again = backend.create("d", ca.issue_device("d"), ("127.0.0.1", 9))
    link = backend.bridge.links["d"]
    assert again.link.raw is link
    backend.close()
    assert backend.bridge.links == {}
    with pytest.raises(OSError):
        loop.run(dial())
    backend.close()  # twice is harmless
    assert FakeFirmwareBackend.provenance()["board"] == "fake board (tests)"


def test_backends_declare_their_own_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    class Group:
        def __init__(self) -> None:
            self.added: dict[str, dict[str, Any]] = {}

        def addoption(self, *opts: str, **attrs: Any) -> None:
            self.added[opts[0]] = attrs

    group = Group()
    for cls in backend_classes():
        cls.add_options(group)
    # the firmware backends share --hil-firmware and --hil-board (the plugin declares them once)
    assert set(group.added) == {"--renode-binary", "--renode-remote", "--virtual-relay",
                                "--hil-firmware", "--hil-board", "--board-env",
                                "--board-coordinator", "--board-places", "--board-lab",
                                "--board-wait", "--qemu-link"}
    assert "for --hil-backend=qemu; sets $WASMBED_QEMU_LINK" in group.added["--qemu-link"]["help"]
    assert "for firmware backends (qemu, renode" in group.added["--hil-firmware"]["help"]
    assert "sets $WASMBED_BOARD_LAB" in group.added["--board-lab"]["help"]
    assert group.added["--renode-binary"]["dest"] == "renode_binary"
    assert "sets $WASMBED_RENODE_REMOTE" in group.added["--renode-remote"]["help"]
    assert "for --hil-backend=renode; sets $WASMBED_RENODE" in group.added[
        "--renode-binary"]["help"]
    monkeypatch.setenv("WASMBED_RENODE", "restored at teardown")  # apply_options sets it
    monkeypatch.delenv("WASMBED_RENODE")
    renode = get_backend("renode")
    renode.apply_options({"renode_binary": None}.get)
    assert "WASMBED_RENODE" not in os.environ
    renode.apply_options({"renode_binary": "/opt/renode/renode"}.get)
    (option,) = [o for o in renode.options if o.flag == "--renode-binary"]
    assert option.value() == "/opt/renode/renode"
    from wasmbed_hil.bench.backends.virtual import relay_default

    monkeypatch.setenv("WASMBED_VIRTUAL_RELAY", "0")
    assert relay_default() is False
    monkeypatch.setenv("WASMBED_VIRTUAL_RELAY", "on")
    assert relay_default() is True
    monkeypatch.setenv("WASMBED_VIRTUAL_RELAY", "maybe")
    with pytest.raises(ValueError, match="expected 1 or 0"):
        relay_default()


def test_every_backend_labels_its_runs() -> None:
    for cls in backend_classes():
        assert issubclass(cls, Backend)
        assert cls.provenance().get("board"), cls.name
    assert "QEMU" in get_backend("qemu").provenance()["board"]
    assert "Renode" in get_backend("renode").provenance()["board"]
    assert set(get_backend("qemu").environment()) == {"qemu"}
    assert BackendOption("--x-y", "X_Y", "h").dest == "x_y"
