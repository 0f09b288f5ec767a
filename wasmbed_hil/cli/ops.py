"""The operator's commands over the REST API: `devices`, `apps`, `deploy`; and `firmware build`
(wasmbed_hil/cli/firmware.py).

    wasmbed-hil devices [-l SELECTOR] [-o table|json|wide]   devices show NAME
    wasmbed-hil apps [-o table|json]                         apps show NAME | apps delete NAME
    wasmbed-hil deploy MODULE --name APP (--device NAME ... | --selector k=v,... | --all)

They find the REST API through --api/--token-file, --platform or the environment
(wasmbed_hil/cli/api.py). `-o json` prints the API's own JSON on stdout, without colour or
progress; otherwise tables (colour only on a terminal).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
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
from rich.table import Table

from . import firmware
from .api import Api, ApiError, add_api_options, connect, describe
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError, console

DEVICES = "/api/v1/devices"
APPLICATIONS = "/api/v1/applications"
POLL_S = 0.25  # how often `deploy --wait` and `apps delete --wait` ask the REST API
RETURNED = "RETURNED"

EXIT_CODES = """\
exit codes:
  0  done (deploy: every target device ran the module and it returned)
  1  what was checked failed: no such object, a target failed or trapped, the timeout passed
  2  bad usage: options, selector, module, or a request the API refused as invalid
  3  environment: the REST API unreachable or not configured, token refused, file missing
