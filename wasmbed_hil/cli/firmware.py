"""`wasmbed-hil firmware build`: the device firmware image (make -C firmware BOARD=<board>),
with progress.

It runs `wasmbed_hil.bench.firmware.build.run_make`, the same make command and file lock
(<build dir>/.lock) that tests' `ensure_image` uses, with `on_line` streaming make's
output, and shows the current step (`CC file.c`, `LD ...`) on a terminal.
The paths, the tool check and the footprint come from `wasmbed_hil.bench.firmware.build`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable

from rich.markup import escape

from ..bench.firmware import build
from .api import describe
from .common import EXIT_OK, EXIT_USAGE, CliError, console

MAKE_TIMEOUT = 900.0  # seconds, as build.run_make
_STEP = re.compile(r"^\s*(CC|LD|AR|AS|CXX)\s+(\S.*)$")  # the Makefile's step lines
_QUIET = re.compile(r"^(make(\[\d+\])?: |text\s|\d+\s)")  # make's chatter, size's table
_MODE = re.compile(r"^footprint: .*\(mode ([\w-]+),")  # device, or selftest-tls

EXIT_CODES = """\
exit codes:
  0  the image is built (or was already up to date)
  1  make failed (the tail of its output is shown)
  2  bad usage
  3  the toolchain is missing (qemu-system-arm, arm-none-eabi-gcc, make; the message names
     the Debian packages)
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("firmware", help="build the device firmware image",
                       description="The firmware the qemu backend runs on each emulated "
                       "device.", epilog=EXIT_CODES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    p.set_defaults(run=lambda args: _usage(p))
    b = actions.add_parser(
        "build", help="build (or bring up to date) the firmware image",
        description=describe(
        "Build the firmware image with `make -C firmware` (incremental: only what "
        "changed is rebuilt), showing the current step on a terminal, then print the ELF's "
        "path, file size and footprint (flash = text + data; static RAM = data + bss, the "
        "stack and heap come on top). The image is built in firmware/build/ of a checkout, "
        "else in the per-user cache ($WASMBED_HIL_CACHE, else "
        "~/.cache/wasmbed-hil/<version>/firmware/build); waits if another build holds its "
        ".lock.\n\n"
        "  wasmbed-hil firmware build\n"
        "  wasmbed-hil firmware build --force -o json"),
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--board", default=build.DEFAULT_BOARD, choices=build.boards(),
                   help=f"target board: a bare-metal port, firmware/ports/<board>/board.mk "
                   f"(default: {build.DEFAULT_BOARD})")
    b.add_argument("--force", action="store_true",
                   help="rebuild everything (make -B), also what is up to date")
    b.add_argument("-o", "--output", choices=("table", "json"), default="table",
                   help="output format (default: table); json: {board, elf, fileBytes, "
                   "footprint, mode, compiled, upToDate, seconds} on stdout")
    b.set_defaults(run=run_build)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def toolchain_problem() -> str | None:
    """Why the image cannot be built here (None: it can): the qemu backend's own check, which
    names the Debian packages, and the tools `ensure_image` needs."""
    from ..bench.backends import get_backend

    reason = get_backend("qemu").unavailable_reason()
    if reason:
        return reason
    missing = build.missing_tools()
    if missing:
        return (f"{', '.join(missing)} not installed (Debian: qemu-system-arm "
                "gcc-arm-none-eabi binutils-arm-none-eabi picolibc-arm-none-eabi)")
    return None


def run_make_streamed(force: bool, on_line: Callable[[str], None],
                      timeout: float = MAKE_TIMEOUT, board: str = build.DEFAULT_BOARD,
                      ) -> tuple[int | None, list[str], str]:
    """`build.run_make` for `board` streaming its output to `on_line`; returns make's exit
    status (None if it was killed at `timeout`), its last 40 lines and the command line."""
    proc = build.run_make([f"BOARD={board}", *(["-B"] if force else [])], timeout=timeout,
                          on_line=on_line)
    tail = proc.stdout.splitlines()[-40:]
    return (None if proc.returncode == -9 else proc.returncode), tail, " ".join(proc.args)


def run_build(args: argparse.Namespace) -> int:
    problem = toolchain_problem()
    if problem:
        raise CliError(f"cannot build the firmware: {problem}")
    json_output = args.output == "json"
    out = console()
    err = console(stderr=True)
    compiled = steps = 0
    mode = None
    started = time.monotonic()
    status = (out.status("make -C firmware ...") if out.is_terminal and not json_output
              else None)

    def on_line(line: str) -> None:
        nonlocal compiled, steps, mode
        step = _STEP.match(line)
        if step:
            steps += 1
            compiled += step.group(1) in ("CC", "CXX", "AS")
        found = _MODE.search(line)
        if found:
            mode = found.group(1)
        text = f"{step.group(1)} {step.group(2)}" if step else line.strip()
        if status is not None and text and not _QUIET.match(text):
            status.update(f"building the firmware ({compiled} compiled, "
                          f"{time.monotonic() - started:.0f} s): {escape(text[:100])}")

    try:
        with status or contextlib.nullcontext():
            code, tail, cmd = run_make_streamed(args.force, on_line, board=args.board)
    except OSError as exc:
        raise CliError(f"cannot run make: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        raise CliError("interrupted; the build stopped", 1) from None
    elf = build.image_path(args.board)
    if code != 0 or not elf.is_file():
        reason = (f"killed after {MAKE_TIMEOUT:g} s" if code is None else
                  f"exit {code}" if code else f"no {elf}")
        err.print("\n".join(escape(line) for line in tail), soft_wrap=True)
        raise CliError(f"{cmd} failed ({reason}); its last lines are above", 1)
    seconds = time.monotonic() - started
    try:
        size = build.footprint(elf)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        raise CliError(f"cannot measure {elf}: {exc}") from None
    file_bytes = elf.stat().st_size
    if json_output:
        sys.stdout.write(json.dumps({
            "board": args.board, "elf": str(elf), "fileBytes": file_bytes, "footprint": size,
            "mode": mode, "compiled": compiled, "upToDate": steps == 0,
            "seconds": round(seconds, 2)}, indent=2) + "\n")
        return EXIT_OK
    out.print(f"firmware {escape(args.board)}" + (f" ({escape(mode)} image)" if mode else "")
              + f": {escape(str(elf))}")
    out.print(f"  file {file_bytes / 1024:,.0f} KiB (with debug info); "
              f"flash {size['flash']:,} B (text {size['text']:,} + data {size['data']:,}); "
              f"static RAM {size['ram']:,} B (data {size['data']:,} + bss {size['bss']:,}; "
              "stack and heap on top)")
    out.print(f"  {'built' if steps else 'up to date'} in {seconds:.1f} s"
              + (f" ({compiled} files compiled)" if compiled else ""))
    return EXIT_OK
