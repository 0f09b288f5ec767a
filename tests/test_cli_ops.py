"""`wasmbed-hil devices | apps | deploy | firmware build`: the operator's commands, run
in-process against an in-process platform (emulated API server, controllers, a gateway, the
REST API) with two virtual devices."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wasmbed_hil.bench import modules
from wasmbed_hil.bench.firmware import build
from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.platform import Platform, PlatformConfig
from wasmbed_hil.cli import main
from wasmbed_hil.cli.args import parse_selector
from wasmbed_hil.cli.firmware import toolchain_problem
from wasmbed_hil.pki import FleetCA

TIMEOUT = 30.0
DEVICES = ("dev-a", "dev-b")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    loop = LoopThread("cli-ops-test")
    try:
        workdir = tmp_path_factory.mktemp("platform")
        p = Platform(loop, FleetCA.create("cli ops test CA"), workdir, PlatformConfig(rest=True))
        try:
            p.start()
            for name in DEVICES:
                p.create_device(name, labels={"zone": "lab"}, backend="virtual")
            for name in DEVICES:
                p.wait_phase("devices", name, "Connected", TIMEOUT)
            (workdir / "token").write_text(p.token + "\n")
            yield p
        finally:
            p.stop()
    finally:
        loop.close()


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WASMBED_API", "WASMBED_TOKEN_FILE", "WASMBED_PLATFORM"):
        monkeypatch.delenv(name, raising=False)


class Cli:
    """Runs `wasmbed-hil ARGS --api URL --token-file PATH` in-process."""

    def __init__(self, platform: Platform, capsys: pytest.CaptureFixture[str]) -> None:
        self.platform = platform
        self.capsys = capsys
        self.connection = ["--api", platform.rest_url,
                           "--token-file", str(platform.workdir / "token")]

    def __call__(self, *args: str, connect: bool = True) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            code = main([*args, *(self.connection if connect else [])])
        except SystemExit as exc:  # argparse: --help, usage errors
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        assert self.platform.token not in out + err
        return code, out, err

    def json(self, *args: str) -> Any:
        code, out, err = self(*args, "-o", "json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(platform: Platform, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(platform, capsys)


def module_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.wasm"
    path.write_bytes(modules.build(name))
    return path


def delete_app(cli: Cli, name: str) -> None:
    code, out, err = cli("apps", "delete", name, "--wait", "--timeout", str(TIMEOUT))
    assert code == 0, err
    assert f"application '{name}' deleted" in out


# ----------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", [["devices"], ["devices", "show"], ["apps"],
                                     ["apps", "show"], ["apps", "delete"], ["deploy"],
                                     ["firmware"], ["firmware", "build"]])
def test_every_command_explains_itself_and_its_exit_codes(
        command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"wasmbed-hil {' '.join(command)}" in out
    assert "exit codes:" in out and "  3  " in out


def test_firmware_without_an_action_is_a_usage_error(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    assert main(["firmware"]) == 2
    assert "build" in capsys.readouterr().err


# ----------------------------------------------------------------------------- devices


def test_devices_list_as_table_wide_and_json(cli: Cli) -> None:
    code, out, _ = cli("devices")
    assert code == 0
    for name in DEVICES:
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert "Connected" in line and "gateway-0" in line
    code, out, _ = cli("devices", "-o", "wide")
    assert code == 0 and "zone=lab" in out and "virtual" in out
    items = cli.json("devices")["items"]
    assert {d["name"]: d["phase"] for d in items} == dict.fromkeys(DEVICES, "Connected")
    assert all(d["deviceId"] and d["gateway"] == "gateway-0" for d in items)
    assert {d["name"] for d in cli.json("devices", "-l", "zone=lab")["items"]} == set(DEVICES)
    assert cli.json("devices", "-l", "zone=elsewhere") == {"items": []}
    code, out, _ = cli("devices", "-l", "zone=elsewhere")
    assert code == 0 and "no devices match zone=elsewhere" in out


def test_device_show_as_block_and_json(cli: Cli) -> None:
    code, out, _ = cli("devices", "show", "dev-a")
    assert code == 0
    assert "dev-a" in out and "Connected" in out and "gateway-0" in out and "zone=lab" in out
    device = cli.json("devices", "show", "dev-a")
    assert device["name"] == "dev-a" and device["phase"] == "Connected"
    assert device["spec"]["emulation"]["backend"] == "virtual"
    # options before the action work as well as after it
    code, out, _ = cli("devices", "-o", "json", "show", "dev-b")
    assert code == 0 and json.loads(out)["name"] == "dev-b"
    code, out, err = cli("devices", "show", "no-such-device")
    assert code == 1 and out == ""
    assert "no device 'no-such-device'" in err


# ----------------------------------------------------------------------------- deploy, apps


def test_deploy_add_to_two_devices_then_list_show_delete(cli: Cli, tmp_path: Path) -> None:
    wasm = module_file(tmp_path, "add")
    code, out, err = cli("deploy", str(wasm), "--name", "cli-adder", "--device", "dev-a",
                         "--device", "dev-b", "--arg", "40", "--arg", "2",
                         "--timeout", str(TIMEOUT))
    assert code == 0, out + err
    rows = [line.split() for line in out.splitlines() if line.startswith("dev-")]
    assert sorted(rows) == [["dev-a", "Running", "RETURNED", "42"],
                            ["dev-b", "Running", "RETURNED", "42"]]
    assert "2 of 2 devices returned" in out
    try:
        code, out, _ = cli("apps")
        assert code == 0
        line = next(line for line in out.splitlines() if line.startswith("cli-adder"))
        assert line.split()[1:5] == ["Running", "2", "0", "2"]
        (app,) = [a for a in cli.json("apps")["items"] if a["name"] == "cli-adder"]
        assert app["statistics"]["running"] == 2
        code, out, _ = cli("apps", "show", "cli-adder")
        assert code == 0 and "devices dev-a, dev-b" in out
        assert sum("RETURNED" in line and "42" in line for line in out.splitlines()) == 2
        shown = cli.json("apps", "show", "cli-adder")
        assert {r["device"]: (r["outcome"], r["values"]) for r in shown["deviceStatuses"]} == {
            "dev-a": ("RETURNED", [42]), "dev-b": ("RETURNED", [42])}
        code, _, err = cli("deploy", str(wasm), "--name", "cli-adder", "--all")
        assert code == 1 and "already exists" in err
    finally:
        delete_app(cli, "cli-adder")
    code, _, err = cli("apps", "show", "cli-adder")
    assert code == 1 and "no application 'cli-adder'" in err
    code, _, err = cli("apps", "delete", "cli-adder")
    assert code == 1 and "no application 'cli-adder'" in err


def test_deploy_wat_by_selector_as_json(cli: Cli, tmp_path: Path) -> None:
    from importlib import resources

    wat = tmp_path / "add.wat"
    wat.write_text(resources.files("wasmbed_hil.bench.modules").joinpath("add.wat").read_text())
    try:
        code, out, err = cli("deploy", str(wat), "--name", "cli-wat", "--selector",
                             "zone in (lab,field),!broken",
                             "--entry", "add_f64", "--arg", "1.5", "--arg", "2.25",
                             "--fuel", "100000", "--timeout", str(TIMEOUT), "-o", "json")
        assert code == 0, err
        app = json.loads(out)  # only the JSON on stdout: no progress, no colour
        assert app["targetDevices"]["selector"]["matchExpressions"] == [
            {"key": "zone", "operator": "In", "values": ["lab", "field"]},
            {"key": "broken", "operator": "DoesNotExist"}]
        assert {r["device"]: r["values"] for r in app["deviceStatuses"]} == {
            "dev-a": [3.75], "dev-b": [3.75]}
        assert "2 of 2 devices returned" in err
    finally:
        delete_app(cli, "cli-wat")


def test_deploy_of_a_trapping_module_fails(cli: Cli, tmp_path: Path) -> None:
    try:
        code, out, _ = cli("deploy", str(module_file(tmp_path, "trap")), "--name", "cli-trap",
                           "--device", "dev-a", "--timeout", str(TIMEOUT))
        assert code == 1
        row = next(line for line in out.splitlines() if line.startswith("dev-a"))
        assert "Failed" in row and "TRAPPED" in row
        assert "1 of 1 devices failed" in out
    finally:
        delete_app(cli, "cli-trap")


def test_deploy_without_wait_only_creates(cli: Cli, tmp_path: Path) -> None:
    try:
        code, out, err = cli("deploy", str(module_file(tmp_path, "add")), "--name",
                             "cli-nowait", "--device", "dev-b", "--arg", "1", "--arg", "2",
                             "--no-wait", "-o", "json")
        assert code == 0, err
        app = json.loads(out)
        assert app["name"] == "cli-nowait"
        assert app["targetDevices"]["deviceNames"] == ["dev-b"]
    finally:
        delete_app(cli, "cli-nowait")


def test_deploy_to_an_unknown_device_fails_at_once_and_creates_nothing(
        cli: Cli, tmp_path: Path) -> None:
    wasm = module_file(tmp_path, "add")
    for targets in (["--device", "nosuch"], ["--device", "dev-a", "--device", "nosuch"]):
        # --timeout 600: were it to wait for the missing device, the test would time out
        code, out, err = cli("deploy", str(wasm), "--name", "cli-nosuch", *targets,
                             "--timeout", "600")
        assert code == 1, out + err
        assert "no such device: nosuch" in err and "nothing was created" in err
        assert out == ""
        assert "cli-nosuch" not in {a["name"] for a in cli.json("apps")["items"]}
        code, _, err = cli("apps", "show", "cli-nosuch")
        assert code == 1 and "no application 'cli-nosuch'" in err


def test_deploy_deletes_its_application_when_a_target_vanishes(
        cli: Cli, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A device deleted between the check and the creation: the control plane reports it as
    missing, and deploy takes back the Application it created instead of waiting."""
    from wasmbed_hil.cli import deploy

    monkeypatch.setattr(deploy, "_check_devices_exist", lambda api, names: None)
    code, out, err = cli("deploy", str(module_file(tmp_path, "add")), "--name", "cli-vanished",
                         "--device", "gone-device", "--timeout", "600")
    assert code == 1, out + err
    assert "no such device: gone-device" in err and "deleted again" in err
    code, _, err = cli("apps", "show", "cli-vanished")
    assert code == 1 and "no application 'cli-vanished'" in err


