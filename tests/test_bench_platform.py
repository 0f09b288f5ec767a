"""benchmarks/on_platform.py's parts (arguments, host checks, the root filesystem's build and
reuse, what is copied in, what crosses into the chroot) and bench_gateway.platform_text,
without building a root filesystem: mmdebstrap and the chroot are replaced where they would
run. (Building one for real downloads a Debian release; benchmarks/README.md shows a run.)"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from bench_scripts import load_script


@pytest.fixture(scope="module")
def onp() -> ModuleType:
    return load_script("on_platform")


@pytest.fixture(scope="module")
def gwb() -> ModuleType:
    return load_script("bench_gateway")


# ---------------------------------------------------------------------- arguments
def test_the_command_after_the_separator_is_a_benchmark_script(onp: ModuleType) -> None:
    args = onp.parse(["--suite", "bookworm", "--", "bench_enroll.py", "--devices", "10"])
    assert args.suite == "bookworm"
    assert args.command == ["bench_enroll.py", "--devices", "10"]
    assert args.rootfs == onp.ROOT / ".cache" / "platform" / "bookworm"
    # the benchmark's own options are not taken for this script's
    args = onp.parse(["--", "table.py", "--info", "--quick"])
    assert args.command == ["table.py", "--info", "--quick"] and not args.info


@pytest.mark.parametrize("command", [
    ["nope.py"],  # not in benchmarks/
    ["../conftest.py"],  # a path, not a script's name
    ["README.md"],  # not a script
    ["_gw_server.py"],  # a helper, not a benchmark
    ["on_platform.py"],  # itself
    [],  # nothing to run
])
def test_what_it_cannot_run_is_refused_with_the_choices(onp: ModuleType, command: list[str],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        onp.parse(["--", *command] if command else [])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    if not command:
        assert "name a benchmark after --" in err
        return
    choices = err.split("(one of: ")[1]
    assert "bench_enroll.py" in choices and "table.py" in choices
    assert "_gw_server.py" not in choices and "on_platform.py" not in choices


def test_info_needs_no_command(onp: ModuleType) -> None:
    args = onp.parse(["--info", "--rootfs", "/tmp/x"])
    assert args.info and args.command == [] and args.rootfs == Path("/tmp/x")


# ---------------------------------------------------------------------- the host
def test_a_non_root_user_is_told_to_use_sudo(onp: ModuleType,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onp.os, "geteuid", lambda: 1000)
    with pytest.raises(onp.PlatformError, match=r"needs root.*sudo"):
        onp.check_host()


def test_a_missing_mmdebstrap_names_the_package(onp: ModuleType,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onp.os, "geteuid", lambda: 0)
    monkeypatch.setattr(onp.shutil, "which", lambda tool: None if tool == "mmdebstrap" else tool)
    with pytest.raises(onp.PlatformError,
                       match="mmdebstrap not found: apt-get install mmdebstrap"):
        onp.check_host()
    monkeypatch.setattr(onp.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    onp.check_host()  # everything there: no error


def test_main_says_why_it_cannot_run_and_exits_2(onp: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(onp.os, "geteuid", lambda: 1000)
    assert onp.main(["--", "bench_enroll.py"]) == 2
    assert "on_platform: needs root" in capsys.readouterr().err


# ---------------------------------------------------------------------- the root filesystem
class FakeMmdebstrap:
    """Stands for mmdebstrap: makes the target folder (or fails), records the command."""

    def __init__(self, rc: int = 0) -> None:
        self.rc = rc
        self.calls: list[list[str]] = []

    def __call__(self, cmd: list[str], check: bool = False) -> SimpleNamespace:
        self.calls.append(cmd)
        target = Path(cmd[-2])
        (target / "etc").mkdir(parents=True)
        return SimpleNamespace(returncode=self.rc)


def test_the_root_filesystem_is_built_once_then_reused(onp: ModuleType, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeMmdebstrap()
    monkeypatch.setattr(onp.subprocess, "run", fake)
    rootfs = tmp_path / "platform" / "trixie"
    onp.ensure_rootfs(rootfs, "trixie", onp.MIRROR, rebuild=False)
    assert (rootfs / "etc").is_dir() and (rootfs / onp.STAMP).is_file()
    assert not rootfs.with_name("trixie.partial").exists()
    cmd = fake.calls[0]
    assert cmd[0] == "mmdebstrap" and cmd[-3:] == ["trixie", str(rootfs.with_name(
        "trixie.partial")), onp.MIRROR]
    assert "--include=python3,python3-venv,ca-certificates,mosquitto,procps" in cmd
    onp.ensure_rootfs(rootfs, "trixie", onp.MIRROR, rebuild=False)
    assert len(fake.calls) == 1  # reused
    (rootfs / "etc" / "marker").write_text("old")
    onp.ensure_rootfs(rootfs, "trixie", onp.MIRROR, rebuild=True)
    assert len(fake.calls) == 2 and not (rootfs / "etc" / "marker").exists()
    # built with another package list (an older version of this script): built again
    (rootfs / onp.STAMP).write_text(f"trixie {onp.MIRROR} python3\n")
    onp.ensure_rootfs(rootfs, "trixie", onp.MIRROR, rebuild=False)
    assert len(fake.calls) == 3
    onp.ensure_rootfs(rootfs, "trixie", "http://other/debian", rebuild=False)
    assert len(fake.calls) == 4  # another mirror


def test_an_unfinished_root_filesystem_is_built_again(onp: ModuleType, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeMmdebstrap()
    monkeypatch.setattr(onp.subprocess, "run", fake)
    rootfs = tmp_path / "trixie"
    (rootfs / "half").mkdir(parents=True)  # no stamp: a build that was interrupted
    (tmp_path / "trixie.partial" / "junk").mkdir(parents=True)
    onp.ensure_rootfs(rootfs, "trixie", onp.MIRROR, rebuild=False)
    assert len(fake.calls) == 1 and not (rootfs / "half").exists()
    assert (rootfs / onp.STAMP).is_file()


def test_a_failed_build_leaves_nothing_that_looks_usable(onp: ModuleType, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onp.subprocess, "run", FakeMmdebstrap(rc=1))
    rootfs = tmp_path / "trixie"
    with pytest.raises(onp.PlatformError, match=r"mmdebstrap failed \(exit 1\) for trixie"):
        onp.ensure_rootfs(rootfs, "trixie", "http://mirror.invalid/debian", rebuild=False)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- what goes in
def test_the_tracked_files_are_copied_and_nothing_else(onp: ModuleType, tmp_path: Path) -> None:
    src = tmp_path / "checkout"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "a.py").write_text("A = 1\n")
    (src / "untracked.txt").write_text("scratch\n")
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    subprocess.run(["git", "-C", str(src), "add", "pkg/a.py"], check=True)
    assert onp.tracked_files(src) == ["pkg/a.py"]
    rootfs = tmp_path / "rootfs"
    (rootfs / "src" / "stale").mkdir(parents=True)  # an earlier run's copy
    onp.copy_source(src, rootfs)
    assert sorted(str(p.relative_to(rootfs / "src")) for p in (rootfs / "src").rglob("*")) \
        == ["pkg", "pkg/a.py"]


def test_without_git_the_caches_and_venvs_stay_out(onp: ModuleType, tmp_path: Path) -> None:
    for name in ("pkg/a.py", ".cache/platform/trixie/x", ".venv/bin/python", "README.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert onp.tracked_files(tmp_path) == ["README.md", "pkg/a.py"]


def test_only_the_proxy_and_index_settings_cross_into_the_chroot(onp: ModuleType) -> None:
    env = onp.chroot_env({"HTTPS_PROXY": "http://proxy:3128", "PIP_INDEX_URL": "https://idx",
                          "PIP_CERT": "/host/only/ca.pem", "AWS_SECRET_ACCESS_KEY": "s",
                          "PATH": "/host/bin", "VIRTUAL_ENV": "/host/.venv"})
    assert env["HTTPS_PROXY"] == "http://proxy:3128" and env["PIP_INDEX_URL"] == "https://idx"
    assert env["PATH"].startswith("/venv/bin:") and "/usr/sbin" in env["PATH"]
    for host_only in ("PIP_CERT", "AWS_SECRET_ACCESS_KEY", "VIRTUAL_ENV"):
        assert host_only not in env


def test_the_command_runs_chrooted_in_a_mount_namespace_of_its_own(onp: ModuleType) -> None:
    rootfs = Path("/tmp/odd dir/trixie")
    inner = onp.run_command(["bench_enroll.py", "--devices", "10", "it's"])
    cmd = onp.in_rootfs(rootfs, inner)
    assert cmd[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert cmd[4:6] == ["/bin/sh", "-c"]
    words = shlex.split(cmd[6])
    # the binds go into the root filesystem, then the chroot runs the command unchanged
    assert words[:4] == ["mount", "--rbind", "/dev", f"{rootfs}/dev"]
    assert "-t" in words and f"{rootfs}/proc" in words and f"{rootfs}/sys" in words
    assert words[-5:] == ["chroot", str(rootfs), "/bin/sh", "-c", inner]
    assert shlex.split(inner)[-5:] == ["/venv/bin/python", "benchmarks/bench_enroll.py",
                                       "--devices", "10", "it's"]


# ---------------------------------------------------------------------- the platform line
@pytest.mark.parametrize(("config_args", "base_prefix", "build"), [
    ("'--prefix=/usr/local' '--enable-optimizations' '--with-lto'", "/usr/local",
     "configured with --enable-optimizations"),
    ("'--enable-shared' '--prefix=/usr'", "/usr", "Debian's build"),
    ("'--prefix=/root/.pyenv/versions/3.11.7' '--enable-shared'",
     "/root/.pyenv/versions/3.11.7", "configured without --enable-optimizations"),
])
def test_the_platform_line_says_how_the_interpreter_was_built(
        gwb: ModuleType, monkeypatch: pytest.MonkeyPatch, config_args: str, base_prefix: str,
        build: str) -> None:
    import ssl
    import sysconfig

    real = sysconfig.get_config_var

    def config_var(name: str) -> Any:
        return config_args if name == "CONFIG_ARGS" else real(name)

    monkeypatch.setattr(sysconfig, "get_config_var", config_var)
    monkeypatch.setattr(sys, "base_prefix", base_prefix)
    text = gwb.platform_text()
    assert f"({build}), {ssl.OPENSSL_VERSION}" in text
    assert text.startswith("CPython 3.")
