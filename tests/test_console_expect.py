"""device.console: the line sequence it always was, expect/expect_exact on lines as they
arrive (a condition, a cursor, clear timeouts), write_line, the run's default timeout, and a
machine that dies under a wait (a stand-in emulator: a Python process)."""

from __future__ import annotations

import re
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wasmbed_hil.bench import waits
from wasmbed_hil.bench.backends.firmware import FirmwareDeviceHandle
from wasmbed_hil.bench.consolelog import ConsoleLog, ConsoleTimeout, DeviceConsole
from wasmbed_hil.bench.errors import InfrastructureError, MachineDied
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.machines.qemu import _LIVE, QemuMachine
from wasmbed_hil.pki import FleetCA


def console(log: ConsoleLog, typed: list[str] | None = None) -> DeviceConsole:
    return DeviceConsole(log, "dut", (typed if typed is not None else []).append)


def feed_when_waited(log: ConsoleLog, *lines: str) -> threading.Thread:
    """A producer thread that appends `lines` once a reader waits on the log (so the lines
    arrive during the wait, not before it)."""

    def produce() -> None:
        assert log.wait_for_waiter(10), "nobody waited on the console"
        for line in lines:
            log.append(line)

    thread = threading.Thread(target=produce)
    thread.start()
    return thread


@pytest.fixture
def default_timeout() -> Iterator[None]:
    previous = waits.set_default_timeout(0.2)
    yield
    waits.set_default_timeout(previous)


def test_the_console_is_still_a_read_only_sequence_of_lines() -> None:
    log = ConsoleLog()
    for line in ("boot", "connecting to 127.0.0.1:1", "online as x"):
        log.append(line)
    con = console(log)
    assert len(con) == 3 and con[0] == "boot" and con[-1] == "online as x"
    assert con[-2:] == ["connecting to 127.0.0.1:1", "online as x"]
    assert list(con) == ["boot", "connecting to 127.0.0.1:1", "online as x"]
    assert "boot" in con and "absent" not in con
    assert "\n".join(con).startswith("boot\nconnecting")
    assert con == ["boot", "connecting to 127.0.0.1:1", "online as x"]
    stamps = [at for at, _ in con.timed()]
    assert stamps == sorted(stamps) and [text for _, text in con.timed()] == list(con)
    assert not hasattr(con, "append")  # the test's side cannot write lines


def test_expect_waits_for_a_line_that_arrives_during_the_wait() -> None:
    log = ConsoleLog()
    log.append("boot")
    con = console(log)
    con.skip_to_end()
    feeder = feed_when_waited(log, "noise", "online as 0123abcd (enrolled_now=True)")
    match = con.expect(r"online as ([0-9a-f]+)", timeout=10)
    feeder.join()
    assert match.group(1) == "0123abcd"
    assert match.string == "online as 0123abcd (enrolled_now=True)"
    assert con.cursor == 3


def test_each_expect_searches_after_the_previous_match_unless_from_start() -> None:
    log = ConsoleLog()
    for n in range(3):
        log.append(f"heartbeat {n}")
    con = console(log)
    assert con.expect(r"heartbeat (\d)").group(1) == "0"
    assert con.expect(r"heartbeat (\d)").group(1) == "1"
    assert con.expect(re.compile(r"heartbeat (\d)")).group(1) == "2"
    with pytest.raises(ConsoleTimeout):
        con.expect(r"heartbeat", timeout=0)
    assert con.expect(r"heartbeat (\d)", from_start=True).group(1) == "0"
    assert con.cursor == 1


def test_a_timeout_names_the_pattern_and_shows_the_tail_and_defaults_to_the_run(
    default_timeout: None,
) -> None:
    log = ConsoleLog()
    for n in range(20):
        log.append(f"line {n}")
    con = console(log)
    with pytest.raises(ConsoleTimeout) as caught:
        con.expect(r"online as \w+")
    text = str(caught.value)
    assert "dut: no console line matched 'online as \\\\w+' within 0.2s" in text
    assert "searched from line 0 of 20" in text
    assert text.endswith("line 5\n" + "\n".join(f"line {n}" for n in range(6, 20)))
    assert "line 4" not in text  # the tail: the last 15 lines
    assert isinstance(caught.value, AssertionError)


def test_expect_exact_takes_text_literally() -> None:
    log = ConsoleLog()
    log.append("value axb")
    log.append("value a.b (done)")
    con = console(log)
    assert con.expect_exact("a.b (done)").string == "value a.b (done)"
    with pytest.raises(ConsoleTimeout, match=r"text 'a\.b'"):
        con.expect_exact("a.b", timeout=0)


