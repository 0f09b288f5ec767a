"""bench.kubewait.wait_resource against the emulated API server: woken by the informer's
events, a state reached before the call counts, a timeout names what was awaited, and the
informer is gone afterwards either way."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_services import NS, emulated_kube

from wasmbed_hil.bench.kubewait import wait_resource
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.kube.client import Kind, KubeClient
from wasmbed_hil.kube.resources import Device

DEVICES = Kind.of(Device)
WAIT = 20.0


@pytest.fixture
def kube(tmp_path: Path, hil_loop: LoopThread) -> Iterator[KubeClient]:
    for _path, client in emulated_kube(tmp_path, hil_loop, token="wait-test"):
        yield client


def device(name: str) -> dict[str, Any]:
    return {"apiVersion": "wasmbed.github.io/v1", "kind": "Device",
            "metadata": {"name": name}, "spec": {"identity": "ab" * 32}}


def phase(obj: dict[str, Any]) -> Any:
    return (obj.get("status") or {}).get("phase")


def informers() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("informer-")]


def test_waits_for_a_later_change_and_takes_an_earlier_one(
        kube: KubeClient, hil_loop: LoopThread) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        await kube.create(DEVICES, device("d1"), NS)
        looked = asyncio.Event()

        def enrolled(obj: dict[str, Any]) -> bool:
            looked.set()
            return phase(obj) == "Enrolled"

        waiting = asyncio.ensure_future(wait_resource(
            kube, Device, NS, "d1", enrolled, "to enroll", WAIT))
        # The wait has seen d1 without the phase (its informer listed it) before the change.
        await asyncio.wait_for(looked.wait(), WAIT)
        assert not waiting.done()
        await kube.patch(DEVICES, "d1", {"status": {"phase": "Enrolled"}}, NS, status=True)
        later = await waiting
        earlier = await wait_resource(kube, Device, NS, "d1",
                                      lambda o: phase(o) == "Enrolled", "to enroll", WAIT)
        return later, earlier, informers()

    later, earlier, left = hil_loop.run(scenario(), timeout=WAIT + 5)
    assert phase(later) == phase(earlier) == "Enrolled"
    assert later["metadata"]["name"] == "d1"
    assert left == []


def test_a_timeout_names_what_was_awaited_and_stops_the_informer(
        kube: KubeClient, hil_loop: LoopThread) -> None:
    async def scenario() -> tuple[str, list[str]]:
        await kube.create(DEVICES, device("d2"), NS)
        with pytest.raises(AssertionError) as info:
            await wait_resource(kube, Device, NS, "d2", lambda o: phase(o) == "Connected",
                                "to connect", 0.3)
        return str(info.value), informers()

    message, left = hil_loop.run(scenario(), timeout=WAIT)
    assert message == "timed out after 0.3s waiting for Device d2 to connect"
    assert left == []
