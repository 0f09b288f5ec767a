"""What every firmware backend shares: the console-driven device handle and the backend base.

A firmware device is the real firmware image on a Machine (bench.machines.base: QEMU,
Renode, later a board), its identity in a per-device blob, its UART1 wired through a Link
(bench.seams.Link; the bridge's) to the gateway and its UART0 console read into the handle.
Lifecycle states come from the console lines the firmware prints (bench.console), the same
ones the virtual device prints, so the handle needs nothing of the machine beyond the
Machine protocol: one handle for every firmware backend.

A firmware backend is a FirmwareBackend with a `make_machine` (and its own availability
check and board label); option checks, the blob and the link live here.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from abc import abstractmethod
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

from ...gateway.events import EventLog
from ...pki import Credentials
from ...protocol import ErrorCode
from ..boards import BOARD_ENV, DEFAULT_BOARD, Board, BoardError, board_names, resolve_board
from ..console import parse_line
from ..consolelog import ConsoleLog
from ..device import DeviceHandle, Faults, Lifecycle
from ..errors import InfrastructureError, MachineDied
from ..firmware.image import FIRMWARE_ENV, FirmwareImageError, check_image
from ..link.bridge import Bridge
from ..link.pump import Impairment
from ..linkhandle import LinkHandle
from ..loop import LoopThread
from ..machines.base import Machine
from ..points import DeviceAction
from ..seams import Link
from .base import Backend, BackendOption

# device_factory(**options) the firmware accepts, carried in the blob's configuration entry.
DEVICE_OPTIONS = {"max_frame_size", "max_module_size", "window", "max_apps"}
# Reconnect timing like the virtual device's (the firmware's own defaults suit a fleet in the
# field: 30 s after a refusal), so scenarios need not wait half a minute.
HARNESS_TIMING = {"backoff_initial_ms": 50, "backoff_max_ms": 1000, "reject_backoff_ms": 1000,
                  "setup_timeout_ms": 5000}


class FirmwareFaults(Faults):
    """Faults a firmware device shows on command: silence through its console, a cut link
    through the link. The others need hooks in the firmware that it does not have."""

    def __init__(self, handle: FirmwareDeviceHandle) -> None:
        super().__init__(handle.backend)
        self._handle = handle

    def silence(self, silent: bool = True) -> None:
        self._handle.write_line(f"silent {int(silent)}")

    def cut_link(self) -> None:
        self._handle.loop.run(self._handle.on_loop("cut_link"))

    def impair(self, impairment: Impairment) -> contextlib.AbstractContextManager[Impairment]:
        return self._handle.link.impair(impairment)  # one path: the device's LinkHandle


class FirmwareDeviceHandle(DeviceHandle):
    """A DeviceHandle over a Machine and a Link: power, reset and console go to the machine,
    the lifecycle follows the console, byte counters come from the link."""

    def __init__(
        self,
        loop: LoopThread,
        name: str,
        credentials: Credentials,
        machine: Machine,
        link: Link,
        *,
        backend: str,
        release: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`release()` closes the link for good when the device is closed (default:
        `link.close`; a backend that keeps its links by name also forgets this one)."""
        super().__init__(name, credentials)
        self.backend = backend
        self._loop = loop
        self.machine = machine
        self._link = link
        self._link_handle = LinkHandle(loop, link, name)
        self._release = release or link.close
        self.events = EventLog()
        self._lifecycle = Lifecycle.OFF
        self._device_id: str | None = None
        self._last_reject: tuple[ErrorCode, str] | None = None
        self._faults = FirmwareFaults(self)
        self.online_count = 0
        machine.on_line = self._on_line

    # Console lines arrive on the loop thread.
    def _on_line(self, line: str) -> None:
        if self.machine.died is not None and self._lifecycle is not Lifecycle.OFF:
            self._set(Lifecycle.OFF)  # wakes the lifecycle waits, which raise the death
            return
        event = parse_line(line)
        if event is None:
            return
        if event.kind == "online":
            self._device_id = event.device_id
            self._last_reject = None
            self.online_count += 1
            self._set(Lifecycle.ONLINE)
        elif event.kind == "rejected":
            assert event.code is not None
            self._last_reject = (event.code, event.reason)
            self._set(Lifecycle.REJECTED)
        elif event.kind == "down" and self._lifecycle is not Lifecycle.REJECTED:
            self._set(Lifecycle.BACKOFF)
        elif event.kind == "connecting" and self._lifecycle is not Lifecycle.REJECTED:
            self._set(Lifecycle.CONNECTING)

    def _set(self, state: Lifecycle) -> None:
        self._lifecycle = state
        self.events.emit("lifecycle", None, state=state.value)

    @property
    def device_id(self) -> str | None:
        return self._device_id

    @property
    def lifecycle(self) -> Lifecycle:
        return self._lifecycle

    @property
    def console_log(self) -> ConsoleLog:
        return self.machine.console

    @property
    def died(self) -> MachineDied | None:
        return self.machine.died

    def console_records(self) -> list[tuple[float, str]]:
        return self.machine.console.timed()

    @property
    def gdb_port(self) -> int | None:
        return getattr(self.machine, "gdb_port", None)

    @property
    def gdb_halted(self) -> bool:
        gdb = getattr(self.machine, "gdb", None)
        return bool(gdb is not None and self.gdb_port is not None and gdb.halted)

    def gdb_hint(self) -> str:
        hint = getattr(self.machine, "gdb_hint", None)
        return hint() if hint is not None else ""

    @property
    def last_reject(self) -> tuple[ErrorCode, str] | None:
        return self._last_reject

    @property
    def faults(self) -> Faults:
        return self._faults

    async def on_loop(self, action: DeviceAction) -> None:
        if action == "power_on":
            await self.machine.start()
        elif action == "power_off":
            await self.machine.power_cut()
            self._set(Lifecycle.OFF)
        elif action == "reset":
            # The machine's reset (QMP system_reset, Renode's machine Reset...): the same
            # machine, the firmware boots again.
            await self.machine.reset()
            self._set(Lifecycle.CONNECTING)
        elif action == "reboot":
            await self.on_loop("power_off")
            await self.on_loop("power_on")
        elif action == "cut_link":
            await self._link.drop_upstream()
        else:
            raise ValueError(f"unknown device action {action!r}")

    @property
    def powered(self) -> bool:
        return self.machine.running

    def power_on(self) -> None:
        self._loop.run(self.on_loop("power_on"))

    def power_off(self) -> None:
        if self._loop.alive:
            self._loop.run(self.on_loop("power_off"))

    def reset(self) -> None:
        """The machine's reset: the firmware boots again (a following wait_online() waits
        for the new session)."""
        self._loop.run(self.on_loop("reset"))

    def close(self) -> None:
        if self._loop.alive:
            self._loop.run(self.machine.close())
            self._loop.run(self._release())
            self._loop.call(self._set, Lifecycle.OFF)

    def write_line(self, line: str) -> None:
        self.raise_if_died()
        self._loop.run(self.machine.write_console(line + "\n"))

    def forget_enrollment(self) -> None:
        # The device id lives in RAM on these boards: a power cycle forgets it; a running
        # device is told through its console.
        if self.machine.running:
            self.write_line("forget")

    @property
    def lifecycle_events(self) -> EventLog:
        return self.events

    @property
    def loop(self) -> LoopThread:
        return self._loop

    def extra_seen(self) -> str:
        if self.machine.running:
            return ""
        report = self.machine.exit_report() or "nothing reported"
        return f", {self.machine.label} not running ({report})"

    def stats(self) -> dict[str, Any]:
        s = self._link.stats
        return {
            "connections": s.upstream_connections,
            **self.machine.stats(),
            "bytes_up": s.bytes_up,
            "bytes_down": s.bytes_down,
            "online_count": self.online_count,
        }


