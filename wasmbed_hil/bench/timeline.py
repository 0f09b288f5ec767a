"""One timeline of a scenario, on one clock: consoles, protocol, gateway events, resources.

Every source the report attaches separately is also merged here into one list of entries,
ordered by the time.time() at which the harness saw each thing happen:

    console   a device's console line, stamped when the harness recorded it (the machine's
              or the virtual device's ``console_at``; bench.device.DeviceHandle.console_records)
    protocol  a message of the gateway's decoded trace (stamped when the gateway decoded or
              encoded it), and the message faults it applied
    gateway   an event of the gateway's event log (gateway.events.GatewayEvent.at)
    kube      a change of a resource seen by the control plane's watcher (bench.platform
              Watcher.timeline: ADDED, DELETED and phase changes)

All four are stamped with time.time() in this process, so they compare directly; no clock is
converted. What the stamps mean: a console line is stamped when its line ended at the
harness (the device printed it a little earlier), so a line and the gateway event it caused
keep their order; events stamped within the same microsecond keep the order of their
source. Kubernetes Event objects (one-second resolution) are not merged; they stay in their
own attachment.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["TimelineEntry", "collect", "format_timeline", "timeline_text"]

SOURCES = ("console", "protocol", "gateway", "kube")
_ARROWS = {"out": "gw->dev", "in": "dev->gw"}


@dataclass(frozen=True)
class TimelineEntry:
    at: float  # time.time()
    kind: str  # one of SOURCES
    source: str  # what the line shows in brackets: "device-0 console", "gateway gw-0"...
    text: str

    def line(self, origin: float) -> str:
        return f"+{self.at - origin:9.3f}s  [{self.source}] {self.text}"


def device_entries(device: Any) -> list[TimelineEntry]:
    """A device's console lines (those with a timestamp)."""
    name = getattr(device, "name", "?")
    try:
        records = device.console_records()
    except Exception:  # a closed or half-made device: its console attachment says why
        return []
    return [TimelineEntry(at, "console", f"{name} console", line) for at, line in records]


def gateway_entries(handle: Any) -> list[TimelineEntry]:
    """A running gateway's events and its protocol traces (device ids shown by name)."""
    if not getattr(handle, "running", False):
        return []
    gw = handle.gateway
    gw_name = gw.config.name
    try:
        names = {st.device_id: st.name for st in handle.devices()}
    except Exception:  # a stopping gateway lists no devices: ids stay as they are
        names = {}
    entries: list[TimelineEntry] = []
    for event in gw.events.events():
        text = event.describe()
        if event.device_id and event.device_id in names:
            text = text.replace(event.device_id[:8], names[event.device_id], 1)
        entries.append(TimelineEntry(event.at, "gateway", f"gateway {gw_name}", text))
    for device_id in gw.traced_devices():
        who = names.get(device_id, device_id[:8])
        for at, direction, message_id, kind, fields in gw.trace(device_id):
            arrow = _ARROWS.get(direction, "FAULT")
            body = json.dumps(fields, default=str, sort_keys=True)
            entries.append(TimelineEntry(at, "protocol", f"protocol {who} {arrow}",
                                         f"#{message_id} {kind} {body}"))
    return entries


def platform_entries(platform: Any) -> list[TimelineEntry]:
    """The control plane's resource timeline (its watcher's), as `kube` entries."""
    watcher = getattr(platform, "watcher", None)
    if watcher is None:
        return []
    entries = []
    for at, event, plural, name, phase in list(watcher.timeline):
        kind = plural[:-1].capitalize()  # devices -> Device, the watcher's three kinds
        entries.append(TimelineEntry(at, "kube", "kube", f"{kind}/{name} {event} phase={phase}"))
    return entries


def collect(
    gateways: Iterable[Any] = (), devices: Iterable[Any] = (), platforms: Iterable[Any] = ()
) -> list[TimelineEntry]:
    """Every source's entries, merged and ordered by time (stable: ties keep their source's
    order). A platform brings its own gateways and machines."""
    gateways, devices, platforms = list(gateways), list(devices), list(platforms)
    for plat in platforms:
        gateways.extend(plat.gateways.values())
        devices.extend(m.handle for m in list(plat.manager.machines.values()))
    entries: list[TimelineEntry] = []
    for device in devices:
        entries.extend(device_entries(device))
    for handle in gateways:
        entries.extend(gateway_entries(handle))
    for plat in platforms:
        entries.extend(platform_entries(plat))
    return sorted(entries, key=lambda e: e.at)


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"


def format_timeline(entries: list[TimelineEntry]) -> str:
    """The timeline as text: a header with the origin (UTC), then one line per entry, its
    time in seconds since the first entry."""
    if not entries:
        return "(nothing recorded)"
    origin = entries[0].at
    counts = {k: sum(e.kind == k for e in entries) for k in SOURCES}
    header = (f"# +0 = {_utc(origin)} (time.time() of the first entry); entries: "
              + ", ".join(f"{k} {n}" for k, n in counts.items()))
    return "\n".join([header, *(e.line(origin) for e in entries)])


def timeline_text(
    gateways: Iterable[Any] = (), devices: Iterable[Any] = (), platforms: Iterable[Any] = ()
) -> str:
    return format_timeline(collect(gateways, devices, platforms))
