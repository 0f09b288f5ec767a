"""The scenario timeline: consoles, protocol trace, gateway events and resource changes merged
on one clock (bench.timeline), as the report attaches it."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from wasmbed_hil.bench.timeline import SOURCES, TimelineEntry, collect, format_timeline
from wasmbed_hil.pytest_plugin.evidence import evidence

TIMEOUT = 30.0
LINE = re.compile(r"\+ *(\d+\.\d{3})s  \[([^\]]+)\] (.*)")


class _Device:
    def __init__(self, name: str, records: list[tuple[float, str]]) -> None:
        self.name = name
        self._records = records

    def console_records(self) -> list[tuple[float, str]]:
        return self._records


def test_entries_of_every_source_are_merged_by_time_and_ties_keep_their_order() -> None:
    a = _Device("dev-a", [(10.0, "boot"), (12.0, "online"), (12.0, "same instant, later")])
    b = _Device("dev-b", [(11.0, "boot b")])
    entries = collect(devices=[a, b])
    assert [(e.at, e.text) for e in entries] == [
        (10.0, "boot"), (11.0, "boot b"), (12.0, "online"), (12.0, "same instant, later")]
    assert entries[1].source == "dev-b console"


def test_text_has_one_line_per_entry_relative_to_the_first_with_its_origin() -> None:
    entries = [TimelineEntry(1000.0, "console", "device-0 console", "boot"),
               TimelineEntry(1001.25, "gateway", "gateway gw", "#1 phase x")]
    header, first, second = format_timeline(entries).splitlines()
    assert header.startswith("# +0 = 1970-01-01T00:16:40.000Z")
    assert "console 1, protocol 0, gateway 1, kube 0" in header
    assert first == "+    0.000s  [device-0 console] boot"
    assert second == "+    1.250s  [gateway gw] #1 phase x"
    assert format_timeline([]) == "(nothing recorded)"


def test_a_device_that_cannot_list_its_console_is_left_out() -> None:
    class Broken:
        name = "gone"

        def console_records(self) -> list[tuple[float, str]]:
            raise RuntimeError("closed")

    assert collect(devices=[Broken()]) == []
    stopped = SimpleNamespace(running=False)
    assert collect(gateways=[stopped]) == []


@pytest.mark.hil_platform(rest=False)
def test_a_scenarios_timeline_is_sorted_has_all_sources_and_keeps_cause_before_effect(
    control_plane, request
):
    cp = control_plane
    cp.create_device("dev-a", backend=cp.backend)
    cp.wait_phase("devices", "dev-a", "Connected", TIMEOUT)
    gw = next(iter(cp.gateways.values()))
    (status,) = [st for st in gw.devices() if st.name == "dev-a"]
    gw.wait_heartbeats(status, 1, TIMEOUT)

    entries = collect(platforms=evidence(request).platforms)
    stamps = [e.at for e in entries]
    assert stamps == sorted(stamps)
    assert {e.kind for e in entries} == set(SOURCES)

    def first(pred, what):
        for i, e in enumerate(entries):
            if pred(e):
                return i
        raise AssertionError(f"no {what} in the timeline:\n{format_timeline(entries)}")

    # The device says it is connecting, sends its Hello, the gateway starts enrolling it...
    connecting = first(lambda e: e.source == "dev-a console" and "connecting to" in e.text,
                       "console line 'connecting to'")
    hello = first(lambda e: e.source == "protocol dev-a dev->gw" and " Hello " in e.text,
                  "Hello of dev-a")
    enrolling = first(lambda e: e.kind == "gateway" and " enrolling " in e.text
                      and "name=dev-a" in e.text, "gateway 'enrolling' event of dev-a")
    # ...enrolls it before the device prints that it is online; the gateway's Connected
    # phase comes before the control plane's Device turns Connected.
    enrolled = first(lambda e: e.kind == "gateway" and " enrolled dev-a " in e.text,
                     "gateway 'enrolled' event of dev-a")
    phase = first(lambda e: e.kind == "gateway" and " phase dev-a phase=Connected" in e.text,
                  "gateway phase Connected of dev-a")
    online = first(lambda e: e.source == "dev-a console" and "online as" in e.text,
                   "console line 'online as'")
    connected = first(lambda e: e.kind == "kube" and e.text.startswith("Device/dev-a")
                      and "phase=Connected" in e.text, "Device/dev-a Connected")
    order = [connecting, hello, enrolling, enrolled, online]
    assert order == sorted(order), format_timeline(entries)
    assert enrolled < phase < connected, format_timeline(entries)

    lines = format_timeline(entries).splitlines()[1:]
    assert len(lines) == len(entries)
    parsed = [LINE.fullmatch(line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed, strict=True) if not m][:3]
    offsets = [float(m.group(1)) for m in parsed if m]
    assert offsets == sorted(offsets) and offsets[0] == 0.0