def test_bad_patterns_and_lines_are_refused_clearly() -> None:
    typed: list[str] = []
    con = console(ConsoleLog(), typed)
    with pytest.raises(ValueError, match="bad regular expression '\\('"):
        con.expect("(")
    with pytest.raises(TypeError, match=r"str or re\.Pattern"):
        con.expect(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        con.expect_exact("")
    with pytest.raises(ValueError, match="without line endings"):
        con.write_line("silent 1\nforget")
    with pytest.raises(ValueError, match="positive"):
        con.expect("x", timeout=-1)
    con.write_line("silent 1")
    assert typed == ["silent 1"]


def test_the_default_wait_timeout_is_validated() -> None:
    with pytest.raises(ValueError, match="positive"):
        waits.set_default_timeout(0)
    with pytest.raises(TypeError):
        waits.set_default_timeout("10")  # type: ignore[arg-type]
    assert waits.resolve(3) == 3.0
    assert waits.resolve(None, 2) == 2 * waits.default_timeout()


def test_a_console_that_ends_with_an_error_raises_it_to_waiters() -> None:
    log = ConsoleLog()
    log.append("last words")
    con = console(log)
    died = MachineDied("dut", "qemu", 3, "last words", "qemu: fatal")
    waiter_error: list[BaseException] = []

    def wait() -> None:
        try:
            con.expect("never printed", timeout=10)
        except BaseException as exc:
            waiter_error.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    assert log.wait_for_waiter(10)
    log.end(died)
    thread.join()
    assert waiter_error == [died] and died.reported
    assert isinstance(died, InfrastructureError)
    assert con.expect("last words").string == "last words"  # what was printed still matches
    log.end(None)  # a new boot
    with pytest.raises(ConsoleTimeout):
        con.expect("never printed", timeout=0)


# ------------------------------------------------------ a machine that dies under a wait

DYING = textwrap.dedent("""
    import sys
    print("wasmbed firmware (stand-in)", flush=True)
    for line in sys.stdin:
        if line.strip() == "die":
            print("about to crash", flush=True)
            print("qemu: fatal: Lockup: can't escalate 3 to HardFault", file=sys.stderr,
                  flush=True)
            sys.exit(3)
        print("echo " + line.strip(), flush=True)
""")


class _Link:
    port = 1
    impairments: Any = None

    class stats:  # a stand-in for the link's counters
        bytes_up = bytes_down = upstream_connections = 0

    async def drop_upstream(self) -> None:
        pass

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("console-test-loop")
    yield thread
    assert thread.close() == []


@pytest.fixture
def dying(loop: LoopThread, tmp_path: Path) -> Iterator[FirmwareDeviceHandle]:
    machine = QemuMachine("dying", [sys.executable, "-c", DYING], tmp_path)
    creds = FleetCA.create("console test CA").issue_device("dying")
    handle = FirmwareDeviceHandle(loop, "dying", creds, machine, _Link(), backend="stand-in")
    try:
        yield handle
    finally:
        handle.close()


def test_a_machine_that_exits_on_its_own_raises_machine_died_from_every_wait(
    dying: FirmwareDeviceHandle,
) -> None:
    dying.power_on()
    dying.console.expect_exact("wasmbed firmware", timeout=10)
    dying.console.write_line("hello")
    assert dying.console.expect(r"echo (\w+)", timeout=10).group(1) == "hello"
    pid = dying.machine.pid
    dying.console.write_line("die")
    with pytest.raises(MachineDied) as caught:
        dying.console.expect("never printed", timeout=30)
    text = str(caught.value)
    assert text.startswith("dying: qemu exited with status 3 without a power cut")
    assert "about to crash" in text and "Lockup" in text  # console tail and stderr
    assert caught.value.status == 3 and caught.value.reported
    assert dying.died is caught.value and pid not in _LIVE
    assert not dying.powered
    with pytest.raises(MachineDied, match="qemu exited with status 3"):
        dying.wait_online(timeout=30)
    with pytest.raises(MachineDied):
        dying.write_line("silent 1")
    assert "[harness] qemu exited on its own (status 3)" in dying.console
    dying.power_on()  # a new boot forgets the death
    assert dying.died is None
    dying.console.expect_exact("wasmbed firmware", timeout=10)
    dying.power_off()
    assert dying.died is None  # a power cut is not a death
    assert dying.console[-1].startswith("[harness] power off")


def test_a_harness_power_cut_is_not_a_death(dying: FirmwareDeviceHandle) -> None:
    dying.power_on()
    dying.console.expect_exact("wasmbed firmware", timeout=10)
    dying.power_off()
    assert dying.died is None
    with pytest.raises(ConsoleTimeout):
        dying.console.expect("never printed", timeout=0)


def test_expect_refuses_to_block_the_loop(loop: LoopThread, dying: FirmwareDeviceHandle
                                          ) -> None:
    with pytest.raises(RuntimeError, match="on the harness loop"):
        loop.call(lambda: dying.console.expect("x", timeout=0))
