"""The renode-test mode: our devices as machines of renode-test's Renode.

Without Renode: the remote monitor's calls against a recording keyword server, the device
script as commands, the suites prepared as renode-test prepares them, and the stand-in
keyword server (tests/renode_standin) on its own. With QEMU: the Renode-style suite
(robot/renode/wasmbed_on_renode.robot) and a shipped suite run by the renode-test runner
stand-in against the stand-in server, which emulates with QEMU.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import threading
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wasmbed_hil.bench.backends.qemu import QemuBackend
from wasmbed_hil.bench.backends.renode_test import RenodeTestBackend
from wasmbed_hil.bench.errors import MachineError
from wasmbed_hil.bench.machines.renode.machine import RenodeMachine
from wasmbed_hil.bench.machines.renode.monitor import MonitorCommandError, MonitorError
from wasmbed_hil.bench.machines.renode.remote import RemoteMonitor, check_url
from wasmbed_hil.bench.machines.renode.scripts import (
    DEVICE_TEMPLATE,
    ScriptError,
    render_device_script,
    script_commands,
)

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "renode_standin"
sys.path.insert(0, str(STANDIN))

import runner  # noqa: E402  (tests/renode_standin)
import server as standin  # noqa: E402


class RecordingProxy:
    """Stands in for ServerProxy: records run_keyword calls, answers from a script."""

    def __init__(self, answers: dict[str, dict[str, Any]] | None = None) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.answers = answers or {}

    def run_keyword(self, name: str, args: list[str]) -> dict[str, Any]:
        self.calls.append((name, list(args)))
        for text, answer in self.answers.items():
            if text in args[0]:
                if isinstance(answer, Exception):
                    raise answer
                return answer
        return {"status": "PASS", "return": ""}


# --- the remote monitor ------------------------------------------------------------------

def test_a_command_is_execute_command_with_the_machine_as_a_named_string_argument():
    proxy = RecordingProxy()
    monitor = RemoteMonitor("http://127.0.0.1:9999/", proxy)
    asyncio.run(monitor.execute("machine Reset", machine="sensor_b1"))
    asyncio.run(monitor.execute("start"))
    assert proxy.calls == [("ExecuteCommand", ["machine Reset", "machine=sensor_b1"]),
                           ("ExecuteCommand", ["start"])]
    assert monitor.history == ["machine Reset", "start"]


def test_renodes_failure_text_becomes_a_command_error_and_a_fault_a_monitor_error():
    proxy = RecordingProxy({
        "LoadPlatform": {"status": "FAIL", "error": "KeywordException: There was an error "
                         "when executing command 'x': Error E04: Could not resolve type"},
        "nope": xmlrpc.client.Fault(1, 'Keyword "ExecuteCommand" not found'),
    })
    monitor = RemoteMonitor("http://127.0.0.1:9999/", proxy)
    with pytest.raises(MonitorCommandError, match="E04: Could not resolve type"):
        asyncio.run(monitor.execute("machine LoadPlatformDescription @/x.repl"))
    reply = asyncio.run(monitor.execute("machine LoadPlatformDescription @/x", check=False))
    assert not reply.ok and "E04" in reply.errors[0]
    with pytest.raises(MonitorError, match="not found") as info:
        asyncio.run(monitor.execute("nope"))
    assert not isinstance(info.value, MonitorCommandError)


def test_an_unreachable_server_is_a_monitor_error():
    monitor = RemoteMonitor("http://127.0.0.1:1/")
    with pytest.raises(MonitorError, match="unreachable"):
        asyncio.run(monitor.execute("start", timeout=5))


@pytest.mark.parametrize("url", [
    "https://127.0.0.1:9999/", "http://127.0.0.1/", "http://h:1/?x=1", "http://u:p@h:1/",
    "http://127.0.0.1:99999/", "http://127.0.0.1:9999/ x", 9999,
])
def test_only_a_plain_http_url_with_a_port_is_accepted(url):
    with pytest.raises(ValueError, match="refused"):
        check_url(url)


def test_a_line_break_outside_a_macro_is_refused():
    monitor = RemoteMonitor("http://127.0.0.1:9999/", RecordingProxy())
    with pytest.raises(ValueError, match="line break"):
        asyncio.run(monitor.execute("start\nquit"))


# --- the device script as commands ---------------------------------------------------------

def _script(tmp_path: Path, machine: str = "sensor_b1") -> str:
    elf, blob = tmp_path / "w.elf", tmp_path / "b.bin"
    elf.write_bytes(b"\x7fELF")
    blob.write_bytes(b"\0")
    return render_device_script(machine=machine, elf=elf, blob=blob, link_port=4001,
                                console_port=4002, console_log=tmp_path / "c.log")


def test_the_device_script_splits_into_the_commands_renode_runs(tmp_path):
    commands = script_commands(_script(tmp_path))
    assert commands[:3] == [
        'emulation CreateServerSocketTerminal 4001 "sensor_b1_link" false',
        'emulation CreateServerSocketTerminal 4002 "sensor_b1_console" false',
        'mach create "sensor_b1"',
    ]
    macro = next(c for c in commands if c.startswith("macro reset"))
    assert macro.count('"""') == 2 and "sysbus LoadELF @" in macro and "LoadBinary" in macro
    assert commands[-2:] == ["runMacro $reset", "start"]
    assert not any(c.startswith(("#", ":")) for c in commands)
    template_lines = [ln for ln in DEVICE_TEMPLATE.read_text().splitlines()
                      if ln.strip() and not ln.startswith(("#", ":"))]
    assert len(commands) == len(template_lines) - 4  # the macro's 5 lines are one command