@pytest.mark.parametrize(("text", "selector"), [
    ("zone=lab", {"matchLabels": {"zone": "lab"}}),
    ("a==b,c!=d", {"matchLabels": {"a": "b"},
                   "matchExpressions": [{"key": "c", "operator": "NotIn", "values": ["d"]}]}),
    ("k notin (x, y),has,!not", {"matchExpressions": [
        {"key": "k", "operator": "NotIn", "values": ["x", "y"]},
        {"key": "has", "operator": "Exists"}, {"key": "not", "operator": "DoesNotExist"}]}),
])
def test_selector_syntax(text: str, selector: dict[str, Any]) -> None:
    assert parse_selector(text) == selector


@pytest.mark.parametrize("args", [
    ["--name", "x"],  # no target
    ["--name", "x", "--device", "dev-a", "--all"],
    ["--name", "x", "--selector", "zone=lab", "--all"],
    ["--name", "x", "--all", "--arg", "forty"],
    ["--name", "x", "--selector", "=lab"],
    ["--name", "x", "--selector", "a,,b"],
    ["--name", "x", "--selector", "k in ()"],
    ["--name", "x", "--all", "--fuel", "-1"],
    ["--all"],  # no name
])
def test_deploy_usage_errors(cli: Cli, tmp_path: Path, args: list[str]) -> None:
    code, out, err = cli("deploy", str(module_file(tmp_path, "add")), *args)
    assert code == 2, err
    assert out == ""


