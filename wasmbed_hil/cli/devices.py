"""`wasmbed-hil devices`: the Device resources over the REST API (wasmbed_hil/cli/api.py).

    wasmbed-hil devices [-l SELECTOR] [-o table|json|wide]   devices show NAME
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape

from .api import DEVICES, add_api_options, call, connect, quote, renders_answers
from .common import EXIT_OK, add_output_option, command_parser, output_format
from .render import block, format_values, output_console, print_json, styled_phase, table


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = command_parser(
        sub, "devices", help="list the devices (or show one)",
        description="List the Device resources through the REST API: name, phase, "
        "gateway, device id and the applications each holds.\n\n"
        "  wasmbed-hil devices                     all devices, a table\n"
        "  wasmbed-hil devices -l zone=lab -o wide those labelled zone=lab, more columns\n"
        "  wasmbed-hil devices show sensor-0       one device\n")
    p.add_argument("-l", "--selector", metavar="SELECTOR", default=argparse.SUPPRESS,
                   help="Kubernetes label selector, e.g. zone=lab,tier!=test")
    add_output_option(p, ("table", "json", "wide"), "; wide adds labels, emulation, heartbeat "
                      "and the full device id")
    add_api_options(p)
    p.set_defaults(run=run_devices)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    show = command_parser(
        actions, "show", help="one device in detail",
        description="Show one Device: phase, gateway, identity, labels, emulation "
        "and each application on it with its last run. Exit 1 if there is none.")
    show.add_argument("name", help="Device name")
    add_output_option(show, ("table", "json"), "; table is a readable block")
    add_api_options(show)
    show.set_defaults(run=run_device_show)


@renders_answers
def run_devices(args: argparse.Namespace) -> int:
    api = connect(args)
    selector = getattr(args, "selector", None)
    items = call(api, "GET", DEVICES, query={"labelSelector": selector} if selector else None
                 )["items"]
    output = output_format(args)
    if output == "json":
        print_json({"items": items})
        return EXIT_OK
    out = output_console()
    if not items:
        out.print("no devices" + (f" match {escape(selector)}" if selector else ""))
        return EXIT_OK
    wide = output == "wide"
    columns = ["name", "phase", "gateway", "device id", "apps"]
    if wide:
        columns += ["labels", "emulation", "last heartbeat"]
    listing = table(columns)
    for d in sorted(items, key=lambda d: d["name"]):
        device_id = d.get("deviceId") or "-"
        row = [escape(d["name"]), styled_phase(d["phase"]), escape(d.get("gateway") or "-"),
               escape(device_id if wide else device_id[:12]),
               escape(_device_apps(d.get("apps") or []))]
        if wide:
            row += [escape(_labels(d.get("labels") or {})),
                    escape(_emulation(d.get("spec") or {})),
                    escape(d.get("lastHeartbeat") or "-")]
        listing.add_row(*row)
    out.print(listing)
    return EXIT_OK


@renders_answers
def run_device_show(args: argparse.Namespace) -> int:
    api = connect(args)
    device = call(api, "GET", f"{DEVICES}/{quote(args.name)}", what=f"device {args.name!r}")
    if output_format(args) == "json":
        print_json(device)
        return EXIT_OK
    out = output_console()
    spec = device.get("spec") or {}
    out.print(block([
        ("device", f"[bold]{escape(device['name'])}[/]"),
        ("phase", styled_phase(device["phase"])),
        ("gateway", escape(device.get("gateway") or "-")),
        ("device id", escape(device.get("deviceId") or "-")),
        ("labels", escape(_labels(device.get("labels") or {}))),
        ("emulation", escape(_emulation(spec))),
        ("type", escape(" / ".join(str(spec[k]) for k in ("deviceType", "mcuType",
                                                            "architecture") if spec.get(k))
                        or "-")),
        ("last heartbeat", escape(device.get("lastHeartbeat") or "-")),
    ]))
    apps = device.get("apps") or []
    if not apps:
        out.print("no applications")
        return EXIT_OK
    listing = table(("application", "deployment", "runs", "outcome", "values", "error"),
                    title="applications", title_justify="left")
    for a in apps:
        listing.add_row(escape(a.get("application") or a.get("appId", "?")),
                        styled_phase(a.get("deployment", "?")), str(a.get("runs", 0)),
                        styled_phase(a["outcome"]) if a.get("outcome") else "-",
                        escape(format_values(a.get("values"))), escape(a.get("error") or ""))
    out.print(listing)
    return EXIT_OK


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