_DIGESTS: dict[Path, str] = {}


def firmware_digest(path: Path | None = None) -> str | None:
    """A short sha256 of the firmware image ``path`` (default: our built image; None when
    there is none), for reports."""
    from ..firmware.build import image_path

    if path is None:
        try:
            path = image_path()
        except (ValueError, InfrastructureError):  # no such board, or no sources at all
            return None
    if path not in _DIGESTS:
        try:
            data = path.read_bytes()
        except OSError:
            return None  # not built (yet): asked again later
        _DIGESTS[path] = f"{path.name} sha256:{hashlib.sha256(data).hexdigest()[:16]}"
    return _DIGESTS[path]


_SHA256: dict[tuple[Path, int, int], str] = {}


def firmware_sha256(path: Path) -> str | None:
    """The full sha256 (hex) of the image at `path` (None when it is not there); computed
    once per file version (path, mtime, size)."""
    try:
        st = path.stat()
    except OSError:
        return None
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _SHA256:
        try:
            _SHA256[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return None
    return _SHA256[key]


def image_facts(board_label: str, path: Path | None = None) -> dict[str, str]:
    """What identifies the image a firmware scenario ran: its path, board, size, full
    sha256 and its linker map (firmware/Makefile writes wasmbed.map next to the ELF)."""
    from ..firmware.build import image_path

    if path is None:
        try:
            path = image_path()
        except (ValueError, InfrastructureError):  # no such board, or no sources at all
            return {"board": board_label, "path": "-", "sha256": "no firmware sources"}
    facts = {"board": board_label, "path": str(path)}
    digest = firmware_sha256(path)
    if digest is None:
        facts["sha256"] = "not built"
        return facts
    facts["sha256"] = digest
    facts["size"] = str(path.stat().st_size)
    linker_map = path.with_suffix(".map")
    if linker_map.is_file():
        facts["map"] = str(linker_map)
    return facts


def firmware_image(port: str | None = None) -> Path:
    """Our firmware image for the port ``port`` (firmware/ports/<port>, default the default
    board's), built if the toolchain is here (no emulator needed for that), else one built
    earlier."""
    from ..firmware.build import (
        DEFAULT_BOARD,
        FirmwareBuildError,
        ensure_image,
        image_path,
        missing_tools,
    )

    port = port or DEFAULT_BOARD
    missing = missing_tools()
    if not missing:
        return ensure_image(board=port)
    elf = image_path(port)
    if elf.is_file():
        return elf
    raise FirmwareBuildError(
        f"no firmware image at {elf} and {', '.join(missing)} not installed to build it"
    )


def given_image() -> Path | None:
    """The user's own image (--hil-firmware, i.e. $WASMBED_HIL_FIRMWARE), checked; None when
    none is given (our image is built then)."""
    value = FIRMWARE.value()
    return check_image(value) if value else None


def image_unavailable_reason() -> str | None:
    """Why no firmware image can be had here (neither given, built nor buildable), or None."""
    from ..firmware.build import image_path, missing_tools

    if FIRMWARE.value():
        return None  # checked when the run starts (pytest: a usage error)
    missing = missing_tools()
    if missing and not image_path().is_file():
        return (
            f"{', '.join(missing)} not installed and no firmware image at "
            f"{image_path()} (Debian: gcc-arm-none-eabi picolibc-arm-none-eabi make)"
        )
    return None


FIRMWARE = BackendOption(
    "--hil-firmware", FIRMWARE_ENV,
    "your own firmware image, an ELF for ARM, instead of ours (then nothing is built); "
    "pytest --pyargs wasmbed_hil.conformance checks that it meets the contract",
    backends="firmware backends (qemu, renode, board)",
)
BOARD = BackendOption(
    "--hil-board", BOARD_ENV,
    f"the board: the name of a shipped board ({', '.join(board_names())}; default "
    f"{DEFAULT_BOARD}) or the path of a board file (docs/firmware-contract.md)",
    backends="firmware backends (qemu, renode, board)",
)


class FirmwareBackend(Backend):
    """A backend that runs a firmware image, one Machine per device.

    Subclasses set `emulator` (the report's label: "QEMU", "Renode"; or `board`, a fixed
    label) and implement `make_machine`; they usually also say when they are unavailable.
    The board (`board_spec`) comes from --hil-board; the image is the user's (--hil-firmware,
    or per device `firmware=`) or ours, built on first use. The devices are
    FirmwareDeviceHandles.
    """

    board: ClassVar[str] = ""
    emulator: ClassVar[str] = ""
    runs_firmware = True
    options = (FIRMWARE, BOARD)

    def __init__(self, loop: LoopThread, workdir: Path) -> None:
        super().__init__(loop, workdir)
        self.board_spec: Board = resolve_board()
        self.bridge = Bridge()
        self._images: dict[str, Path] = {}

    @functools.cached_property
    def elf(self) -> Path:
        """The image of devices that were given none of their own: the user's
        (--hil-firmware) or ours, built now (not before a device needs it)."""
        return self.firmware_image()

    def image_of(self, name: str) -> Path:
        """The image device `name` runs: its own (``firmware=``) or the backend's."""
        return self._images.get(name) or self.elf

    @classmethod
    def firmware_image(cls) -> Path:
        """The user's image if one is given, else ours for the board's firmware port."""
        given = given_image()
        if given is not None:
            return given
        board = resolve_board()
        if board.firmware_port is None:
            raise FirmwareImageError(
                f"board {board.name} ({board.source}) has no firmware of ours (no "
                "firmware_port): give your image with --hil-firmware or firmware=PATH")
        return firmware_image(board.firmware_port)

    @classmethod
    def board_label(cls) -> str:
        """The board as reports name it: the board file's (--hil-board) and the emulator,
        or the class's fixed `board` label."""
        if cls.emulator:
            try:
                return resolve_board().label(cls.emulator)
            except BoardError:
                return cls.board or cls.emulator
        return cls.board

    @classmethod
    def run_image(cls) -> Path | None:
        """The image the run's devices run unless given their own: the user's
        (--hil-firmware), else ours for the board's port (None when there is none)."""
        from ..firmware.build import image_path

        try:
            given = given_image()
            if given is not None:
                return given
            port = resolve_board().firmware_port
            return image_path(port) if port else None
        except (ValueError, InfrastructureError):  # bad settings (a usage error), no sources
            return None

    @classmethod
    def image(cls) -> dict[str, str]:
        return image_facts(cls.board_label(), cls.run_image())

    @classmethod
    def provenance(cls) -> dict[str, str]:
        labels = {"board": cls.board_label()}
        digest = firmware_digest(cls.run_image())
        if digest:
            labels["firmware"] = digest
        return labels

    @abstractmethod
    def make_machine(self, name: str, devdir: Path, blob: Path, link: Link) -> Machine:
        """A powered-off machine for device `name`: the image `self.image_of(name)`, the
        device's `blob`, its link UART dialling `link.port`; `devdir` is its own directory."""

    def create(
        self, name: str, credentials: Credentials, endpoint: tuple[str, int], **options: Any
    ) -> FirmwareDeviceHandle:
        """``firmware=PATH``: this device runs that image (checked first); the other
        options are the blob's configuration (DEVICE_OPTIONS)."""
        from ..firmware.blob import build_blob

        firmware = options.pop("firmware", None)
        unknown = set(options) - DEVICE_OPTIONS
        if unknown:
            raise TypeError(
                f"options not supported on the {self.name} backend: {sorted(unknown)} "
                f"(supported: {sorted(DEVICE_OPTIONS | {'firmware'})})"
            )
        if firmware is not None:
            self._images[name] = check_image(firmware)
        else:
            self._images.pop(name, None)
        devdir = (self.workdir / "machines" / name).resolve()
        devdir.mkdir(parents=True, exist_ok=True)
        blob = devdir / "blob.bin"
        config = {**HARNESS_TIMING, **self.link_config(name), **options}
        data = build_blob(credentials, name, "localhost", seed=os.urandom(32), config=config)
        if len(data) > self.board_spec.blob_max_size:
            raise InfrastructureError(
                f"{name}: the per-device blob is {len(data)} bytes, more than the "
                f"{self.board_spec.blob_max_size} the board {self.board_spec.name} has room "
                f"for (blob.max_size in {self.board_spec.source})")
        blob.write_bytes(data)
        link = self.loop.run(self.open_link(name, endpoint))
        try:
            machine = self.make_machine(name, devdir, blob, link)
        except BaseException:
            self.loop.run(self.close_link(name))
            raise
        # Closing the device frees its name on the bridge: a device of the same name (a
        # Device resource deleted and made again) gets a new link.
        return FirmwareDeviceHandle(self.loop, name, credentials, machine, link,
                                    backend=self.name,
                                    release=functools.partial(self.close_link, name))

    def link_config(self, name: str) -> dict[str, int]:
        """Blob configuration for device `name`'s link (none: the port's link UART); the qemu
        backend asks for Ethernet here."""
        return {}

    async def open_link(self, name: str, endpoint: tuple[str, int]) -> Link:
        """The link of device `name` to the gateway at `endpoint` (on the loop): a bridge
        listener its machine's UART dials; a backend whose UART the harness opens (a
        board's serial port) overrides it."""
        return await self.bridge.open_link(name, endpoint)

    async def close_link(self, name: str) -> None:
        """Close device `name`'s link (after its machine is closed)."""
        await self.bridge.close_link(name)

    def close(self) -> None:
        if self.loop.alive:
            self.loop.run(self.bridge.close())