def test_deploy_refuses_bad_modules_and_names(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli("deploy", str(tmp_path / "missing.wasm"), "--name", "x", "--all")
    assert code == 3 and "does not exist" in err
    (tmp_path / "text.wasm").write_text("(module)")
    code, _, err = cli("deploy", str(tmp_path / "text.wasm"), "--name", "x", "--all")
    assert code == 2 and ".wat" in err
    (tmp_path / "broken.wat").write_text("(module (func (export \"main\")")
    code, _, err = cli("deploy", str(tmp_path / "broken.wat"), "--name", "x", "--all")
    assert code == 2 and "cannot compile" in err
    code, _, err = cli("deploy", str(module_file(tmp_path, "add")), "--name", "Not_A_Name",
                       "--all")
    assert code == 2 and "metadata.name" in err  # the REST API's 422, with its field
    # a refused request leaves nothing behind
    assert not {"x", "Not_A_Name"} & {a["name"] for a in cli.json("apps")["items"]}


# ----------------------------------------------------------------------------- connecting


def test_unreachable_api_is_an_environment_error(cli: Cli, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        for command in (["devices"], ["apps", "show", "x"],
                        ["deploy", str(module_file(tmp_path, "add")), "--name", "x", "--all"]):
            code, out, err = cli(*command, "--api", url, "--token-file", str(token),
                                 connect=False)
            assert code == 3, err
            assert f"cannot reach the REST API at {url} (from --api)" in err
            assert "--platform" in err and "t0ken" not in out + err
        # through a platform.json whose `wasmbed-hil up` has gone
        (tmp_path / "platform.json").write_text(json.dumps({"rest": url, "pid": 2**30}))
        code, _, err = cli("devices", "--platform", str(tmp_path), connect=False)
        assert code == 3 and "cannot reach the REST API" in err
        assert f"pid {2**30}, is no longer running" in err


def test_nothing_configured_says_what_to_set(cli: Cli) -> None:
    code, _, err = cli("devices", connect=False)
    assert code == 3
    for hint in ("--api", "WASMBED_API", "--platform", "WASMBED_PLATFORM"):
        assert hint in err


def test_token_problems(cli: Cli, platform: Platform, tmp_path: Path) -> None:
    api = ["--api", platform.rest_url]
    code, _, err = cli("devices", *api, connect=False)
    assert code == 3 and "no token file" in err
    code, _, err = cli("devices", *api, "--token-file", str(tmp_path / "nope"), connect=False)
    assert code == 3 and "does not exist" in err
    (tmp_path / "empty").write_text("\n")
    code, _, err = cli("devices", *api, "--token-file", str(tmp_path / "empty"), connect=False)
    assert code == 3 and "is empty" in err
    (tmp_path / "wrong").write_text("wrong-secret\n")
    code, out, err = cli("devices", *api, "--token-file", str(tmp_path / "wrong"),
                         connect=False)
    assert code == 3 and "refused the token" in err
    assert "wrong-secret" not in out + err


def test_platform_directory_and_environment(cli: Cli, platform: Platform, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "secret"
    token.write_text(platform.token)
    workdir = tmp_path / "up"
    workdir.mkdir()
    (workdir / "platform.json").write_text(json.dumps(
        {"rest": platform.rest_url, "tokenFile": str(token), "namespace": "wasmbed"}))
    code, out, err = cli("devices", "-o", "json", "--platform", str(workdir), connect=False)
    assert code == 0, err
    assert {d["name"] for d in json.loads(out)["items"]} >= set(DEVICES)
    # the token file defaults to DIR/token
    (workdir / "platform.json").write_text(json.dumps({"rest": platform.rest_url}))
    (workdir / "token").write_text(platform.token)
    code, _, err = cli("apps", "show", "nothing-here", "--platform", str(workdir),
                       connect=False)
    assert code == 1 and "no application 'nothing-here'" in err
    monkeypatch.setenv("WASMBED_PLATFORM", str(workdir))
    code, out, err = cli("devices", "show", "dev-a", connect=False)
    assert code == 0 and "dev-a" in out, err
    monkeypatch.delenv("WASMBED_PLATFORM")
    monkeypatch.setenv("WASMBED_API", platform.rest_url)
    monkeypatch.setenv("WASMBED_TOKEN_FILE", str(token))
    code, out, err = cli("apps", "-o", "json", connect=False)
    assert code == 0 and "items" in json.loads(out), err
    # a platform directory without platform.json: not running there
    code, _, err = cli("devices", "--platform", str(tmp_path), connect=False)
    assert code == 3 and "platform.json does not exist" in err


# ----------------------------------------------------------------------------- firmware


def test_firmware_build_without_the_toolchain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no make, no compiler, no qemu
    assert main(["firmware", "build"]) == 3
    err = capsys.readouterr().err
    assert "cannot build the firmware" in err and "gcc-arm-none-eabi" in err


@pytest.mark.timeout(900)  # a first build compiles mbedTLS and wasm3
@pytest.mark.skipif(shutil.which(build.ARM_GCC) is None or toolchain_problem() is not None,
                    reason="the firmware toolchain is not installed")
def test_firmware_build(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["firmware", "build"]) == 0
    out = capsys.readouterr().out
    assert str(build.image_path()) in out
    assert main(["firmware", "build", "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["elf"] == str(build.image_path())
    assert report["footprint"]["flash"] > 0
