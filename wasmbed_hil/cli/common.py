"""What every `wasmbed-hil` subcommand shares: exit codes, the Kubernetes connection
options, the console (colour only on a terminal), running until a signal; and the parser
helpers of the REST commands (`devices`, `apps`, `deploy`): help text, exit-code epilog and
the -o/--output option."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from ..kube.client import KubeConfig

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and what it checked did not hold
EXIT_USAGE = 2  # bad arguments (argparse's own code)
EXIT_ENVIRONMENT = 3  # something needed is missing: a backend, a port, the API server

EXIT_CODES = """\
exit codes:
  0  done (deploy: every target device ran the module and it returned)
  1  what was checked failed: no such object, a target failed or trapped, the timeout passed
  2  bad usage: options, selector, module, or a request the API refused as invalid
  3  environment: the REST API unreachable or not configured, token refused, file missing
"""  # the epilog of the REST commands' --help


class CliError(Exception):
    """A failure to report in one line, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_ENVIRONMENT) -> None:
        super().__init__(message)
        self.code = code


def check_token(token: str, where: str) -> str:
    """`token` if it can travel in `Authorization: Bearer`, else CliError (exit 3) saying what
    is wrong, never quoting it. A line break in the header is refused by the HTTP client (its
    message quoting the token); a non-ASCII character is not the same bytes on both sides
    (the client sends Latin-1, the server compares UTF-8): every request got 401, or,
    outside Latin-1, the client crashed."""
    for index, char in enumerate(token):
        if not (" " <= char <= "~" or char == "\t"):
            what = ("a line break" if char in "\r\n" else
                    f"the character U+{ord(char):04X}")
            raise CliError(f"{where}: the token must be one line of printable ASCII "
                           f"characters; character {index + 1} is {what}")
    return token


def read_token_file(path: Path, option: str) -> str:
    """The bearer token held in `path` (surrounding white space stripped), else CliError
    (exit 3) naming `option` and the file, never the token: unreadable, not UTF-8, empty, or
    not one line of printable ASCII (check_token)."""
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise CliError(f"{option}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"{option} {path}: not UTF-8 text (byte {exc.start})") from None
    if not token:
        raise CliError(f"{option} {path} is empty")
    return check_token(token, f"{option} {path}")


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def add_kube_options(parser: argparse.ArgumentParser, *, namespace: str = "wasmbed") -> None:
    group = parser.add_argument_group("Kubernetes API")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--kubeconfig", type=Path,
                       help="kubeconfig of the API server (default: $KUBECONFIG or "
                       "~/.kube/config)")
    where.add_argument("--in-cluster", action="store_true",
                       help="use the pod's service account")
    group.add_argument("--context", help="kubeconfig context (default: the current one)")
    group.add_argument("--namespace", default=namespace,
                       help=f"namespace of the resources (default: {namespace})")


def kube_config(args: argparse.Namespace) -> KubeConfig:
    import os

    try:
        if args.in_cluster:
            config = KubeConfig.in_cluster()
        else:
            path = args.kubeconfig or Path(
                os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config")))
            config = KubeConfig.from_kubeconfig(path, args.context)
    except (ValueError, OSError) as exc:
        raise CliError(f"cannot reach the API server: {exc}") from None
    from dataclasses import replace

    return replace(config, namespace=args.namespace)


async def until_signal(started: Callable[[], Awaitable[None]] | None = None) -> None:
    """Wait for SIGINT or SIGTERM (after calling `started`)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    if started is not None:
        await started()
    await stop.wait()


def announce(line: str) -> None:
    """A machine-readable line on stdout (scripts and tests read these), flushed at once."""
    print(line, flush=True)


def fail(message: str, code: int) -> int:
    from rich.markup import escape

    console(stderr=True).print(f"[bold red]error:[/] {escape(message)}")
    sys.stderr.flush()
    return code


# ----------------------------------------------------------------------------- parsers


def describe(text: str, width: int = 88) -> str:
    """Help text for RawDescriptionHelpFormatter: paragraphs wrapped, indented lines (the
    examples) kept as they are."""
    return "\n\n".join(
        block if block.startswith(" ") else textwrap.fill(" ".join(block.split()), width)
        for block in text.strip("\n").split("\n\n"))


def command_parser(sub: Any, name: str, description: str, **kwargs: Any
                   ) -> argparse.ArgumentParser:
    """A REST command's (or sub-action's) parser: `description` as `describe` lays it out,
    EXIT_CODES as the epilog."""
    return sub.add_parser(name, epilog=EXIT_CODES,
                          description=describe(description),
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def add_output_option(parser: argparse.ArgumentParser, choices: tuple[str, ...],
                      extra: str = "") -> None:
    # SUPPRESS: the option may come before or after a sub-action without one overriding the
    # other with its default; the default is applied in `output_format`.
    parser.add_argument("-o", "--output", choices=choices, default=argparse.SUPPRESS,
                        help=f"output format: {', '.join(choices)} (default: table); json is "
                        f"the REST API's JSON, for scripts{extra}")


def output_format(args: argparse.Namespace) -> str:
    return str(getattr(args, "output", "table"))
