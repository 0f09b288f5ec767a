"""`wasmbed-hil`: the operator's entry point.

    up           the whole platform on this machine with N emulated devices
    apiserver    an emulated Kubernetes API server
    controllers  the kopf controllers (as deployed in a cluster)
    gateway      one gateway with its control-plane agent (as deployed)
    rest         the REST API (as deployed)
    devices      list the devices, or show one (over the REST API)
    apps         list the applications, show or delete one (over the REST API)
    deploy       deploy a WebAssembly module to devices and show their results
    firmware     build the device firmware image (`firmware build`)
    report       compare a test run with a baseline: HTML and Markdown regression reports

The REST commands find the API through --api/--token-file, --platform DIR (the --workdir of
a running `up`) or $WASMBED_API/$WASMBED_TOKEN_FILE/$WASMBED_PLATFORM. See docs/cli.md.

Exit codes: 0 success, 1 the command ran but what it checked failed, 2 bad usage,
3 something it needs is missing (backend, port, API server). Colour only on a terminal.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .. import resources
from . import apps, deploy, devices, firmware, logs, report, services, up
from .common import EXIT_ENVIRONMENT, EXIT_USAGE, CliError, fail


def version_text() -> str:
    """``wasmbed-hil 0.1.0``, plus ``(checkout <commit>)`` when run from a checkout."""
    commit = resources.checkout_commit()
    text = f"wasmbed-hil {resources.package_version()}"
    return f"{text} (checkout {commit})" if commit else text


class _Version(argparse.Action):
    """--version, computed only when asked (from a checkout it runs git)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(version_text())
        parser.exit()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wasmbed-hil",
        description="Hardware-in-the-loop harness and local platform for Wasmbed: emulated "
        "device fleets, gateways and a Kubernetes control plane.",
    )
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more log output (-vv for debug)")
    p.add_argument("--log-level", choices=sorted(logs.LEVELS, key=logs.LEVELS.__getitem__),
                   help="log level (default: warning; overrides -v)")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="log lines as text (default) or one JSON object each")
    p.add_argument("--version", action=_Version, nargs=0,
                   help="print the package version (and the commit, from a checkout) and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    up.add_parser(sub)
    services.add_parsers(sub)
    devices.add_parser(sub)
    apps.add_parser(sub)
    deploy.add_parser(sub)
    firmware.add_parser(sub)
    report.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if not getattr(args, "run", None):
        p.print_help(sys.stderr)
        return EXIT_USAGE
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    if args.log_level is not None:
        level = logs.LEVELS[args.log_level]
    logs.configure(level, args.log_format)
    if level > logging.DEBUG:
        logging.getLogger("kopf").setLevel(max(level, logging.WARNING))
    try:
        return int(args.run(args))
    except CliError as exc:
        return fail(str(exc), exc.code)
    except ModuleNotFoundError as exc:
        if not exc.name or exc.name.startswith("wasmbed_hil"):
            raise
        # The services and REST commands run with the [controlplane] extra alone (as in the
        # container image); the bench's commands need the bench's packages too.
        return fail(f"wasmbed-hil {args.command} needs {exc.name}, which is not installed: "
                    "pip install 'wasmbed-hil[bench]'", EXIT_ENVIRONMENT)


if __name__ == "__main__":
    sys.exit(main())
