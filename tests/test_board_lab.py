"""The board backend's lab pieces: the labgrid files a lab writes (read back by labgrid
itself), taking boards with per-board locks, and a stand-in board's ports, power switch and
flasher (without QEMU: the suites on --hil-backend=board run the real thing)."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("labgrid")

from wasmbed_hil.bench.lab import files
from wasmbed_hil.bench.lab.__main__ import power
from wasmbed_hil.bench.lab.process import LabProcess, parse_spec
from wasmbed_hil.bench.lab.standin import LabService, PtyUart, StandinBoard
from wasmbed_hil.bench.machines.labgrid import (
    BoardUnavailable,
    _flasher_beside,
    take_local,
    take_remote,
)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def ports(tmp_path: Path, count: int) -> list[files.BoardPorts]:
    return [
        files.BoardPorts(
            name=f"board-{i}", index=i, console=str(tmp_path / f"c{i}"),
            link=str(tmp_path / f"l{i}"), console_device=f"/dev/pts/{10 + i}",
            link_device=f"/dev/pts/{20 + i}",
            power_url="http://127.0.0.1:1/power/{index}/{value}",
            flash_url=f"http://127.0.0.1:1/flash/{i}",
        )
        for i in range(count)
    ]


def test_the_environment_file_reads_back_in_labgrid(tmp_path):
    from labgrid import Environment

    env_file = files.write_yaml(tmp_path / "env.yaml", files.environment(ports(tmp_path, 2)))
    env = Environment(str(env_file))
    assert sorted(env.config.get_targets()) == ["board-0", "board-1"]
    target = env.get_target("board-1")
    assert target.get_resource("RawSerialPort", name="link").port == str(tmp_path / "l1")
    assert target.get_resource("RawSerialPort", name="console").port == str(tmp_path / "c1")
    driver = target.get_driver("PowerProtocol", activate=False)
    assert type(driver).__name__ == "ExternalPowerDriver"
    assert shlex.split(driver.cmd_on)[-3:] == ["power", "http://127.0.0.1:1/power/1/{value}",
                                               "on"]
    assert env.config.get_target_option("board-1", files.FLASHER_OPTION).endswith("/flash/1")
    target.cleanup()


def test_exporter_groups_and_places_match_each_other(tmp_path):
    from labgrid.remote.common import Place, ResourceMatch

    boards = ports(tmp_path, 2)
    config = files.exporter_config(boards)
    assert config["board-1"]["link"] == {"cls": "RawSerialPort", "port": "/dev/pts/21",
                                         "speed": 115200}
    assert config["board-1"]["power"]["model"] == "simplerest"
    for name, place in files.places(boards, "lab").items():
        place = dict(place, name=name)
        place["matches"] = [ResourceMatch(**m) for m in place["matches"]]
        parsed = Place(**place)
        assert parsed.tags == {"board": "standin"}
        assert parsed.getmatch(("lab", name, "RawSerialPort", "link")) is not None
        assert parsed.getmatch(("lab", "board-9", "RawSerialPort", "link")) is None


def test_lab_specs_are_checked():
    assert parse_spec("qemu:3") == (3, False)
    assert parse_spec("qemu:10:coordinator") == (10, True)
    for bad in ("qemu", "qemu:0", "qemu:65", "renode:2", "qemu:2:exporter"):
        with pytest.raises(ValueError, match="qemu:N or qemu:N:coordinator"):
            parse_spec(bad)


def test_each_process_takes_a_different_board_and_waits_with_a_limit(tmp_path):
    env_file = files.write_yaml(tmp_path / "env.yaml", files.environment(ports(tmp_path, 2)))
    first = take_local(env_file, timeout=1)
    second = take_local(env_file, timeout=1)
    assert {first.name, second.name} == {"board-0", "board-1"}
    with pytest.raises(BoardUnavailable, match=r"no free board among 2 target\(s\)"):
        take_local(env_file, timeout=0.3)
    first.target.cleanup()
    first._on_release[0]()  # the lock only (no power to switch off here)
    again = take_local(env_file, timeout=1)
    assert again.name == first.name
    for board in (second, again):
        board.target.cleanup()
        board._on_release[0]()


def test_board_selection_errors_are_clear(tmp_path):
    env_file = files.write_yaml(tmp_path / "env.yaml", files.environment(ports(tmp_path, 1)))
    with pytest.raises(BoardUnavailable, match=r"no target of .* matches 'rack-\*'"):
        take_local(env_file, "rack-*", timeout=1)
    with pytest.raises(BoardUnavailable, match="not found"):
        take_local(tmp_path / "missing.yaml")
    with pytest.raises(BoardUnavailable, match="KEY=VALUE tags are needed"):
        take_remote("127.0.0.1:1", "board standin", timeout=1)
    assert _flasher_beside("http://h:8/power/{index}/{value}", 3) == "http://h:8/flash/3"
    with pytest.raises(BoardUnavailable, match="no flasher known"):
        _flasher_beside("http://h:8/relay/{index}/{value}", 3)


def _without(target: dict, key: str) -> dict:
    return {k: v for k, v in target.items() if k != key}


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: {"targets": [t]}, "targets must be a mapping of target names, not list"),
    (lambda t: {"targets": {"board-0": "rack"}}, "target board-0 of .* must be a mapping"),
    (lambda t: {"targets": {"board-0": None}}, "target board-0 of .* must be a mapping"),
    (lambda t: {"targets": {"board-0": _without(t, "options")}},
     "target board-0 of .* has no option 'wasmbed_flasher'"),
    (lambda t: {"targets": {"board-0": {**t, "options": ["x"]}}},
     "target board-0 of .* has no option 'wasmbed_flasher'"),
    (lambda t: {"targets": {"board-0": {**t, "options": {"wasmbed_flasher": [1]}}}},
     "option 'wasmbed_flasher' must be the flasher's http\\(s\\) URL, not list"),
    (lambda t: {"targets": {"board-0": {**t, "drivers": [{"NoSuchDriver": {}}]}}},
     "target board-0 of .*: unknown driver class NoSuchDriver"),
])
def test_a_malformed_environment_file_is_refused_naming_it(tmp_path, change, message):
    target = files.environment(ports(tmp_path, 1))["targets"]["board-0"]
    env_file = files.write_yaml(tmp_path / "env.yaml", change(target))
    for _ in range(2):  # the second finds the target's lock given back
        with pytest.raises(BoardUnavailable, match=message):
            take_local(env_file, timeout=0.3)


def test_a_standin_uart_is_a_stable_raw_pty_relayed_to_the_emulator(tmp_path):
    async def scenario():
        uart = PtyUart(tmp_path / "link")
        await uart.start()
        fd = os.open(tmp_path / "link", os.O_RDWR | os.O_NOCTTY)
        try:
            assert os.path.realpath(tmp_path / "link") == uart.device
            reader, writer = await asyncio.open_connection("127.0.0.1", uart.port)  # "QEMU"
            writer.write(b"\r\n\xff\x03boot\n")
            await writer.drain()
            got = await asyncio.to_thread(os.read, fd, 100)
            assert got == b"\r\n\xff\x03boot\n"  # raw: nothing translated
            await asyncio.to_thread(os.write, fd, b"\x00\xff\r")
            assert await reader.readexactly(3) == b"\x00\xff\r"
            writer.close()
        finally:
            os.close(fd)
            await uart.close()
        assert not (tmp_path / "link").exists()

    run(scenario())


def test_the_power_switch_and_flasher_refuse_what_a_board_would(tmp_path):
    async def scenario():
        board = StandinBoard(0, tmp_path / "board-0", qemu="/nonexistent/qemu")
        await board.start()
        service = LabService([board])
        await service.start()
        url = service.power_url().replace("{index}", "0")
        try:
            assert await asyncio.to_thread(power, url, "get") == "0"
            with pytest.raises(RuntimeError, match="409 board-0: nothing flashed"):
                await asyncio.to_thread(power, url, "on")
            with pytest.raises(RuntimeError, match="404 no board '7'"):
                await asyncio.to_thread(power, url.replace("/0/", "/7/"), "on")
            for index in ("%C2%B2", "%D9%A3", "-1", "x"):  # "²" and "٣" are isdigit() too
                with pytest.raises(RuntimeError, match="404 no board"):
                    await asyncio.to_thread(power, url.replace("/0/", f"/{index}/"), "on")

            def put(part: str, data: bytes) -> str:
                req = urllib.request.Request(f"{service.flash_url(0)}/{part}", data=data,
                                             method="PUT")
                try:
                    with urllib.request.urlopen(req, timeout=10) as reply:
                        return reply.read().decode()
                except urllib.error.HTTPError as exc:
                    return f"{exc.code} {exc.read().decode()}"

            assert (await asyncio.to_thread(put, "bootloader", b"x")).startswith(
                "409 board-0: no flash part 'bootloader'")
            assert "does not fit" in await asyncio.to_thread(put, "blob", b"x" * 20000)
            assert (await asyncio.to_thread(put, "image", b"ELF")).strip() == "3"
            assert (board.flash_dir / "image.elf").read_bytes() == b"ELF"
        finally:
            await service.stop()
            await board.close()

    run(scenario())


def test_the_power_command_checks_its_arguments():
    with pytest.raises(ValueError, match="placeholder"):
        power("http://127.0.0.1:1/power/0/1", "on")
    with pytest.raises(ValueError, match="power action 'toggle'"):
        power("http://127.0.0.1:1/power/0/{value}", "toggle")


@pytest.mark.skipif(shutil.which("ser2net") is None and not Path("/usr/sbin/ser2net").exists(),
                    reason="ser2net not installed (Debian: ser2net)")
@pytest.mark.timeout(180)
def test_a_coordinator_hands_each_reservation_a_different_place_and_the_lab_stops_clean():
    lab = LabProcess(2, coordinator=True)
    info = lab.start()
    pids_before = _lab_processes(lab)
    boards = []
    try:
        assert info["places"] == "board=standin" and info["coordinator"].startswith("127.")
        boards = [take_remote(info["coordinator"], info["places"], timeout=60) for _ in range(2)]
        assert sorted(b.name for b in boards) == ["board-0", "board-1"]
        with pytest.raises(BoardUnavailable, match="no free place tagged board=standin"):
            take_remote(info["coordinator"], info["places"], timeout=3)
        assert boards[0].flasher.endswith(f"/flash/{boards[0].name[-1]}")
        assert boards[0].power.get() is False  # NetworkPowerDriver, through simplerest
        boards.pop().release()
        again = take_remote(info["coordinator"], info["places"], timeout=60)
        boards.append(again)
        assert again.name in ("board-0", "board-1")
    finally:
        for board in boards:
            board.release()
        lab.close()
    assert len(pids_before) >= 3  # the lab, its coordinator, its exporter
    assert not [pid for pid in pids_before if Path(f"/proc/{pid}").exists()]


def _lab_processes(lab: LabProcess) -> list[int]:
    """The lab's process and its children (coordinator, exporter and their own)."""
    found = [lab.service.pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) in found:
            found.append(int(stat.parent.name))
    return [p for p in found if p is not None]


def test_the_board_backend_says_what_it_lacks(monkeypatch):
    from wasmbed_hil.bench.backends.board import BoardBackend

    for name in ("WASMBED_BOARD_ENV", "WASMBED_BOARD_COORDINATOR", "WASMBED_BOARD_LAB"):
        monkeypatch.delenv(name, raising=False)
    reason = BoardBackend.unavailable_reason()
    assert reason is not None and reason.startswith("no boards: give a labgrid environment")
    with BoardBackend.run_resources():  # no lab asked for: nothing started, nothing set
        assert "WASMBED_BOARD_ENV" not in os.environ
    monkeypatch.setenv("WASMBED_BOARD_LAB", "qemu:two")
    with pytest.raises(ValueError, match="qemu:N or qemu:N:coordinator"), \
            BoardBackend.run_resources():
        pass
