"""`wasmbed-hil deploy`: upload a WebAssembly module as an Application over the REST API
(wasmbed_hil/cli/api.py), follow it until every target device reported, print the results.

    wasmbed-hil deploy MODULE --name APP (--device NAME ... | --selector k=v,... | --all)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from .api import (
    APPLICATIONS,
    DEVICES,
    POLL_S,
    Api,
    ApiError,
    add_api_options,
    call,
    cli_error,
    connect,
    quote,
    request_timeout,
)
from .args import non_negative, number, parse_selector, seconds
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_output_option,
    command_parser,
    console,
    output_format,
)
from .render import (
    RETURNED,
    format_targets,
    output_console,
    print_json,
    results_table,
    styled_phase,
)

# The error the controllers give a target row whose Device does not exist
# (controlplane/controllers.py, device_app_statuses).
NO_SUCH_DEVICE = "no such Device"
DELETE_TIMEOUT_S = 30.0  # how long deploy waits for an Application it takes back to go


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = command_parser(
        sub, "deploy", help="deploy a WebAssembly module to devices and show results",
        description="Upload MODULE as an Application (POST /api/v1/applications, "
        "multipart) targeting the given devices, then (--wait, the default) follow "
        "it until every target device has run it and reported how the run ended, "
        "and print the per-device results. A .wat module is compiled first.\n\n"
        "  wasmbed-hil deploy add.wasm --name adder --all --arg 40 --arg 2\n"
        "  wasmbed-hil deploy blink.wat --name blink --selector zone=lab --no-wait\n"
        "  wasmbed-hil deploy app.wasm --name app --device sensor-0 --device sensor-1 "
        "-o json\n\n"
        "A module that keeps running (never returns) reports no result: deploy it "
        "with --no-wait and follow it with `wasmbed-hil apps show APP`.")
    p.add_argument("module", type=Path, metavar="MODULE",
                   help="the module: a .wasm binary or a .wat text file")
    p.add_argument("--name", required=True, metavar="APP",
                   help="Application name (lowercase letters, digits, '-' and '.')")
    targets = p.add_argument_group("targets (exactly one)")
    which = targets.add_mutually_exclusive_group(required=True)
    which.add_argument("--device", action="append", metavar="NAME",
                       help="a target Device by name (repeat for more)")
    which.add_argument("--selector", metavar="k=v,...", type=parse_selector,
                       help="the Devices whose labels match, as for kubectl: k=v, k!=v, "
                       "'k in (a,b)', 'k notin (a,b)', k (has the label), !k (has not); "
                       "comma-separated, all must hold")
    which.add_argument("--all", action="store_true", help="every Device in the namespace")
    run = p.add_argument_group("the run")
    run.add_argument("--entry", default="main", help="exported function to run (default: main)")
    run.add_argument("--arg", action="append", type=number, default=[], metavar="N",
                     help="an argument of the entry, integer or float (repeat, in order)")
    run.add_argument("--fuel", type=non_negative, metavar="N",
                     help="instruction budget of a run (0: unmetered; default: the device's)")
    run.add_argument("--memory", type=non_negative, metavar="BYTES",
                     help="linear memory limit of a run (default: the device's)")
    run.add_argument("--timeout-ms", type=non_negative, metavar="N",
                     help="wall-clock budget of a run in ms (default: the device's)")
    follow = p.add_argument_group("following")
    follow.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                        help="wait for every target's result (default), or only create it")
    follow.add_argument("--timeout", type=seconds, default=60.0, metavar="SECONDS",
                        help="how long --wait waits for results (default: 60)")
    add_output_option(p, ("table", "json"), " (the Application as last seen)")
    add_api_options(p)
    p.set_defaults(run=run_deploy)


def load_module(path: Path) -> bytes:
    """The module's binary: a .wat file compiled with wasmtime, anything else as it is."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CliError(f"module {path} does not exist") from None
    except OSError as exc:
        raise CliError(f"cannot read module {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".wat":
        import wasmtime

        try:
            return bytes(wasmtime.wat2wasm(data.decode("utf-8")))
        except (UnicodeDecodeError, wasmtime.WasmtimeError) as exc:
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            where = next((line.split("<anon>:", 1)[1] for line in lines if "<anon>:" in line),
                         None)  # "--> <anon>:LINE:COLUMN"
            raise CliError(f"cannot compile {path}" + (f":{where}" if where else "")
                           + f": {lines[0]}", EXIT_USAGE) from None
    if data[:4] != b"\0asm":
        raise CliError(f"{path} is not a WebAssembly binary (no \\0asm magic; text modules "
                       "need the .wat suffix)", EXIT_USAGE)
    return data


def run_deploy(args: argparse.Namespace) -> int:
    module = load_module(args.module)
    if args.device:
        targets: dict[str, Any] = {"deviceNames": list(dict.fromkeys(args.device))}
    elif args.selector is not None:
        targets = {"selector": args.selector}
    else:
        targets = {"allDevices": True}
    metadata: dict[str, Any] = {"name": args.name, "targetDevices": targets,
                                "entry": args.entry, "args": args.arg}
    limits = {key: value for key, value in (("fuel", args.fuel), ("memoryBytes", args.memory),
                                            ("timeoutMs", args.timeout_ms)) if value is not None}
    if limits:
        metadata["limits"] = limits
    api = connect(args)
    json_output = output_format(args) == "json"
    out = output_console()
    if args.device:
        _check_devices_exist(api, targets["deviceNames"])
    try:
        app = api.request("POST", APPLICATIONS, multipart=[
            ("metadata", None, "application/json", json.dumps(metadata).encode()),
            ("module", args.module.name, "application/wasm", module),
        ])
    except ApiError as exc:
        if exc.status == 409:
            raise CliError(f"application {args.name!r} already exists (wasmbed-hil apps delete "
                           f"{args.name} --wait, then deploy again)", EXIT_FAILED) from None
        raise cli_error(exc, f"application {args.name!r}") from None
    if not json_output:
        out.print(f"application [bold]{escape(args.name)}[/] created: {len(module)} bytes, "
                  f"digest {escape((app.get('digest') or '?')[:12])}, targets "
                  f"{escape(format_targets(targets))}")
    if not args.wait:
        if json_output:
            print_json(app)
        return EXIT_OK
    app, complete = _follow(api, args.name, args.timeout, out, progress=not json_output)
    missing = _missing_targets(app)
    if missing:
        # A target went away between the check and the creation: what was created cannot
        # complete, so it is taken back rather than left Deploying.
        _delete_quietly(api, args.name)
        raise CliError(f"no such device: {', '.join(missing)}; application {args.name!r} "
                       "was deleted again", EXIT_FAILED)
    if json_output:
        print_json(app)
    else:
        out.print(results_table(app))
    rows = app.get("deviceStatuses") or []
    returned = sum(r.get("outcome") == RETURNED for r in rows)
    if not complete:
        reported = sum(_reported(r) for r in rows)
        _note(out, json_output, f"[red]timed out after {args.timeout:g} s: {reported} of "
              f"{len(rows)} target devices reported[/]" + (
                  "" if rows else " (no device matched the targets)")
              + f"; the application stays deployed (wasmbed-hil apps show {args.name})")
        return EXIT_FAILED
    if returned == len(rows):
        _note(out, json_output, f"[green]{returned} of {len(rows)} devices returned[/]")
        return EXIT_OK
    _note(out, json_output, f"[red]{len(rows) - returned} of {len(rows)} devices failed[/]")
    return EXIT_FAILED


def _check_devices_exist(api: Api, names: list[str]) -> None:
    """CliError (exit 1) naming every target Device that does not exist, before anything is
    created."""
    items = call(api, "GET", DEVICES, what="device list").get("items") or []
    known = {item.get("name") for item in items}
    missing = [name for name in names if name not in known]
    if missing:
        raise CliError(f"no such device: {', '.join(missing)} (nothing was created; "
                       "`wasmbed-hil devices` lists them)", EXIT_FAILED)


def _missing_targets(app: dict[str, Any]) -> list[str]:
    """The target devices the control plane reports as not existing."""
    return [str(r.get("device")) for r in app.get("deviceStatuses") or []
            if r.get("error") == NO_SUCH_DEVICE]


def _delete_quietly(api: Api, name: str, timeout: float = DELETE_TIMEOUT_S) -> None:
    """Delete the Application this command created and wait until it is gone (its
    finalizer lets go once the controllers saw the deletion); a failure to do so is said,
    not raised (the error that led here is the one to report)."""
    path = f"{APPLICATIONS}/{quote(name)}"
    deadline = time.monotonic() + timeout
    try:
        api.request("DELETE", path)
        while True:
            try:
                api.request("GET", path, timeout=request_timeout(deadline))
            except ApiError as exc:
                if exc.status == 404:
                    return
                raise
            if time.monotonic() >= deadline:
                raise CliError(f"still there after {timeout:g} s")
            # The REST API has no watch: ask every POLL_S until it answers 404.
            time.sleep(POLL_S)
    except (ApiError, CliError) as exc:
        console(stderr=True).print(f"[yellow]could not delete application {escape(name)!r}: "
                                   f"{escape(str(exc))}[/]")


def _note(out: Console, json_output: bool, text: str) -> None:
    """A closing line: on stdout with the table, on stderr (uncoloured) with -o json."""
    if json_output:
        console(stderr=True).print(text)
    else:
        out.print(text)


def _reported(row: dict[str, Any]) -> bool:
    """This target is done: it ran the module and said how the run ended, or the deployment
    failed. (A row that is still Deploying may carry the outcome of an older module.)"""
    phase = row.get("phase")
    return phase == "Failed" or (phase in ("Running", "Stopped") and bool(row.get("outcome")))


def _follow(api: Api, name: str, timeout: float, out: Console, *, progress: bool
            ) -> tuple[dict[str, Any], bool]:
    """Poll the Application until every target reported or `timeout`; returns the last view
    and whether it completed."""
    path = f"{APPLICATIONS}/{quote(name)}"
    deadline = time.monotonic() + timeout
    display = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                       MofNCompleteColumn(), TextColumn("devices reported"),
                       TimeElapsedColumn(), console=out, transient=True,
                       disable=not (progress and out.is_terminal))
    with display:
        task = display.add_task(escape(name), total=None)
        try:
            while True:
                app = call(api, "GET", path, what=f"application {name!r}",
                           timeout=request_timeout(deadline))
                rows = app.get("deviceStatuses") or []
                if _missing_targets(app):
                    return app, False
                done = sum(_reported(r) for r in rows)
                display.update(task, total=len(rows) or None, completed=done,
                               description=f"{escape(name)} {styled_phase(app['phase'])}")
                if rows and done == len(rows):
                    return app, True
                if time.monotonic() >= deadline:
                    return app, False
                # The REST API has no watch: a CLI following one resource asks again every
                # POLL_S (~4 requests/s), bounded by the --timeout deadline.
                time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        except KeyboardInterrupt:
            raise CliError(f"interrupted; application {name!r} stays deployed (wasmbed-hil "
                           f"apps show {name})", EXIT_FAILED) from None
