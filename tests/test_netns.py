"""bench.netns: member namespaces reach each other through the switch by address, never
through a loopback, and close() leaves no namespace behind. Needs root and `ip netns`
(skipped with the reason otherwise)."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import pytest

from wasmbed_hil.bench.netns import NetnsLan, unavailable


def test_member_names_are_checked() -> None:
    for members in ([], ["a", "a"], [f"m{i}" for i in range(201)]):
        with pytest.raises(ValueError, match="distinct member names"):
            NetnsLan(members)


def _in(lan: NetnsLan, member: str, fn: Callable[[], Any]) -> Any:
    """fn() on a thread of its own moved into `member` (threads cannot move back)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            lan.enter(member)
            out["value"] = fn()
        except BaseException as exc:  # handed to the caller
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if "error" in out:
        raise out["error"]
    return out["value"]


WHY_NOT = unavailable()


@pytest.mark.skipif(WHY_NOT is not None, reason=f"network namespaces: {WHY_NOT}")
def test_members_reach_each_other_by_address_and_not_by_loopback() -> None:
    with NetnsLan.create(["a", "b"]) as lan:
        names = set(lan.namespaces.values()) | {lan.switch}
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=True).stdout
        assert names <= {line.split()[0] for line in listed.splitlines() if line}

        def listen() -> socket.socket:
            server = socket.create_server((lan.address("b"), 0))
            server.settimeout(10)
            return server

        server = _in(lan, "b", listen)
        port = server.getsockname()[1]
        try:
            def dial(host: str) -> str:
                try:
                    with socket.create_connection((host, port), timeout=10):
                        return "connected"
                except ConnectionRefusedError:
                    return "refused"

            assert _in(lan, "a", lambda: dial(lan.address("b"))) == "connected"
            assert _in(lan, "a", lambda: dial("127.0.0.1")) == "refused"
            accepted, (peer, _) = server.accept()
            accepted.close()
            assert peer == lan.address("a")  # it came from a's own address
        finally:
            server.close()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            check=True).stdout
    assert not names & {line.split()[0] for line in listed.splitlines() if line}
