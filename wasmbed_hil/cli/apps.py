"""`wasmbed-hil apps`: the Application resources over the REST API (wasmbed_hil/cli/api.py).

    wasmbed-hil apps [-o table|json]     apps show NAME | apps delete NAME [--wait]
"""

from __future__ import annotations

import argparse
import time

from rich.markup import escape

from .api import (
    APPLICATIONS,
    POLL_S,
    ApiError,
    add_api_options,
    call,
    cli_error,
    connect,
    quote,
    renders_answers,
    request_timeout,
)
from .args import seconds
from .common import EXIT_FAILED, EXIT_OK, CliError, add_output_option, command_parser, output_format
from .render import (
    block,
    format_targets,
    output_console,
    print_json,
    results_table,
    spinner,
    styled_phase,
    table,
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = command_parser(
        sub, "apps", help="list the applications (show, delete one)",
        description="List the Application resources through the REST API: phase and "
        "how many target devices run it or failed.\n\n"
        "  wasmbed-hil apps                       all applications\n"
        "  wasmbed-hil apps show adder            per-device results of one\n"
        "  wasmbed-hil apps delete adder --wait   delete one, wait until it is gone\n")
    add_output_option(p, ("table", "json"))
    add_api_options(p)
    p.set_defaults(run=run_apps)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    show = command_parser(
        actions, "show", help="one application with its per-device results",
        description="Show one Application: phase, module digest, targets and, per "
        "target device, the deployment phase and the last run's outcome, values and "
        "error. Exit 1 if there is none.")
    show.add_argument("name", help="Application name")
    add_output_option(show, ("table", "json"))
    add_api_options(show)
    show.set_defaults(run=run_app_show)
    delete = command_parser(
        actions, "delete", help="delete one application",
        description="Delete an Application: its devices stop and remove the "
        "module, then the resource goes. Exit 1 if there is none or, with "
        "--wait, if it is still there at the timeout.")
    delete.add_argument("name", help="Application name")
    delete.add_argument("--wait", action="store_true",
                        help="wait until the resource is gone (the devices let go of it)")
    delete.add_argument("--timeout", type=seconds, default=60.0, metavar="SECONDS",
                        help="how long --wait waits (default: 60)")
    add_api_options(delete)
    delete.set_defaults(run=run_app_delete)


@renders_answers
def run_apps(args: argparse.Namespace) -> int:
    api = connect(args)
    items = call(api, "GET", APPLICATIONS)["items"]
    if output_format(args) == "json":
        print_json({"items": items})
        return EXIT_OK
    out = output_console()
    if not items:
        out.print("no applications")
        return EXIT_OK
    listing = table(("name", "phase", "running", "failed", "targets", "digest", "created"))
    for a in sorted(items, key=lambda a: a["name"]):
        stats = a.get("statistics") or {}
        listing.add_row(escape(a["name"]), styled_phase(a["phase"]),
                        str(stats.get("running", 0)), str(stats.get("failed", 0)),
                        str(stats.get("targets", 0)), escape((a.get("digest") or "-")[:12]),
                        escape(a.get("createdAt") or "-"))
    out.print(listing)
    return EXIT_OK


@renders_answers
def run_app_show(args: argparse.Namespace) -> int:
    api = connect(args)
    app = call(api, "GET", f"{APPLICATIONS}/{quote(args.name)}",
               what=f"application {args.name!r}")
    if output_format(args) == "json":
        print_json(app)
        return EXIT_OK
    out = output_console()
    stats = app.get("statistics") or {}
    out.print(block([
        ("application", f"[bold]{escape(app['name'])}[/]"),
        ("phase", styled_phase(app["phase"])),
        ("targets", escape(format_targets(app.get("targetDevices") or {}))),
        ("devices", escape(", ".join(f"{k} {stats.get(k, 0)}" for k in (
            "targets", "deployed", "running", "failed", "stopped")))),
        ("digest", escape(app.get("digest") or "-")),
        ("created", escape(app.get("createdAt") or "-")),
    ]))
    out.print(results_table(app))
    return EXIT_OK


def run_app_delete(args: argparse.Namespace) -> int:
    api = connect(args)
    path = f"{APPLICATIONS}/{quote(args.name)}"
    what = f"application {args.name!r}"
    answer = call(api, "DELETE", path, what=what)
    out = output_console()
    pending = answer.get("pendingFinalizers") or []
    if not pending:
        out.print(f"{escape(what)} deleted")
        return EXIT_OK
    if not args.wait:
        out.print(f"{escape(what)} is being deleted (its devices let go of it first; "
                  "--wait waits for that)")
        return EXIT_OK
    deadline = time.monotonic() + args.timeout
    with spinner(out, f"deleting {what}..."):
        # The REST API has no watch: ask every POLL_S until it answers 404, up to --timeout.
        while True:
            try:
                api.request("GET", path, timeout=request_timeout(deadline))
            except ApiError as exc:
                if exc.status == 404:
                    break
                raise cli_error(exc, what) from None
            if time.monotonic() >= deadline:
                raise CliError(f"{what} is still there after {args.timeout:g} s "
                               f"(wasmbed-hil apps show {args.name})", EXIT_FAILED)
            time.sleep(POLL_S)
    out.print(f"{escape(what)} deleted")
    return EXIT_OK
