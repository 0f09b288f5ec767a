"""benchmarks/table.py's plumbing (row registry, met/missed, JSON) and bench_mosquitto's parts
(MQTT packets, broker configuration, ratios), without running a heavy benchmark. One test
starts a real mosquitto for a single client when the broker is installed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest
from bench_scripts import load_script, mqtt_pings_and_refusal


@pytest.fixture(scope="module")
def table() -> ModuleType:
    return load_script("table")


@pytest.fixture(scope="module")
def mqtt() -> ModuleType:
    return load_script("_mqtt_clients")


@pytest.fixture(scope="module")
def mosq() -> ModuleType:
    return load_script("bench_mosquitto")


# ---------------------------------------------------------------------- the row registry
def test_every_row_of_the_issue_table_is_registered_in_order(table: ModuleType) -> None:
    assert list(table.ROWS) == [
        "gateway_cpu", "protocol", "memory_per_device", "preauth_memory", "enrollments",
        "app_running", "fleet_join", "qemu_deploy", "qemu_enroll", "suites_speedup",
        "mosquitto_cpu", "mosquitto_memory",
    ]
    bounds = {k: (r.target.op, r.target.bound) for k, r in table.ROWS.items()}
    assert bounds["gateway_cpu"] == ("<=", 1.0)
    assert bounds["protocol"] == (">=", 20_000)
    assert bounds["memory_per_device"] == ("<=", 48.0)
    assert bounds["preauth_memory"] == ("<=", 64.0)
    assert bounds["enrollments"] == (">=", 800)
    assert bounds["app_running"] == ("<=", 3.0)
    assert bounds["fleet_join"] == ("<=", 10.0)
    assert bounds["qemu_deploy"] == ("<=", 0.4)
    assert bounds["qemu_enroll"] == ("<=", 0.2)
    assert bounds["suites_speedup"] == (">=", 1.8)
    assert bounds["mosquitto_cpu"] == ("<=", 2.5)
    assert bounds["mosquitto_memory"] == ("<=", 2.0)


def test_a_key_registered_twice_is_refused(table: ModuleType) -> None:
    before = dict(table.ROWS)
    with pytest.raises(ValueError, match="registered twice"):
        table.row("protocol", "again", table.Target(">=", 1, "x"))(lambda s: None)
    assert before == table.ROWS


# ---------------------------------------------------------------------- met / missed
@pytest.mark.parametrize(("op", "value", "met"), [
    ("<=", 47.9, True), ("<=", 48.0, True), ("<=", 48.1, False),
    (">=", 799.0, False), (">=", 800.0, True), (">=", 801.0, True),
])
def test_target_bounds_are_inclusive(table: ModuleType, op: str, value: float,
                                     met: bool) -> None:
    bound = 48.0 if op == "<=" else 800.0
    assert table.Target(op, bound, "t").met(value) is met


def test_no_value_is_neither_met_nor_missed(table: ModuleType) -> None:
    target = table.Target("<=", 1.0, "t")
    assert target.met(None) is None
    assert target.met(math.nan) is None


def test_verdict_needs_the_value_and_every_check(table: ModuleType) -> None:
    target = table.Target("<=", 50.0, "t")
    M = table.Measurement
    assert table.verdict(target, M(10.0, "ok", {"a": True, "b": True})) == (True, "met")
    assert table.verdict(target, M(10.0, "one check", {"a": True, "b": False})) == (
        False, "missed")
    assert table.verdict(target, M(60.0, "too big", {"a": True})) == (False, "missed")
    assert table.verdict(target, M(None, "")) == (None, "error")
    assert table.verdict(target, M(None, "", skipped="no broker")) == (None, "skipped")


def _fake_row(table: ModuleType, key: str, fn: object, op: str = "<=",
              bound: float = 1.0) -> object:
    return table.Row(key, f"figure {key}", table.Target(op, bound, f"target {key}"), fn)


def test_a_failing_row_is_an_error_row_not_the_end_of_the_table(table: ModuleType) -> None:
    def boom(sizes: object) -> object:
        raise RuntimeError("at most 256 machines are allowed\nsecond line")

    result = table.run_row(_fake_row(table, "boom", boom), table.Sizes.quick_sizes())
    assert result.status == "error" and result.met is None and result.value is None
    assert result.now == "error: RuntimeError: at most 256 machines are allowed"
    assert result.load_before >= 0 and result.load_after >= 0 and result.seconds >= 0


def test_a_skipped_row_says_why(table: ModuleType) -> None:
    result = table.run_row(
        _fake_row(table, "skip", lambda s: table.Measurement(None, "", skipped="no qemu")),
        table.Sizes())
    assert (result.status, result.now, result.met) == ("skipped", "skipped: no qemu", None)


# ---------------------------------------------------------------------- sizes and output
def test_quick_and_explicit_sizes(table: ModuleType) -> None:
    _, full = table.parse([])
    assert (full.hb_devices, full.cp_devices, full.suites_path) == (10_000, 1000, "suites")
    _, quick = table.parse(["--quick"])
    assert quick.quick and quick.hb_devices < full.hb_devices
    _, sized = table.parse(["--quick", "--hb-devices", "50", "--suites-path", "suites/power"])
    assert (sized.hb_devices, sized.suites_path, sized.cp_devices) == (
        50, "suites/power", quick.cp_devices)
    with pytest.raises(SystemExit):
        table.parse(["--hb-devices", "0"])
    with pytest.raises(SystemExit):
        table.parse(["--only", "no-such-row"])


def test_main_prints_each_row_and_writes_json(table: ModuleType, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(table.ROWS, "fake_met", _fake_row(
        table, "fake_met", lambda s: table.Measurement(12.5, "12.5 things"), ">=", 10))
    monkeypatch.setitem(table.ROWS, "fake_missed", _fake_row(
        table, "fake_missed", lambda s: table.Measurement(0.5, "half", {"big enough": False})))
    out = tmp_path / "table.json"
    assert table.main(["--quick", "--only", "fake_met", "--only", "fake_missed",
                       "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fake_met           met" in printed and "12.5 things  |  target fake_met" in printed
    assert "also not met: big enough" in printed
    assert "1 met, 1 missed, 0 skipped, 0 error" in printed
    data = json.loads(out.read_text())
    assert data["sizes"]["quick"] is True and data["cores"] >= 1
    # the platform the figures were taken on, printed and recorded alike
    assert data["platform"].startswith("CPython 3.") and " OpenSSL " in data["platform"]
    assert f"platform: {data['platform']}" in printed
    rows = {r["key"]: r for r in data["rows"]}
    assert list(rows) == ["fake_met", "fake_missed"]
    assert rows["fake_met"]["met"] is True and rows["fake_met"]["value"] == 12.5
    assert rows["fake_missed"]["status"] == "missed"
    assert rows["fake_missed"]["checks"] == {"big enough": False}
    assert isinstance(rows["fake_met"]["load_before"], float)


# ---------------------------------------------------------------------- bench_mosquitto
@pytest.mark.parametrize(("n", "encoded"), [
    (0, "00"), (127, "7f"), (128, "8001"), (16_383, "ff7f"), (16_384, "808001"),
    (2_097_151, "ffff7f"), (2_097_152, "80808001"), (268_435_455, "ffffff7f"),
])
def test_mqtt_remaining_length_matches_the_spec(mqtt: ModuleType, n: int, encoded: str) -> None:
    assert mqtt.remaining_length(n).hex() == encoded


def test_mqtt_packets(mqtt: ModuleType) -> None:
    with pytest.raises(ValueError):
        mqtt.remaining_length(268_435_456)
    # MQTT 3.1.1 section 3.1: "MQTT", level 4, clean session, keep-alive 2, client id "ab"
    assert mqtt.connect_packet("ab", 2).hex() == "100e00044d5154540402000200026162"
    mqtt.check_connack(bytes.fromhex("20020000"))
    with pytest.raises(ConnectionError, match="return code 5"):
        mqtt.check_connack(bytes.fromhex("20020005"))
    with pytest.raises(ConnectionError, match="expected CONNACK"):
        mqtt.check_connack(bytes.fromhex("d0000000"))


def test_broker_configuration_is_mutual_tls13(mosq: ModuleType, tmp_path: Path) -> None:
    conf = mosq.broker_config(18_883, tmp_path, "nobody").splitlines()
    for line in ("listener 18883 127.0.0.1", "require_certificate true",
                 "use_identity_as_username true", "tls_version tlsv1.3", "persistence false",
                 f"cafile {tmp_path / 'ca.pem'}", "user nobody"):
        assert line in conf


def _side(mosq: ModuleType, cpu: float, kb: float) -> object:
    return mosq.Side("s", 1000, 1000, 1000.0, cpu, kb, 1.0, 0, 0)


def test_ratios_against_the_targets(mosq: ModuleType) -> None:
    r = mosq.ratios(_side(mosq, 0.10, 48.0), _side(mosq, 0.04, 24.0))
    assert (r["cpu_ratio"], r["memory_ratio"], r["cpu_met"], r["memory_met"]) == (
        2.5, 2.0, True, True)
    r = mosq.ratios(_side(mosq, 0.19, 90.0), _side(mosq, 0.041, 24.0))
    assert (r["cpu_met"], r["memory_met"]) == (False, False)
    assert r["cpu_ratio"] == pytest.approx(4.63, abs=0.01)


@pytest.mark.skipif(load_script("bench_mosquitto").mosquitto_binary() is None,
                    reason="mosquitto is not installed (scripts/system-deps.sh --bench)")
def test_real_broker_answers_a_certified_client_and_refuses_others(
        mosq: ModuleType, mqtt: ModuleType, tmp_path: Path) -> None:
    from wasmbed_hil.pki import FleetCA

    ca = FleetCA.create("test CA")
    ca.save(tmp_path / "ca")
    broker = mosq.Broker(mosq.mosquitto_binary(), tmp_path / "broker", ca)
    try:
        rtts = mqtt_pings_and_refusal(mqtt, tmp_path / "ca", broker.port)
        assert len(rtts) >= 3 and all(0 < r < 5 for r in rtts)
    finally:
        broker.close()
    assert broker.proc is not None and broker.proc.poll() is not None


def test_a_shared_run_happens_once_even_when_it_fails(table: ModuleType) -> None:
    calls: list[int] = []

    @table.once
    def run(size: int) -> int:
        calls.append(size)
        if size > 256:
            raise RuntimeError("at most 256 machines are allowed")
        return size * 2

    assert run(10) == 20 and run(10) == 20
    for _ in range(2):
        with pytest.raises(RuntimeError, match="256 machines"):
            run(1000)
    assert calls == [10, 1000]


def test_the_control_plane_rows_call_their_benchmark_as_it_is_now(table: ModuleType) -> None:
    """The rows call bench_controlplane.measure for real (two devices, one Application): a
    change of its signature once turned both rows into errors that only a full run showed."""
    import gc

    figures = table.controlplane_run(2, 1)
    assert len(figures["running"]) == 1 and figures["running"][0] > 0
    assert len(figures["join"]) == 1 and figures["join"][0] > 0
    # Beside each Application: the process's CPU and the full collections that ran.
    assert len(figures["cpu"]) == 1 and figures["cpu"][0] > 0
    assert figures["gc_full"][0] >= 0 and figures["gc_full_s"][0] >= 0
    assert gc.get_freeze_count() == 0  # what the run froze is handed back to the collector


def test_the_gateway_rows_run_their_hold_for_real(table: ModuleType) -> None:
    """The gateway rows' run (bench_loadgen.hold: a gateway process, fleet workers on lean
    links) at three devices, one short window: every heartbeat accounted for, and the load
    generator's figures beside the gateway's."""
    hb = table.heartbeat_run(3, 1, 1, 2.0)
    assert hb["devices"] == 3 and hb["online"] == 3 and hb["connected"] == 3
    assert hb["link"] == "lean" and hb["failed_joins"] == 0
    assert hb["acked"] >= 5 and hb["unacked_over_1s"] == 0 and hb["heartbeat_timeouts"] == 0
    assert hb["cpu"] >= 0 and hb["loadgen_cpu"] >= 0 and hb["processes"] == 1
    m = table.gateway_cpu(table.Sizes(hb_devices=3, hb_procs=1, hb_windows=1, hb_window_s=2.0))
    assert "load generator" in m.text and "in 1 workers" in m.text
    assert m.checks["all devices connected"] is True
    assert m.checks["every heartbeat acknowledged"] is True
    assert m.checks["the issue's 10,000 devices"] is False  # 3 devices never pass for 10,000


def test_the_join_wait_needs_every_device_connected_at_once() -> None:
    """bench_controlplane's join check: true only when every Device is Connected together,
    whatever order they connect in, and false again while one that was passed has dropped."""
    from types import SimpleNamespace

    bench = load_script("bench_controlplane")
    objects: dict[str, dict[str, object]] = {}
    platform = SimpleNamespace(watcher=SimpleNamespace(
        informers={"devices": SimpleNamespace(objects=objects)}))
    names = [f"d{i}" for i in range(6)]
    check = bench.all_connected(platform, names)

    def phase(name: str, value: str) -> None:
        objects[name] = {"status": {"phase": value}}

    assert not check()
    for name in ["d3", "d0", "d5", "d1", "d4"]:
        phase(name, "Connected")
        assert not check()
    phase("d0", "Disconnected")  # passed already by the walk
    phase("d2", "Connected")
    assert not check()
    phase("d0", "Connected")
    assert check()


def test_every_heartbeat_acknowledged_is_decided_by_the_bookkeeping(table: ModuleType) -> None:
    """With the devices' own send-to-ack bookkeeping the verdict is exact: a window count
    short of N x window / interval (a phase effect) does not fail it, one heartbeat left
    unanswered, a timeout or a device gone does; without it the window estimate decides."""
    run = {"devices": 10_000, "online": 10_000, "acked": 150_749, "expected": 150_790,
           "unanswered": 41, "unacked_over_1s": 0, "heartbeat_timeouts": 0}
    ok, text = table.every_heartbeat_acknowledged(run)
    assert ok and "0 heartbeats unanswered after 1 s" in text and "150,749" in text
    assert not table.every_heartbeat_acknowledged({**run, "unacked_over_1s": 1})[0]
    assert not table.every_heartbeat_acknowledged({**run, "heartbeat_timeouts": 2})[0]
    assert not table.every_heartbeat_acknowledged({**run, "online": 9_999})[0]
    estimate = {"devices": 1_000, "unanswered": 3}
    assert table.every_heartbeat_acknowledged(estimate) == (
        False, "3 unanswered (window estimate)")
    assert table.every_heartbeat_acknowledged({**estimate, "unanswered": 0})[0]
