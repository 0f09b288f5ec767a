"""bench_mosquitto.py --floor: the MQTT pings the floor server (_tls_server.py --mqtt) answers,
the server itself against real TLS clients, and how the floor enters a round's figures."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from bench_scripts import children, load_script, mqtt_pings_and_refusal

CONNECT = bytes.fromhex("100e00044d5154540402000200026162")  # MQTT 3.1.1, client id "ab"


@pytest.fixture(scope="module")
def tls_server() -> ModuleType:
    return load_script("_tls_server")


@pytest.fixture(scope="module")
def mqtt() -> ModuleType:
    return load_script("_mqtt_clients")


@pytest.fixture(scope="module")
def mosq() -> ModuleType:
    return load_script("bench_mosquitto")


def _pings(tls_server: ModuleType) -> tuple[object, list[bytes]]:
    sent: list[bytes] = []
    return tls_server.MqttPings(sent.append), sent


# ---------------------------------------------------------------------- MqttPings
def test_connect_is_answered_with_connack_and_each_ping_with_pingresp(
        tls_server: ModuleType) -> None:
    pings, sent = _pings(tls_server)
    assert pings(CONNECT)
    assert pings(b"\xc0\x00") and pings(b"\xc0\x00")
    assert sent == [b"\x20\x02\x00\x00", b"\xd0\x00", b"\xd0\x00"]
    assert pings.pings == 2 and not pings.refused


def test_packets_split_or_joined_are_answered_alike(tls_server: ModuleType) -> None:
    stream = CONNECT + b"\xc0\x00" * 3
    for cut in range(1, len(stream)):
        pings, sent = _pings(tls_server)
        assert pings(stream[:cut]) and pings(stream[cut:])
        assert sent == [b"\x20\x02\x00\x00"] + [b"\xd0\x00"] * 3, cut
    pings, sent = _pings(tls_server)
    for byte in stream:  # one byte at a time
        assert pings(bytes([byte]))
    assert pings.pings == 3 and len(sent) == 4


@pytest.mark.parametrize(("data", "why"), [
    (b"\xc0\x00", "a ping before CONNECT"),
    (CONNECT + CONNECT, "a second CONNECT"),
    (CONNECT + b"\x30\x00", "another packet type (PUBLISH)"),
    (CONNECT + b"\xc0\x01\x00", "a PINGREQ with a body"),
    (b"\x10\xff\xff\xff\xff\x01", "a fifth remaining-length byte"),
    (b"\x10\x81\x08", "a CONNECT over MAX_PACKET (1,025 bytes announced)"),
])
def test_anything_else_is_refused(tls_server: ModuleType, data: bytes, why: str) -> None:
    pings, sent = _pings(tls_server)
    assert not pings(data), why
    assert pings.refused
    assert b"\xd0\x00" not in sent


def test_disconnect_ends_the_connection_without_a_refusal(tls_server: ModuleType) -> None:
    pings, _sent = _pings(tls_server)
    assert not pings(CONNECT + b"\xc0\x00\xe0\x00")
    assert pings.pings == 1 and not pings.refused


def test_an_incomplete_packet_waits_for_the_rest(tls_server: ModuleType) -> None:
    pings, sent = _pings(tls_server)
    assert pings(CONNECT[:1]) and pings(CONNECT[1:5])
    assert sent == []  # nothing answered before the packet is whole


# ---------------------------------------------------------------------- the server


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_floor_server_answers_certified_mqtt_clients_only(
        mosq: ModuleType, mqtt: ModuleType, tmp_path: Path, loop: str) -> None:
    from wasmbed_hil.pki import FleetCA

    if loop == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop (the fast extra) is not installed")
    before = children()
    FleetCA.create("floor CA").save(tmp_path / "ca")
    server = mosq.FloorServer(tmp_path / "floor", tmp_path / "ca", loop)
    try:
        rtts = mqtt_pings_and_refusal(mqtt, tmp_path / "ca", server.port)
        assert len(rtts) == 3 and all(0 < r < 5 for r in rtts)
        counts = server.child.request({"cmd": "metrics"}, 30)
        assert counts["handshakes"] == 1 and counts["failures"] == 1
        assert counts["pings"] == 3 and counts["refused"] == 0
    finally:
        server.close()
    assert children() <= before


# ---------------------------------------------------------------------- in the figures
def test_each_server_goes_first_once_in_as_many_rounds(mosq: ModuleType) -> None:
    orders = [mosq.server_order(k, True) for k in range(3)]
    assert [o[0] for o in orders] == ["gateway", "mosquitto", "floor"]
    assert all(sorted(o) == ["floor", "gateway", "mosquitto"] for o in orders)
    assert [mosq.server_order(k, False) for k in range(2)] == [
        ("gateway", "mosquitto"), ("mosquitto", "gateway")]


def _side(mosq: ModuleType, name: str, cpu: float) -> object:
    return mosq.Side(name, 1000, 1000, 1000.0, cpu, 40.0, 1.0, 0, 0)


def test_the_floor_ratios_and_their_medians(mosq: ModuleType) -> None:
    r = mosq.floor_ratios(_side(mosq, "ours", 0.10), _side(mosq, "floor", 0.08),
                          _side(mosq, "mosquitto", 0.04))
    assert r == {"floor_cpu_ratio": 2.0, "over_floor_cpu_ratio": 1.25}
    rounds = [{"cpu_ratio": c, "memory_ratio": 1.8, "floor_cpu_ratio": f,
               "over_floor_cpu_ratio": o} for c, f, o in
              ((2.4, 2.1, 1.14), (2.6, 2.3, 1.13), (3.0, 2.2, 1.36))]
    row = mosq.median_row(rounds)
    assert (row["cpu_ratio"], row["floor_cpu_ratio"], row["over_floor_cpu_ratio"]) == (
        2.6, 2.2, 1.14)
    plain = mosq.median_row([{"cpu_ratio": 2.4, "memory_ratio": 1.8}])
    assert "floor_cpu_ratio" not in plain  # no floor measured, none reported
