"""What a Renode binary can do, found out once per (binary, platform) before any device boots.

Two questions, one throw-away Renode process (``renode --disable-xwt --port 0``):

- Which peripheral types of the platform (.repl) it lacks. The version banner cannot tell:
  nightlies print the version of the last release (infra EmulationManager.cs:327-333), so
  a model added after it (Timers.Arm_CMSDK_Timer, 2026-07-01) is found by loading the
  platform on a scratch machine (``mach create``, ``machine LoadPlatformDescription @…``,
  ``mach rem``) and reading ``Error E04: Could not resolve type: 'X'`` (Renode's
  CreationDriver.cs:1899; ParsingError.cs ``TypeNotResolved = 4``). The backend is then
  unavailable and the scenarios skip, naming X.
- Whether ``--port 0`` works: Renode binds an unused port, but only infra after 39bcc9f63
  (2026-05-08, no release yet) logs the bound one in "Monitor available in telnet mode on
  port N"; every release up to 1.16.1 logs the requested 0. Then the probe (and every
  boot after it) falls back to a port picked beforehand (machine.pick_free_ports).

Results are cached per process (one probe per pytest worker and binary), failures too.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ...errors import MachineError
from .machine import RenodeProcess, pick_free_ports
from .monitor import MonitorClient, MonitorError, MonitorTransport
from .refusals import PortNotAnnounced, missing_types
from .scripts import check_name, check_path

PROBE_MACHINE = "wasmbed_probe"


@dataclass(frozen=True)
class PlatformCheck:
    """The outcome of loading a platform on a scratch machine."""

    missing_types: tuple[str, ...]
    errors: tuple[str, ...]  # every error line of the load (E04 ones included)

    @property
    def loads(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class RenodeProfile:
    binary: str
    platform: Path
    check: PlatformCheck
    port_zero: bool  # announces the port it bound for --port 0
    version: tuple[int, int, int] | None

    def unavailable_reason(self) -> str | None:
        """Why devices cannot boot on this platform here (a missing model), or None."""
        if not self.check.missing_types:
            return None
        return (f"Renode at {self.binary} has no peripheral model "
                f"{', '.join(self.check.missing_types)} that {self.platform.name} uses "
                "(Error E04: Could not resolve type; see renode/README.md)")


async def check_platform(monitor: MonitorTransport, platform: Path,
                         timeout: float = 60.0) -> PlatformCheck:
    """Load ``platform`` on a scratch machine and remove the machine again."""
    name = check_name(PROBE_MACHINE, "machine name")
    path = check_path(platform, "platform")
    await monitor.execute(f'mach create "{name}"', timeout=timeout)
    try:
        reply = await monitor.execute(f"machine LoadPlatformDescription @{path}",
                                      timeout=timeout, check=False)
    finally:
        await monitor.execute(f'mach rem "{name}"', timeout=timeout, check=False)
    text = "\n".join([*reply.errors, reply.output])
    return PlatformCheck(missing_types(text), reply.errors)


class RenodeProcessLike(Protocol):
    """The part of machine.RenodeProcess the probe uses."""

    async def start(self, port: int, timeout: float) -> int: ...

    async def kill(self) -> None: ...


ProcessFactory = Callable[[str, Path], RenodeProcessLike]


async def probe(binary: str, platform: Path, logdir: Path, *, timeout: float = 60.0,
                process_factory: ProcessFactory | None = None) -> RenodeProfile:
    """Start a scratch Renode, check the platform, quit it."""
    factory: ProcessFactory = process_factory or RenodeProcess
    process = factory(binary, logdir / "renode-probe.log")
    port_zero = True
    try:
        try:
            port = await process.start(0, timeout)
        except PortNotAnnounced:
            await process.kill()
            port_zero = False
            process = factory(binary, logdir / "renode-probe.log")
            port = await process.start(pick_free_ports(1)[0], timeout)
        try:
            client = await MonitorClient.connect("127.0.0.1", port, timeout=timeout)
        except MonitorError as exc:
            raise MachineError(f"renode probe: {exc}") from exc
        try:
            check = await check_platform(client, platform, timeout)
            version = client.version
            await client.quit(timeout=10)
        except MonitorError as exc:
            raise MachineError(f"renode probe: {exc}") from exc
        finally:
            client.close()
    finally:
        await process.kill()
    return RenodeProfile(binary, platform, check, port_zero, version)


_PROFILES: dict[tuple[str, str], RenodeProfile] = {}
_FAILED: dict[tuple[str, str], MachineError] = {}
_LOCK = threading.Lock()


def profile(binary: str, platform: Path, *, timeout: float = 60.0,
            process_factory: ProcessFactory | None = None) -> RenodeProfile:
    """The cached profile of ``binary`` with ``platform`` (probed on first use, in a thread
    of its own so that it works whether or not the caller runs an event loop)."""
    key = (binary, str(platform))
    with _LOCK:
        if key in _PROFILES:
            return _PROFILES[key]
        if key in _FAILED:  # a Renode that did not come up is not started again
            raise _FAILED[key]
        result: list[RenodeProfile] = []
        errors: list[BaseException] = []

        def run() -> None:
            with tempfile.TemporaryDirectory(prefix="wasmbed-renode-probe-") as logdir:
                try:
                    result.append(asyncio.run(probe(binary, platform, Path(logdir),
                                                    timeout=timeout,
                                                    process_factory=process_factory)))
                except BaseException as exc:  # re-raised in the caller's thread
                    errors.append(exc)

        worker = threading.Thread(target=run, name="renode-probe")
        worker.start()
        worker.join()
        if errors:
            if isinstance(errors[0], MachineError):
                _FAILED[key] = errors[0]
            raise errors[0]
        _PROFILES[key] = result[0]
        return result[0]


def cached(binary: str) -> RenodeProfile | None:
    """Any profile of ``binary`` probed so far (for its --port 0 behaviour)."""
    return next((p for (b, _), p in _PROFILES.items() if b == binary), None)


def forget() -> None:
    """Drop every cached profile (tests)."""
    with _LOCK:
        _PROFILES.clear()
        _FAILED.clear()
