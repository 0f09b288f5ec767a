"""Boards through labgrid: taking a free one, and its power, flasher and serial ports.

Two ways to get a board, both giving a `LabgridBoard` (a bench.machines.board.BoardControl):

- `take_local(env_file, pattern, timeout)`: a target of a labgrid environment file whose
  name matches the glob `pattern`. Harness processes on the machine (pytest-xdist workers)
  share the file: a board is theirs while they hold an exclusive lock on
  ``.wasmbed-locks/<target>.lock`` beside it. Its serial ports are the RawSerialPorts
  named ``console`` and ``link``, opened here as ttys; its power is the target's
  PowerProtocol driver; its flasher the target option ``wasmbed_flasher``.
- `take_remote(coordinator, tags, timeout)`: a place of a labgrid coordinator whose tags
  match (``KEY=VALUE``), reserved and acquired with ``labgrid-client`` (the coordinator
  gives each reservation a different free place, so workers never share one), released and
  its reservation cancelled at the end. Its resources come from labgrid's RemotePlace:
  NetworkSerialPorts ``console`` and ``link`` (ser2net's telnet ports, opened here
  raw), a NetworkPowerPort driven by NetworkPowerDriver, and the stand-in's flasher beside
  its power URL.

When no board is free within `timeout`: BoardUnavailable, an infrastructure error.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..errors import InfrastructureError
from ..link.serial import open_pty, open_telnet
from .board import UartOpener

CONSOLE, LINK = "console", "link"
FLASHER_OPTION = "wasmbed_flasher"
TAG = re.compile(r"^[a-z][a-z0-9_]+=[A-Za-z0-9_.-]+$")


class BoardUnavailable(InfrastructureError):
    """No board could be had: none free in time, or the lab does not answer."""


def labgrid_unavailable_reason() -> str | None:
    try:
        import labgrid  # noqa: F401
    except ImportError as exc:
        return f"labgrid is not installed ({exc.name}): pip install 'wasmbed-hil[board]'"
    return None


def _flash_http(url: str, image: Path, blob: Path, timeout: float = 60.0) -> None:
    """Put the image and the blob to a flasher URL (``{url}/image``, ``{url}/blob``)."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"flasher {url!r} is not an http(s) URL")
    for part, path in (("image", image), ("blob", blob)):
        request = urllib.request.Request(f"{url.rstrip('/')}/{part}", data=path.read_bytes(),
                                         method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                pass
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"flashing {part}: {exc.code} "
                               f"{exc.read().decode(errors='replace').strip()}") from exc


class LabgridBoard:
    """One board taken from a lab; `release()` gives it back."""

    def __init__(self, name: str, target: Any, flasher: str, openers: dict[str, UartOpener],
                 on_release: list[Any]) -> None:
        self.name = name
        self.target = target
        self.flasher = flasher
        self._openers = openers
        self._on_release = on_release
        self._power: Any = None
        self._maybe_on = True  # as found: a run that crashed may have left it on

    @property
    def power(self) -> Any:
        if self._power is None:
            self._power = self.target.get_driver("PowerProtocol")
        return self._power

    def power_on(self) -> None:
        self._maybe_on = True
        self.power.on()

    def power_off(self) -> None:
        self.power.off()
        self._maybe_on = False

    def power_cycle(self) -> None:
        self._maybe_on = True
        self.power.cycle()

    def flash(self, image: Path, blob: Path) -> None:
        _flash_http(self.flasher, image, blob)

    def uart(self, role: str) -> UartOpener:
        if role not in self._openers:
            raise ValueError(f"board {self.name} has no serial port {role!r}")
        return self._openers[role]

    def release(self) -> None:
        """Power off, deactivate labgrid's drivers and give the board back."""
        errors = []
        if self._maybe_on:
            try:
                self.power_off()
            except Exception as exc:
                errors.append(f"power off: {exc}")
        for step in [self.target.cleanup, *self._on_release]:
            try:
                step()
            except Exception as exc:
                errors.append(f"{getattr(step, '__name__', step)}: {exc}")
        if errors:
            raise InfrastructureError(f"releasing board {self.name}: {'; '.join(errors)}")


# ------------------------------------------------------------------------- local boards