def test_a_block_left_open_is_refused():
    with pytest.raises(ScriptError, match="triple-quote"):
        script_commands('macro reset\n"""\nsysbus LoadELF @/x\n')


# --- the remote control ------------------------------------------------------------------

@pytest.fixture
def remote_machine(tmp_path: Path) -> Iterator[Any]:
    """A factory of remote-controlled RenodeMachines on a recording proxy, closed after."""
    made: list[RenodeMachine] = []

    def make(proxy: RecordingProxy) -> RenodeMachine:
        def script(machine: str, link: int, console: int) -> str:
            return _script(tmp_path, machine)

        machine = RenodeMachine("sensor", tmp_path / "dev", script, control="remote",
                                monitor=RemoteMonitor("http://127.0.0.1:9999/", proxy))
        made.append(machine)
        return machine

    yield make
    for machine in made:
        asyncio.run(machine.close())


def test_boot_sends_the_script_by_command_naming_the_machine_after_mach_create(
        tmp_path, remote_machine):
    proxy = RecordingProxy()
    machine = remote_machine(proxy)

    async def boot() -> None:
        await machine._control.boot("sensor_b1", lambda: _write(tmp_path, "sensor_b1"), 0)

    asyncio.run(boot())
    sent = [(args[0].split()[0], args[1:]) for _, args in proxy.calls]
    assert sent[0] == ("emulation", []) and sent[2] == ("mach", [])
    assert all(extra == ["machine=sensor_b1"] for _, extra in sent[3:])
    assert machine.current_machine == "sensor_b1"


def _write(tmp_path: Path, machine: str) -> Path:
    path = tmp_path / "device.resc"
    path.write_text(_script(tmp_path, machine))
    return path


def test_a_refused_command_fails_the_boot_naming_it_and_the_missing_model(
        tmp_path, remote_machine):
    proxy = RecordingProxy({"LoadPlatformDescription": {
        "status": "FAIL", "error": "Error E04: Could not resolve type: 'Timers.Arm_CMSDK_Timer'"}})
    machine = remote_machine(proxy)

    async def boot() -> None:
        await machine._control.boot("sensor_b1", lambda: _write(tmp_path, "sensor_b1"), 0)

    with pytest.raises(MachineError, match=r"LoadPlatformDescription.*\n.*E04") as info:
        asyncio.run(boot())
    assert "peripheral model" in str(info.value)
    assert [a[0] for _, a in proxy.calls][-1].startswith("machine LoadPlatformDescription")


def test_power_cut_pauses_and_removes_the_boots_machine_and_ignores_a_gone_one(
        remote_machine):
    proxy = RecordingProxy({"machine Pause": {"status": "FAIL", "error": "Could not find "
                                              "machine named sensor_b1 in the emulation"}})
    machine = remote_machine(proxy)
    machine._control.current = "sensor_b1"
    asyncio.run(machine._control.power_cut())
    assert proxy.calls[-2:] == [("ExecuteCommand", ["machine Pause", "machine=sensor_b1"]),
                                ("ExecuteCommand", ['mach rem "sensor_b1"'])]
    assert machine.current_machine is None


def test_the_backend_needs_a_server_url(monkeypatch):
    monkeypatch.delenv("WASMBED_RENODE_REMOTE", raising=False)
    assert "renode-test" in (RenodeTestBackend.unavailable_reason() or "")
    monkeypatch.setenv("WASMBED_RENODE_REMOTE", "ftp://x:1/")
    assert "refused" in (RenodeTestBackend.unavailable_reason() or "")


# --- renode-test's suite preparation, and the shipped suites under it ----------------------

SUITES = sorted((ROOT / "robot" / "suites").glob("*.robot"))


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_renode_test_adds_no_setup_or_teardown_to_the_shipped_suites(path):
    suite = runner.prepare(path, runner.KEYWORDS)
    assert suite.setup.name == "Wasmbed Suite Setup"
    assert suite.teardown.name == "Wasmbed Suite Teardown"
    for test in suite.tests:
        assert test.setup.name != "Reset Emulation", test.name
        assert test.teardown.name == "Wasmbed Test Teardown", test.name


# --- the stand-in server -----------------------------------------------------------------

