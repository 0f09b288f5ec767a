"""Run a benchmark on another Debian release's Python and OpenSSL, on this machine's CPU.

    sudo .venv/bin/python benchmarks/on_platform.py [--suite trixie] -- bench_enroll.py
    sudo .venv/bin/python benchmarks/on_platform.py -- table.py --only enrollments
    sudo .venv/bin/python benchmarks/on_platform.py --info     # the platform, nothing run

The gateway's figures depend on the interpreter's build and on the OpenSSL its `ssl` module
links, not only on the code. On this machine, on Debian 13's OpenSSL 3.5 rather than Debian
12's 3.0, the gateway did 13-19 % more enrollments per CPU-second and spent more CPU on a
heartbeat's TLS records; an interpreter built with profile-guided optimisation ran its Python
faster than one built without (benchmarks/README.md, "The platform"). The container image
the manifests run (deploy/Dockerfile, python:3.11-slim-trixie) is CPython built with
--enable-optimizations --with-lto against Debian 13's OpenSSL 3.5. A development machine may
be neither (this repository's CI machines: Debian 12's OpenSSL 3.0, a pyenv CPython
configured without optimisations). This script measures the same code on a Debian release's
own python3 (Debian builds it with PGO and LTO) and OpenSSL, in a root filesystem of that
release on this machine: same CPU, same kernel, same load generators' code.

The first run builds the root filesystem with mmdebstrap (Debian package `mmdebstrap`;
`bash scripts/system-deps.sh --platform` installs it) into .cache/platform/SUITE (about
310 MB with the venv; minbase, python3, python3-venv, mosquitto and procps for
bench_mosquitto.py), then a venv in it.
Every run copies this checkout's tracked files into it and installs them with the `bench` and
`fast` extras, so the code measured is the code here. The benchmark runs in a mount namespace
of its own (unshare), with /proc, /dev and /sys bound into the root filesystem: nothing stays
mounted after it, whatever way it ends. The network is the host's (loopback, and PyPI for
the install; the host's CA bundle is copied in, so a proxy the host trusts works inside).
Paths the benchmark is given are the chroot's: a file it writes under /src (`table.py --json
/src/t.json`) is in .cache/platform/SUITE/src afterwards, until the next run replaces /src.
Needs root (chroot, mounts). Exit status: the benchmark's, or 2 when it cannot run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MIRROR = "http://deb.debian.org/debian"
# What the benchmarks need from the release itself; the rest comes from PyPI into /venv.
PACKAGES = ("python3", "python3-venv", "ca-certificates", "mosquitto", "procps")
EXTRAS = "bench,fast"
STAMP = ".wasmbed-platform"  # written last: a root filesystem without it is rebuilt
# Variables passed into the chroot: how to reach PyPI from here, nothing else of the host's.
PASSED = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
          "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_DEFAULT_TIMEOUT")


class PlatformError(Exception):
    """The platform cannot be prepared or entered; the message says why and what to do."""


def scripts() -> list[str]:
    """The benchmarks it runs: benchmarks/*.py but the helpers (_*.py) and itself."""
    return sorted(p.name for p in HERE.glob("*.py")
                  if not p.name.startswith("_") and p.name != Path(__file__).name)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="trixie",
                        help="Debian release (default trixie: Debian 13, OpenSSL 3.5)")
    parser.add_argument("--mirror", default=MIRROR, help=f"Debian mirror (default {MIRROR})")
    parser.add_argument("--rootfs", type=Path,
                        help="root filesystem folder (default .cache/platform/SUITE)")
    parser.add_argument("--rebuild", action="store_true",
                        help="build the root filesystem again from scratch")
    parser.add_argument("--info", action="store_true",
                        help="print the platform (Python, its build, OpenSSL, OS) and stop")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="after --: a script of benchmarks/ and its arguments")
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.info and not args.command:
        parser.error("name a benchmark after --, e.g. -- bench_enroll.py --devices 1000 "
                     "(or --info)")
    if args.command:
        script = args.command[0]
        if script not in scripts():
            parser.error(f"{script!r} is not a benchmark of benchmarks/ "
                         f"(one of: {', '.join(scripts())})")
    if args.rootfs is None:
        args.rootfs = ROOT / ".cache" / "platform" / args.suite
    return args


def check_host() -> None:
    """Root and mmdebstrap, or a PlatformError that says how to get them."""
    if os.geteuid() != 0:
        raise PlatformError("needs root (it builds a root filesystem, mounts /proc, /dev and "
                            "/sys into it and chroots): run it with sudo")
    for tool, package in (("mmdebstrap", "mmdebstrap"), ("unshare", "util-linux"),
                          ("chroot", "coreutils")):
        if shutil.which(tool) is None:
            raise PlatformError(f"{tool} not found: apt-get install {package} "
                                "(or bash scripts/system-deps.sh --platform)")


def build_rootfs_command(suite: str, target: Path, mirror: str) -> list[str]:
    return ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
            suite, str(target), mirror]


def ensure_rootfs(rootfs: Path, suite: str, mirror: str, rebuild: bool) -> None:
    """The root filesystem, built once (into a sibling folder, renamed when complete, so an
    interrupted build leaves nothing that looks usable), and again when the release, the
    mirror or PACKAGES differ from what its stamp says it was built with."""
    stamp = f"{suite} {mirror} {' '.join(PACKAGES)}\n"
    if rebuild and rootfs.exists():
        shutil.rmtree(rootfs)
    with contextlib.suppress(OSError):
        if (rootfs / STAMP).read_text() == stamp:
            return
    if rootfs.exists():
        shutil.rmtree(rootfs)  # a build that did not finish, or of another package list
    partial = rootfs.with_name(rootfs.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    print(f"on_platform: building a {suite} root filesystem in {rootfs} (once)", flush=True)
    done = subprocess.run(build_rootfs_command(suite, partial, mirror), check=False)
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise PlatformError(f"mmdebstrap failed (exit {done.returncode}) for {suite} from "
                            f"{mirror}: see its output above")
    (partial / STAMP).write_text(stamp)
    partial.rename(rootfs)


def tracked_files(root: Path) -> list[str]:
    """This checkout's files as git tracks them (what a clean clone has), else every file
    outside the caches, venvs and build output."""
    if (root / ".git").exists() and shutil.which("git"):
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], check=True,
                             capture_output=True).stdout.decode()
        return [f for f in out.split("\0") if f and (root / f).is_file()]
    skip = {".git", ".cache", ".venv", "build", "reports", "__pycache__"}
    return [str(p.relative_to(root)) for p in sorted(root.rglob("*"))
            if p.is_file() and not skip.intersection(p.relative_to(root).parts)]


def copy_source(root: Path, rootfs: Path) -> None:
    """This checkout into the root filesystem's /src, replacing what an earlier run left."""
    dest = rootfs / "src"
    if dest.exists():
        shutil.rmtree(dest)
    for name in tracked_files(root):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, dest / name)


def chroot_env(host: dict[str, str]) -> dict[str, str]:
    env = {"PATH": "/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": "/root", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.update({k: v for k, v in host.items() if k in PASSED})
    return env


def in_rootfs(rootfs: Path, inner: str) -> list[str]:
    """A command line running the shell command `inner` chrooted in `rootfs`, inside a mount
    namespace of its own whose binds vanish with it."""
    r = shlex.quote(str(rootfs))
    setup = (f"mount --rbind /dev {r}/dev && mount -t proc proc {r}/proc && "
             f"mount --rbind /sys {r}/sys && exec chroot {r} /bin/sh -c {shlex.quote(inner)}")
    return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", setup]


def install_command() -> str:
    return ("cd /src && { test -x /venv/bin/python || python3 -m venv /venv; } && "
            "/venv/bin/python -m pip install -q --upgrade pip && "
            "{ /venv/bin/python -m pip uninstall -q -y wasmbed-hil 2>/dev/null || true; } && "
            f"/venv/bin/python -m pip install -q '.[{EXTRAS}]'")


def info_command() -> str:
    return ("cd /src && /venv/bin/python -c 'import sys; sys.path.insert(0, \"benchmarks\"); "
            "import bench_gateway as g; print(\"platform:\", g.platform_text())'")


def run_command(command: Sequence[str]) -> str:
    return "cd /src && exec /venv/bin/python " + " ".join(
        shlex.quote(a) for a in ["benchmarks/" + command[0], *command[1:]])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    rootfs: Path = args.rootfs.resolve()
    try:
        check_host()
        ensure_rootfs(rootfs, args.suite, args.mirror, args.rebuild)
        ca = Path("/etc/ssl/certs/ca-certificates.crt")
        if ca.is_file():
            shutil.copyfile(ca, rootfs / "etc/ssl/certs/ca-certificates.crt")
        shutil.copyfile("/etc/resolv.conf", rootfs / "etc/resolv.conf")
        copy_source(ROOT, rootfs)
    except (PlatformError, OSError, subprocess.CalledProcessError) as exc:
        print(f"on_platform: {exc}", file=sys.stderr)
        return 2
    env = chroot_env(dict(os.environ))
    step = subprocess.run(in_rootfs(rootfs, install_command()), env=env, check=False)
    if step.returncode != 0:
        print(f"on_platform: installing the project in {rootfs}/venv failed "
              f"(exit {step.returncode}): see pip's output above", file=sys.stderr)
        return 2
    subprocess.run(in_rootfs(rootfs, info_command()), env=env, check=False)
    if args.info:
        return 0
    return subprocess.run(in_rootfs(rootfs, run_command(args.command)), env=env,
                          check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