"""

_PHASE_STYLE = {
    "Connected": "green", "Running": "green", RETURNED: "green", "Enrolled": "cyan",
    "Deploying": "cyan", "Installed": "cyan", "Creating": "cyan", "Disconnected": "yellow",
    "PartiallyRunning": "yellow", "Stopped": "yellow", "Unknown": "yellow", "Deleting": "yellow",
    "Unreachable": "red", "Failed": "red",
}


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _add_devices(sub)
    _add_apps(sub)
    _add_deploy(sub)
    firmware.add_parser(sub)


def _parser(sub: Any, name: str, description: str, **kwargs: Any) -> argparse.ArgumentParser:
    return sub.add_parser(name, epilog=EXIT_CODES,
                          description=describe(description),
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def _output_option(parser: argparse.ArgumentParser, choices: tuple[str, ...],
                   extra: str = "") -> None:
    # SUPPRESS: the option may come before or after a sub-action without one overriding the
    # other with its default; the default is applied in `_output`.
    parser.add_argument("-o", "--output", choices=choices, default=argparse.SUPPRESS,
                        help=f"output format: {', '.join(choices)} (default: table); json is "
                        f"the REST API's JSON, for scripts{extra}")


def _output(args: argparse.Namespace) -> str:
    return str(getattr(args, "output", "table"))


# ----------------------------------------------------------------------------- devices


def _add_devices(sub: Any) -> None:
    p = _parser(sub, "devices", help="list the devices (or show one)",
                description="List the Device resources through the REST API: name, phase, "
                "gateway, device id and the applications each holds.\n\n"
                "  wasmbed-hil devices                     all devices, a table\n"
                "  wasmbed-hil devices -l zone=lab -o wide those labelled zone=lab, more columns\n"
                "  wasmbed-hil devices show sensor-0       one device\n")
    p.add_argument("-l", "--selector", metavar="SELECTOR", default=argparse.SUPPRESS,
                   help="Kubernetes label selector, e.g. zone=lab,tier!=test")
    _output_option(p, ("table", "json", "wide"), "; wide adds labels, emulation, heartbeat "
                   "and the full device id")
    add_api_options(p)
    p.set_defaults(run=run_devices)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    show = _parser(actions, "show", help="one device in detail",
                   description="Show one Device: phase, gateway, identity, labels, emulation "
                   "and each application on it with its last run. Exit 1 if there is none.")
    show.add_argument("name", help="Device name")
    _output_option(show, ("table", "json"), "; table is a readable block")
    add_api_options(show)
    show.set_defaults(run=run_device_show)


def run_devices(args: argparse.Namespace) -> int:
    api = connect(args)
    selector = getattr(args, "selector", None)
    items = _call(api, "GET", DEVICES, query={"labelSelector": selector} if selector else None
                  )["items"]
    output = _output(args)
    if output == "json":
        _print_json({"items": items})
        return EXIT_OK
    out = _console()
    if not items:
        out.print("no devices" + (f" match {escape(selector)}" if selector else ""))
        return EXIT_OK
    wide = output == "wide"
    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = ["name", "phase", "gateway", "device id", "apps"]
    if wide:
        columns += ["labels", "emulation", "last heartbeat"]
    for column in columns:
        table.add_column(column.upper(), overflow="fold")
    for d in sorted(items, key=lambda d: d["name"]):
        device_id = d.get("deviceId") or "-"
        row = [escape(d["name"]), _phase(d["phase"]), escape(d.get("gateway") or "-"),
               escape(device_id if wide else device_id[:12]),
               escape(_device_apps(d.get("apps") or []))]
        if wide:
            row += [escape(_labels(d.get("labels") or {})),
                    escape(_emulation(d.get("spec") or {})),
                    escape(d.get("lastHeartbeat") or "-")]
        table.add_row(*row)
    out.print(table)
    return EXIT_OK


def run_device_show(args: argparse.Namespace) -> int:
    api = connect(args)
    device = _call(api, "GET", f"{DEVICES}/{_quote(args.name)}", what=f"device {args.name!r}")
    if _output(args) == "json":
        _print_json(device)
        return EXIT_OK
    out = _console()
    spec = device.get("spec") or {}
    block = _block([
        ("device", f"[bold]{escape(device['name'])}[/]"),
        ("phase", _phase(device["phase"])),
        ("gateway", escape(device.get("gateway") or "-")),
        ("device id", escape(device.get("deviceId") or "-")),
        ("labels", escape(_labels(device.get("labels") or {}))),
        ("emulation", escape(_emulation(spec))),
        ("type", escape(" / ".join(str(spec[k]) for k in ("deviceType", "mcuType",
                                                            "architecture") if spec.get(k))
                        or "-")),
        ("last heartbeat", escape(device.get("lastHeartbeat") or "-")),
    ])
    out.print(block)
    apps = device.get("apps") or []
    if not apps:
        out.print("no applications")
        return EXIT_OK
    table = Table(title="applications", title_justify="left", box=None, pad_edge=False,
                  header_style="bold")
    for column in ("application", "deployment", "runs", "outcome", "values", "error"):
        table.add_column(column.upper(), overflow="fold")
    for a in apps:
        table.add_row(escape(a.get("application") or a.get("appId", "?")),
                      _phase(a.get("deployment", "?")), str(a.get("runs", 0)),
                      _phase(a["outcome"]) if a.get("outcome") else "-",
                      escape(_values(a.get("values"))), escape(a.get("error") or ""))
    out.print(table)
    return EXIT_OK


# ----------------------------------------------------------------------------- apps


def _add_apps(sub: Any) -> None:
    p = _parser(sub, "apps", help="list the applications (show, delete one)",
                description="List the Application resources through the REST API: phase and "
                "how many target devices run it or failed.\n\n"
                "  wasmbed-hil apps                       all applications\n"
                "  wasmbed-hil apps show adder            per-device results of one\n"
                "  wasmbed-hil apps delete adder --wait   delete one, wait until it is gone\n")
    _output_option(p, ("table", "json"))
    add_api_options(p)
    p.set_defaults(run=run_apps)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    show = _parser(actions, "show", help="one application with its per-device results",
                   description="Show one Application: phase, module digest, targets and, per "
                   "target device, the deployment phase and the last run's outcome, values and "
                   "error. Exit 1 if there is none.")
    show.add_argument("name", help="Application name")
    _output_option(show, ("table", "json"))
    add_api_options(show)
    show.set_defaults(run=run_app_show)
    delete = _parser(actions, "delete", help="delete one application",
                     description="Delete an Application: its devices stop and remove the "
                     "module, then the resource goes. Exit 1 if there is none or, with "
                     "--wait, if it is still there at the timeout.")
    delete.add_argument("name", help="Application name")
    delete.add_argument("--wait", action="store_true",
                        help="wait until the resource is gone (the devices let go of it)")
    delete.add_argument("--timeout", type=_seconds, default=60.0, metavar="SECONDS",
                        help="how long --wait waits (default: 60)")
    add_api_options(delete)
    delete.set_defaults(run=run_app_delete)


def run_apps(args: argparse.Namespace) -> int:
    api = connect(args)
    items = _call(api, "GET", APPLICATIONS)["items"]
    if _output(args) == "json":
        _print_json({"items": items})
        return EXIT_OK
    out = _console()
    if not items:
        out.print("no applications")
        return EXIT_OK
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("name", "phase", "running", "failed", "targets", "digest", "created"):
        table.add_column(column.upper(), overflow="fold")
    for a in sorted(items, key=lambda a: a["name"]):
        stats = a.get("statistics") or {}
        table.add_row(escape(a["name"]), _phase(a["phase"]), str(stats.get("running", 0)),
                      str(stats.get("failed", 0)), str(stats.get("targets", 0)),
                      escape((a.get("digest") or "-")[:12]), escape(a.get("createdAt") or "-"))
    out.print(table)
    return EXIT_OK


def run_app_show(args: argparse.Namespace) -> int:
    api = connect(args)
    app = _call(api, "GET", f"{APPLICATIONS}/{_quote(args.name)}",
                what=f"application {args.name!r}")
    if _output(args) == "json":
        _print_json(app)
        return EXIT_OK
    out = _console()
    stats = app.get("statistics") or {}
    out.print(_block([
        ("application", f"[bold]{escape(app['name'])}[/]"),
        ("phase", _phase(app["phase"])),
        ("targets", escape(_targets(app.get("targetDevices") or {}))),
        ("devices", escape(", ".join(f"{k} {stats.get(k, 0)}" for k in (
            "targets", "deployed", "running", "failed", "stopped")))),
        ("digest", escape(app.get("digest") or "-")),
        ("created", escape(app.get("createdAt") or "-")),
    ]))
    out.print(_results_table(app))
    return EXIT_OK


def run_app_delete(args: argparse.Namespace) -> int:
    api = connect(args)
    path = f"{APPLICATIONS}/{_quote(args.name)}"
    what = f"application {args.name!r}"
    answer = _call(api, "DELETE", path, what=what)
    out = _console()
    pending = answer.get("pendingFinalizers") or []
    if not pending:
        out.print(f"{escape(what)} deleted")
        return EXIT_OK
    if not args.wait:
        out.print(f"{escape(what)} is being deleted (its devices let go of it first; "
                  "--wait waits for that)")
        return EXIT_OK
    deadline = time.monotonic() + args.timeout
    with _spinner(out, f"deleting {what}..."):
        # The REST API has no watch: ask every POLL_S until it answers 404, up to --timeout.
        while True:
            try:
                api.request("GET", path, timeout=_request_timeout(deadline))
            except ApiError as exc:
                if exc.status == 404:
                    break
                raise _cli_error(exc, what) from None
            if time.monotonic() >= deadline:
                raise CliError(f"{what} is still there after {args.timeout:g} s "
                               f"(wasmbed-hil apps show {args.name})", EXIT_FAILED)
            time.sleep(POLL_S)
    out.print(f"{escape(what)} deleted")
    return EXIT_OK


# ----------------------------------------------------------------------------- deploy


def _add_deploy(sub: Any) -> None:
    p = _parser(sub, "deploy", help="deploy a WebAssembly module to devices and show results",
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
    run.add_argument("--arg", action="append", type=_number, default=[], metavar="N",
                     help="an argument of the entry, integer or float (repeat, in order)")
    run.add_argument("--fuel", type=_non_negative, metavar="N",
                     help="instruction budget of a run (0: unmetered; default: the device's)")
    run.add_argument("--memory", type=_non_negative, metavar="BYTES",
                     help="linear memory limit of a run (default: the device's)")
    run.add_argument("--timeout-ms", type=_non_negative, metavar="N",
                     help="wall-clock budget of a run in ms (default: the device's)")
    follow = p.add_argument_group("following")
    follow.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                        help="wait for every target's result (default), or only create it")
    follow.add_argument("--timeout", type=_seconds, default=60.0, metavar="SECONDS",
                        help="how long --wait waits for results (default: 60)")
    _output_option(p, ("table", "json"), " (the Application as last seen)")
    add_api_options(p)
    p.set_defaults(run=run_deploy)


_SET_TERM = re.compile(r"^(\S+)\s+(in|notin)\s+\((.*)\)$")


def _terms(text: str) -> list[str]:
    """Split a selector at the commas outside parentheses."""
    terms, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    return [*terms, current.strip()]


def parse_selector(text: str) -> dict[str, Any]:
    """A label selector in kubectl's syntax as {matchLabels, matchExpressions}: `k=v` (also
    `k==v`), `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k` (does not exist)."""
    labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for term in _terms(text):
        if not term:
            raise argparse.ArgumentTypeError(f"empty term in selector {text!r}")
        found = _SET_TERM.match(term)
        if found:
            values = [v.strip() for v in found.group(3).split(",") if v.strip()]
            if not values:
                raise argparse.ArgumentTypeError(f"no values in {term!r}")
            expressions.append({"key": found.group(1),
                                "operator": "In" if found.group(2) == "in" else "NotIn",
                                "values": values})
        elif "!=" in term:
            key, _, value = term.partition("!=")
            expressions.append({"key": key.strip(), "operator": "NotIn",
                                "values": [value.strip()]})
        elif "=" in term:
            key, _, value = term.partition("==" if "==" in term else "=")
            labels[key.strip()] = value.strip()
        elif term.startswith("!"):
            expressions.append({"key": term[1:].strip(), "operator": "DoesNotExist"})
        elif re.fullmatch(r"[^\s()]+", term):
            expressions.append({"key": term, "operator": "Exists"})
        else:
            raise argparse.ArgumentTypeError(f"cannot parse {term!r} in selector {text!r}")
    if any(not key for key in labels) or any(not e["key"] for e in expressions):
        raise argparse.ArgumentTypeError(f"a term of selector {text!r} has no label key")
    selector: dict[str, Any] = {}
    if labels:
        selector["matchLabels"] = labels
    if expressions:
        selector["matchExpressions"] = expressions
    return selector


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


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
    json_output = _output(args) == "json"
    out = _console()
    try:
        app = api.request("POST", APPLICATIONS, multipart=[
            ("metadata", None, "application/json", json.dumps(metadata).encode()),
            ("module", args.module.name, "application/wasm", module),
        ])
    except ApiError as exc:
        if exc.status == 409:
            raise CliError(f"application {args.name!r} already exists (wasmbed-hil apps delete "
                           f"{args.name} --wait, then deploy again)", EXIT_FAILED) from None
        raise _cli_error(exc, f"application {args.name!r}") from None
    if not json_output:
        out.print(f"application [bold]{escape(args.name)}[/] created: {len(module)} bytes, "
                  f"digest {escape((app.get('digest') or '?')[:12])}, targets "
                  f"{escape(_targets(targets))}")
    if not args.wait:
        if json_output:
            _print_json(app)
        return EXIT_OK
    app, complete = _follow(api, args.name, args.timeout, out, progress=not json_output)
    if json_output:
        _print_json(app)
    else:
        out.print(_results_table(app))
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
    path = f"{APPLICATIONS}/{_quote(name)}"
    deadline = time.monotonic() + timeout
    display = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                       MofNCompleteColumn(), TextColumn("devices reported"),
                       TimeElapsedColumn(), console=out, transient=True,
                       disable=not (progress and out.is_terminal))
    with display:
        task = display.add_task(escape(name), total=None)
        try:
            while True:
                app = _call(api, "GET", path, what=f"application {name!r}",
                            timeout=_request_timeout(deadline))
                rows = app.get("deviceStatuses") or []
                done = sum(_reported(r) for r in rows)
                display.update(task, total=len(rows) or None, completed=done,
                               description=f"{escape(name)} {_phase(app['phase'])}")
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


def _request_timeout(deadline: float) -> float:
    return max(5.0, min(30.0, deadline - time.monotonic() + 5.0))


# ----------------------------------------------------------------------------- helpers


def _call(api: Api, method: str, path: str, *, what: str | None = None,
          query: dict[str, str] | None = None, timeout: float = 30.0) -> Any:
    try:
        return api.request(method, path, query=query, timeout=timeout)
    except ApiError as exc:
        raise _cli_error(exc, what) from None


def _cli_error(exc: ApiError, what: str | None = None) -> CliError:
    if exc.status == 404 and what:
        return CliError(f"no {what}", EXIT_FAILED)
    where = f" ({exc.field})" if exc.field else ""
    return CliError(f"{exc.message}{where} [{exc.status} {exc.reason}]", exc.exit_code)


def _quote(name: str) -> str:
    import urllib.parse

    return urllib.parse.quote(name, safe="")


def _console() -> Console:
    out = console()
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 200  # piped: a table row stays one line, for grep and awk
    return out


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def _phase(phase: str) -> str:
    colour = _PHASE_STYLE.get(phase)
    if colour is None and phase not in ("Pending", "?"):
        colour = "red" if phase.isupper() else None  # TRAPPED, OUT_OF_FUEL, ...
    return f"[{colour}]{escape(phase)}[/]" if colour else escape(phase)


def _values(values: Any) -> str:
    if not values:
        return "-"
    return ", ".join(json.dumps(v) for v in values)


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def _emulation(spec: dict[str, Any]) -> str:
    emulation = spec.get("emulation") or {}
    if not emulation:
        return "-"
    return str(emulation.get("backend", "?")) + (
        f" ({emulation['board']})" if emulation.get("board") else "")


def _device_apps(apps: list[dict[str, Any]]) -> str:
    return ", ".join(f"{a.get('application') or a.get('appId', '?')}:"
                     f"{a.get('deployment', '?')}" for a in apps) or "-"


def _targets(targets: dict[str, Any]) -> str:
    if targets.get("deviceNames"):
        return "devices " + ", ".join(targets["deviceNames"])
    if targets.get("allDevices"):
        return "all devices"
    selector = targets.get("selector") or {}
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for e in selector.get("matchExpressions") or []:
        op, key, values = e.get("operator"), e.get("key"), e.get("values") or []
        terms.append({"Exists": key, "DoesNotExist": f"!{key}"}.get(
            op, f"{key} {str(op).lower()} ({','.join(values)})"))
    return "devices matching " + (",".join(terms) or "everything")


def _block(rows: list[tuple[str, str]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def _results_table(app: dict[str, Any]) -> Table | str:
    rows = app.get("deviceStatuses") or []
    if not rows:
        return "no target devices"
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("device", "phase", "outcome", "values", "error"):
        table.add_column(column.upper(), overflow="fold")
    for r in rows:
        table.add_row(escape(r.get("device", "?")), _phase(r.get("phase", "?")),
                      _phase(r["outcome"]) if r.get("outcome") else "-",
                      escape(_values(r.get("values"))), escape(r.get("error") or ""))
    return table


def _spinner(out: Console, text: str) -> Any:
    """A spinner on a terminal; nothing otherwise."""
    import contextlib

    return out.status(escape(text)) if out.is_terminal else contextlib.nullcontext()