def _lock_free_target(env_file: Path, names: list[str], timeout: float) -> tuple[str, int]:
    lockdir = env_file.parent / ".wasmbed-locks"
    lockdir.mkdir(exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        for name in names:
            fd = os.open(lockdir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return name, fd
        if time.monotonic() >= deadline:
            raise BoardUnavailable(
                f"no free board among {len(names)} target(s) of {env_file} after "
                f"{timeout:.0f} s: all are taken by other harness processes"
            )
        time.sleep(0.1)  # another process's lock: flock has no wait with a timeout


def take_local(env_file: Path, pattern: str = "*", timeout: float = 120.0) -> LabgridBoard:
    """A free target of `env_file` matching `pattern`, locked for this process."""
    from labgrid import Environment
    from labgrid.exceptions import InvalidConfigError, NoResourceFoundError

    if not env_file.is_file():
        raise BoardUnavailable(f"labgrid environment file {env_file} not found")
    try:
        env = Environment(str(env_file))
    except Exception as exc:
        raise BoardUnavailable(f"labgrid environment {env_file}: {exc}") from exc
    # labgrid takes the file's structure on trust: a wrong shape is an AttributeError or a
    # KeyError deep inside it, so what the backend reads is checked here first.
    targets = env.config.get_targets()
    if not isinstance(targets, dict):
        raise BoardUnavailable(f"labgrid environment {env_file}: targets must be a mapping of "
                               f"target names, not {type(targets).__name__}")
    names = sorted(n for n in targets if fnmatch.fnmatchcase(str(n), pattern))
    if not names:
        raise BoardUnavailable(f"no target of {env_file} matches {pattern!r}")
    name, fd = _lock_free_target(env_file, names, timeout)
    try:
        if not isinstance(targets[name], dict) or not targets[name]:
            raise BoardUnavailable(f"target {name} of {env_file} must be a mapping with its "
                                   "resources, drivers and options")
        try:
            target = env.get_target(name)
        except InvalidConfigError as exc:
            raise BoardUnavailable(f"target {name} of {env_file}: {exc}") from exc
        ports = {}
        for role in (CONSOLE, LINK):
            try:
                ports[role] = target.get_resource("RawSerialPort", name=role).port
            except NoResourceFoundError as exc:
                raise BoardUnavailable(
                    f"target {name} of {env_file} has no RawSerialPort named {role!r}"
                ) from exc
        # A default: without one labgrid raises KeyError for a missing option.
        flasher = env.config.get_target_option(name, FLASHER_OPTION, "")
        if not flasher:
            raise BoardUnavailable(f"target {name} of {env_file} has no option "
                                   f"{FLASHER_OPTION!r} (its flasher)")
        if not isinstance(flasher, str):
            raise BoardUnavailable(f"target {name} of {env_file}: option {FLASHER_OPTION!r} "
                                   f"must be the flasher's http(s) URL, not "
                                   f"{type(flasher).__name__}")
    except BaseException:
        os.close(fd)
        raise

    def opener(path: str) -> UartOpener:
        return lambda: open_pty(path)

    return LabgridBoard(name, target, str(flasher),
                        {role: opener(path) for role, path in ports.items()},
                        [lambda: os.close(fd)])


# ------------------------------------------------------------------------ remote boards


def labgrid_client() -> str:
    beside = Path(sys.executable).parent / "labgrid-client"
    found = str(beside) if beside.is_file() else shutil.which("labgrid-client")
    if found is None:
        raise BoardUnavailable("labgrid-client not found: pip install 'wasmbed-hil[board]'")
    return found


def _client(coordinator: str, *args: str, token: str | None = None,
            timeout: float = 60.0) -> str:
    env = {**os.environ, "LG_COORDINATOR": coordinator}
    if token:
        env["LG_TOKEN"] = token
    try:
        run = subprocess.run([labgrid_client(), "-x", coordinator, *args], capture_output=True,
                             text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        raise BoardUnavailable(f"labgrid-client {' '.join(args)}: no answer from the "
                               f"coordinator {coordinator} in {timeout:.0f} s") from exc
    if run.returncode != 0:
        raise BoardUnavailable(f"labgrid-client {' '.join(args)} failed: "
                               f"{(run.stderr or run.stdout).strip()}")
    return run.stdout


def _reserve(coordinator: str, tags: list[str], timeout: float) -> str:
    """A reservation token, once the coordinator allocated a place to it."""
    proc = subprocess.Popen(
        [labgrid_client(), "-x", coordinator, "reserve", "--wait", "--shell", *tags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "LG_COORDINATOR": coordinator},
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        token = _token(out)
        if token:
            with contextlib.suppress(BoardUnavailable):
                _client(coordinator, "cancel-reservation", token)
        raise BoardUnavailable(
            f"no free place tagged {' '.join(tags)} at the coordinator {coordinator} "
            f"after {timeout:.0f} s: all are acquired"
        ) from None
    token = _token(out)
    if proc.returncode != 0 or not token:
        raise BoardUnavailable(f"labgrid-client reserve {' '.join(tags)} failed: "
                               f"{(err or out).strip()}")
    return token


def _token(out: str) -> str | None:
    match = re.search(r"LG_TOKEN=(\S+)", out or "")
    return match.group(1) if match else None


def _flasher_beside(power_url: str, index: int) -> str:
    """The stand-in's flasher URL beside its simplerest power URL."""
    head, sep, _ = power_url.partition("/power/")
    if not sep:
        raise BoardUnavailable(f"power port {power_url!r} is not a stand-in's: no flasher known")
    return f"{head}/flash/{index}"


def _sync_remote_session(timeout: float = 30.0) -> None:
    """Let labgrid's client session of this process (one, kept by RemotePlaceManager)
    take in what the coordinator told it since it last ran: the acquisition just made by
    labgrid-client is otherwise unknown to it."""
    import asyncio

    from labgrid.resource.remote import RemotePlaceManager

    manager = RemotePlaceManager.get()
    session = getattr(manager, "session", None)
    if session is not None:
        manager.loop.run_until_complete(
            asyncio.wait_for(session.sync_with_coordinator(), timeout))


def take_remote(coordinator: str, tags: str = "board=standin",
                timeout: float = 120.0) -> LabgridBoard:
    """Reserve and acquire a free place with `tags` (``KEY=VALUE[,KEY=VALUE]``)."""
    from labgrid import Environment

    wanted = [t.strip() for t in tags.split(",") if t.strip()]
    bad = [t for t in wanted if not TAG.match(t)]
    if not wanted or bad:
        raise BoardUnavailable(f"--board-places {tags!r}: KEY=VALUE tags are needed "
                               f"(e.g. board=standin)")
    token = _reserve(coordinator, wanted, timeout)

    def cancel() -> None:
        # The coordinator drops a reservation nobody polled for a minute by itself: one
        # that is gone already is fine.
        with contextlib.suppress(BoardUnavailable):
            _client(coordinator, "cancel-reservation", token)

    releases: list[Any] = [cancel]
    tmpdir = tempfile.mkdtemp(prefix="wasmbed-place-")
    releases.append(lambda: shutil.rmtree(tmpdir, ignore_errors=True))
    try:
        acquired = _client(coordinator, "-p", "+", "acquire", token=token)
        match = re.search(r"acquired place (\S+)", acquired)
        if match is None:
            raise BoardUnavailable(f"labgrid-client acquire: no place in {acquired!r}")
        place = match.group(1)
        # released by its name: the reservation may have expired by then
        releases.insert(0, lambda: _client(coordinator, "-p", place, "release"))
        env_file = Path(tmpdir) / "env.yaml"
        env_file.write_text(
            "targets:\n"
            f"  {place}:\n"
            "    resources:\n"
            f"      RemotePlace: {{name: {place}}}\n"
            "    drivers:\n"
            "      NetworkPowerDriver: {delay: 0.0}\n"
            f"options: {{coordinator_address: '{coordinator}'}}\n"
        )
        _sync_remote_session()
        env = Environment(str(env_file))
        target = env.get_target(place)
        ports = {}
        for role in (CONSOLE, LINK):
            res = target.get_resource("NetworkSerialPort", name=role, wait_avail=False)
            target.await_resources([res], timeout=30.0)
            ports[role] = (res.host, int(res.port))
        power = target.get_resource("NetworkPowerPort")
        flasher = _flasher_beside(power.host, int(power.index))
    except BaseException:
        for step in releases:
            with contextlib.suppress(Exception):
                step()
        raise

    def opener(host: str, port: int) -> UartOpener:
        return lambda: open_telnet(host, port)

    return LabgridBoard(place, target, flasher,
                        {role: opener(*addr) for role, addr in ports.items()}, releases)
