"""Network namespaces joined by one switch, so the platform's parts can run off 127.0.0.1.

    with NetnsLan.create(["cp", "gw", "dev"]) as lan:   # needs root and `ip` (iproute2)
        lan.address("gw")            # "10.213.0.2": its one interface, eth0
        lan.argv("gw", [...])        # the command run in that namespace (`ip netns exec`)
        lan.enter("dev")             # the calling thread's new sockets live there

Each member namespace gets `lo` and `eth0` with 10.213.0.N/24 (N from 1, in the order
given); the eth0s are veth pairs whose other ends are ports of a bridge in one more
namespace (the switch), so the host's own interfaces and routes are never touched and no
member can reach another's loopback. Names carry the process id and a counter, so parallel
workers never collide; `close()` deletes every namespace (the veths and the bridge go with
them). `unavailable()` says why this machine cannot, for a skip.

`enter()` uses setns(2), which moves only the calling OS thread: the harness gives it a loop
thread of its own (bench.loop.LoopThread), whose sockets (clients, devices) are then created
in that namespace. A thread cannot be moved back; it ends with its loop.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
SUBNET = "10.213.0"  # a /24 inside the namespaces only: no host route sees it
MAX_MEMBERS = 200
_counter = itertools.count()


class NetnsError(RuntimeError):
    """An `ip` command failed or a namespace cannot be entered."""


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"wbprobe{os.getpid()}x{next(_counter)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip() or made.returncode}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")


class NetnsLan:
    """Member namespaces on one switch; see the module docstring."""

    def __init__(self, members: Sequence[str]) -> None:
        if not members or len(members) > MAX_MEMBERS or len(set(members)) != len(members):
            raise ValueError(f"1 to {MAX_MEMBERS} distinct member names, got {members!r}")
        tag = f"wb{os.getpid()}x{next(_counter)}"
        self.switch = f"{tag}-sw"
        self.namespaces = {m: f"{tag}-{i}" for i, m in enumerate(members, 1)}
        self.addresses = {m: f"{SUBNET}.{i}" for i, m in enumerate(members, 1)}
        self._made: list[str] = []

    @classmethod
    def create(cls, members: Sequence[str]) -> NetnsLan:
        lan = cls(members)
        try:
            lan._build()
        except BaseException:
            lan.close()
            raise
        return lan

    def _add(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._made.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def _build(self) -> None:
        self._add(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, (member, ns) in enumerate(self.namespaces.items(), 1):
            self._add(ns)
            port = f"p{i}"
            _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.addresses[member]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def address(self, member: str) -> str:
        return self.addresses[member]

    def argv(self, member: str, command: Sequence[str]) -> list[str]:
        """`command` run in the member's namespace (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", self.namespaces[member], *command]

    def enter(self, member: str) -> None:
        """Move the calling thread into the member's namespace (for good)."""
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(NETNS_DIR / self.namespaces[member], os.O_RDONLY | os.O_CLOEXEC)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise NetnsError(f"setns into {member}: {os.strerror(errno)}")
        finally:
            os.close(fd)

    def close(self) -> None:
        """Delete every namespace made (idempotent); the veths and the bridge go with them."""
        errors = []
        while self._made:
            ns = self._made.pop()
            done = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
            if done.returncode != 0:
                errors.append(f"{ns}: {done.stderr.strip()}")
        if errors:
            raise NetnsError("namespaces not deleted: " + "; ".join(errors))

    def __enter__(self) -> NetnsLan:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