@pytest.fixture
def standin_server() -> Iterator[tuple[str, standin.KeywordServer]]:
    server, keywords = standin.serve(0, ("Arm_CMSDK_Timer",))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", keywords
    finally:
        keywords.emulation.clear()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_standin_answers_like_renodes_keyword_server(standin_server, tmp_path):
    url, _ = standin_server
    proxy = xmlrpc.client.ServerProxy(url, allow_none=True)
    assert "ExecuteCommand" in proxy.get_keyword_names()
    assert proxy.run_keyword("ExecuteCommand", ["bogus"])["status"] == "FAIL"
    with pytest.raises(xmlrpc.client.Fault, match="not found"):
        proxy.run_keyword("NoSuchKeyword", [])
    log = tmp_path / "c.log"
    for command in ('mach create "m_b1"', f"sysbus.uart0 CreateFileBackend @{log} true"):
        assert proxy.run_keyword("ExecuteCommand", [command])["status"] == "PASS"
    again = proxy.run_keyword("ExecuteCommand", [f"sysbus.uart0 CreateFileBackend @{log} true"])
    assert again["status"] == "FAIL" and "alredy used" in again["error"]
    missing = proxy.run_keyword("ExecuteCommand", ["bogus", "machine=m_b9"])
    assert "Could not find machine named m_b9" in missing["error"]


def test_standin_refuses_a_platform_with_a_missing_model(standin_server, tmp_path):
    url, _ = standin_server
    proxy = xmlrpc.client.ServerProxy(url, allow_none=True)
    proxy.run_keyword("ExecuteCommand", ['mach create "m_b1"'])
    repl = ROOT / "renode" / "mps2-an385.repl"
    answer = proxy.run_keyword("ExecuteCommand", [f"machine LoadPlatformDescription @{repl}"])
    if "Arm_CMSDK_Timer" in repl.read_text():
        assert answer["status"] == "FAIL" and "E04" in answer["error"]
    else:  # the platform no longer needs the nightly-only timer
        assert answer["status"] == "PASS"


# --- with QEMU: the suites through the renode-test runner against the stand-in -------------

qemu_only = pytest.mark.skipif(
    QemuBackend.unavailable_reason() is not None,
    reason=f"qemu backend unavailable: {QemuBackend.unavailable_reason()}",
)


@pytest.fixture
def standin_process() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, str(STANDIN / "server.py")],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("port "):
            pytest.fail(f"stand-in server did not announce its port: {line!r}")
        yield int(line.split()[1])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _run(port: int, outdir: Path, *suites: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(STANDIN / "runner.py"), "--port", str(port), "--outputdir",
         str(outdir), "--variable", "BACKEND:renode-test", "--variable", "HIL_TIMEOUT:30s",
         *map(str, suites)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )


@qemu_only
def test_the_renode_style_suite_runs_under_the_renode_test_runner(standin_process, tmp_path):
    done = _run(standin_process, tmp_path, ROOT / "robot" / "renode" / "wasmbed_on_renode.robot")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wasmbed_on_renode.robot: 3 passed, 0 failed, 0 skipped" in done.stdout


@qemu_only
def test_a_shipped_suite_runs_on_renode_tests_renode(standin_process, tmp_path):
    done = _run(standin_process, tmp_path, ROOT / "robot" / "suites" / "deployment.robot")
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 0 failed, 0 skipped" in done.stdout and " 0 passed" not in done.stdout


# --- the keywords, and the renode-test mode's Robot side with virtual devices --------------

def test_get_renode_machine_fails_for_a_device_not_on_renode():
    from wasmbed_hil.robot import WasmbedLibrary

    lib = WasmbedLibrary(backend="virtual")
    try:
        lib.run_keyword("start_gateway", [], {})
        lib.run_keyword("create_device", ["plain"], {})
        with pytest.raises(AssertionError, match="plain has no Renode machine: not on a "
                                                 "Renode backend"):
            lib.run_keyword("get_renode_machine", [], {})
    finally:
        lib.close()


@pytest.mark.parametrize("port", ["0", "70000", "99x", ""])
def test_a_port_number_that_is_not_one_is_refused(port):
    from wasmbed_hil.robot.keywords.renode import renode_test_url

    with pytest.raises(ValueError, match="PORT_NUMBER"):
        renode_test_url(port)


def test_the_suites_run_under_the_renode_test_runner_with_renodes_setup_and_teardown(
        standin_server, tmp_path):
    """Virtual devices: what renode-test adds and our Wasmbed Suite Setup/Test Teardown do,
    with Renode's Setup importing the Remote library from the stand-in; its Teardown must
    leave the server running (SKIP_RUNNING_SERVER stays True)."""
    url, _ = standin_server
    port = int(url.rsplit(":", 1)[1].strip("/"))
    done = subprocess.run(
        [sys.executable, str(STANDIN / "runner.py"), "--port", str(port), "--outputdir",
         str(tmp_path), str(ROOT / "robot" / "suites" / "enrollment.robot")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "enrollment.robot: 5 passed, 0 failed, 0 skipped" in done.stdout
    proxy = xmlrpc.client.ServerProxy(url, allow_none=True)
    assert proxy.run_keyword("ResetEmulation", [])["status"] == "PASS"  # still serving
