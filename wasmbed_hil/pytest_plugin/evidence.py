"""Evidence in every scenario's report, and infrastructure failures told from product ones.

For each test that uses the harness, the fixtures register what they start (gateways,
devices, the control plane). When the test's call ends, or its set-up fails, this module
attaches to its Allure result:
- each device's console log (UART0 of an emulated board; the virtual device's log),
- the decoded protocol trace per device (time, direction, message id, type, fields),
- the gateway's event log,
- with the control plane, the resources' timeline and the Kubernetes events,
- one `timeline` merging the consoles, protocol traces, gateway events and resource changes
  on one clock (bench.timeline), for every scenario,
and labels for provenance: backend, board, firmware image digest, the digests of the modules
deployed and the runtime limits used. On a firmware backend each scenario also gets the
`firmware image` attachment (path, board, size, full sha256, linker map), and with
`--hil-attach-image` the ELF and its map file themselves, once per session (per xdist
worker: in the first scenario that worker runs). Failures are classified: an InfrastructureError (an
emulator that did not start, a firmware build that failed), a port that could not be bound,
or a backend that vanished is `infrastructure`, and so is any failure of a test one of whose
machines died on its own (an emulator crash: bench.errors.MachineDied, its exit status and
last console lines attached); anything else is `product`. A gateway-side wait that timed out
(gateway.events.WaitTimeout) gets each device's console tail appended to its message and
attached. The class goes
into the Allure label `failure_category`, the JUnit property of the same name and the
`categories.json` that Allure reads. `--hil-infra-retries N` re-runs a test up to N times
when, and only when, it failed for an infrastructure reason: it marks each scenario
`flaky(reruns=N, condition=is_infrastructure)` for pytest-rerunfailures, which does the
re-running. Each attempt is its own Allure result (the same historyId, so Allure shows the
earlier ones as retries); an attempt after infrastructure failures carries the label
`infra_retries` (how many came before) and their tracebacks as an attachment.
"""

from __future__ import annotations

import contextlib
import errno
import json
import platform as host_platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .. import resources
from ..bench.errors import InfrastructureError, MachineDied
from ..bench.timeline import timeline_text
from ..gateway.events import WaitTimeout

INFRASTRUCTURE = "infrastructure"
PRODUCT = "product"
MAX_ATTACHMENT = 2 * 1024 * 1024
HIL_FIXTURES = frozenset({"gateway", "device", "fleet", "device_factory", "control_plane"})

try:
    import allure
    from allure_commons.types import AttachmentType
except ImportError:  # pragma: no cover - allure-pytest is a dependency
    allure = None  # type: ignore[assignment]


@dataclass
class Evidence:
    gateways: list[Any] = field(default_factory=list)
    devices: list[Any] = field(default_factory=list)
    platforms: list[Any] = field(default_factory=list)
    attached: bool = False


EVIDENCE = pytest.StashKey[Evidence]()
IMAGE_ATTACHED = pytest.StashKey[bool]()  # on the config: the ELF went into a report
EARLIER = pytest.StashKey[list[str]]()  # failures of earlier attempts (infrastructure)
CATEGORY = pytest.StashKey[list[str]]()  # the failure categories of the current attempt


def evidence(node: pytest.Item | Any) -> Evidence:
    """The evidence collector of the test that `node` (an item or a request) belongs to."""
    item = getattr(node, "node", node)
    store = item.stash
    if EVIDENCE not in store:
        store[EVIDENCE] = Evidence()
    return store[EVIDENCE]


def add_options(group: Any) -> None:
    group.addoption(
        "--hil-attach-image", action="store_true", default=False,
        help="attach the firmware ELF and its linker map to the report, once per session "
        "(per xdist worker), on firmware backends (qemu, renode, board); every scenario carries "
        "the image's path, board and full sha256 anyway",
    )


def uses_hil(item: pytest.Item) -> bool:
    return bool(HIL_FIXTURES & set(getattr(item, "fixturenames", ())))


def devices_of(ev: Evidence) -> list[Any]:
    """The device handles of a test: those it made and its control planes' machines."""
    devices = list(ev.devices)
    for plat in ev.platforms:
        devices.extend(m.handle for m in list(plat.manager.machines.values()))
    return devices


def deaths(devices: list[Any]) -> list[MachineDied]:
    """The machines among `devices` that died on their own (bench.errors.MachineDied)."""
    found = []
    for device in devices:
        died = getattr(device, "died", None)
        if isinstance(died, MachineDied) and died not in found:
            found.append(died)
    return found


def raise_unreported_deaths(devices: list[Any]) -> None:
    """At a test's teardown: a machine that died without any wait having raised it makes
    the teardown fail with its MachineDied (an infrastructure failure), so a death is never
    silent."""
    unreported = [d for d in deaths(devices) if not d.reported]
    for died in unreported:
        died.reported = True
    if len(unreported) > 1:
        others = "\n\n".join(str(d) for d in unreported[1:])
        unreported[0].args = (f"{unreported[0]}\n\nand also:\n{others}",)
    if unreported:
        raise unreported[0]


def console_tails(devices: list[Any], lines: int = 15) -> str:
    """Each device's console tail, headed by its name ("" when there is no device)."""
    parts = []
    for device in devices:
        try:
            tail = device.console_tail(lines)
        except Exception as exc:  # evidence must never hide the test's own outcome
            tail = f"(not available: {exc!r})"
        parts.append(f"--- console of {device.name} (last {lines} lines) ---\n{tail}")
    return "\n".join(parts)


def add_failure_evidence(item: pytest.Item, exc: BaseException) -> None:
    """Before the report is made from it: a gateway-side wait that timed out gets the
    devices' console tails in its message (and as an attachment); a test whose machine died
    gets the death's message. Each is added once."""
    ev = item.stash.get(EVIDENCE, None)
    if ev is None or getattr(exc, "_wasmbed_evidence", False):
        return
    devices = devices_of(ev)
    extra = []
    if isinstance(exc, WaitTimeout) and "console tail:" not in str(exc) and devices:
        tails = console_tails(devices)
        _attach("device consoles at the failed wait", tails)
        extra.append(tails)
    for died in deaths(devices):
        died.reported = True
        _attach(f"machine died: {died.name}", str(died))
        if died is not exc:
            extra.append(str(died))
    if extra and exc.args and isinstance(exc.args[0], str):
        exc.args = ("\n".join([exc.args[0], *extra]), *exc.args[1:])
    with contextlib.suppress(AttributeError):  # an exception type without a __dict__
        exc._wasmbed_evidence = True  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- classification


def classify(exc: BaseException | None) -> str:
    """`infrastructure` when the bench failed, `product` otherwise."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, InfrastructureError):
            return INFRASTRUCTURE
        if isinstance(exc, OSError) and exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL,
                                                      errno.EMFILE, errno.ENOSPC):
            return INFRASTRUCTURE
        exc = exc.__cause__ or exc.__context__
    return PRODUCT


def is_infrastructure(error: BaseException | None) -> bool:
    """pytest-rerunfailures' condition: re-run only a failure of the bench."""
    return classify(error) == INFRASTRUCTURE


def mark_infra_retries(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`--hil-infra-retries N`: every scenario using the harness (and not marked `flaky`
    itself) is re-run by pytest-rerunfailures up to N times, for infrastructure failures
    only."""
    retries = int(config.getoption("--hil-infra-retries"))
    if retries < 0:
        raise pytest.UsageError(f"--hil-infra-retries={retries}: must be >= 0")
    if retries == 0:
        return
    if not config.pluginmanager.hasplugin("rerunfailures"):
        raise pytest.UsageError("--hil-infra-retries needs pytest-rerunfailures (pip install "
                                "'wasmbed-hil[bench]'), which is not installed or disabled")
    for item in items:
        if uses_hil(item) and item.get_closest_marker("flaky") is None:
            item.add_marker(pytest.mark.flaky(reruns=retries, condition=is_infrastructure))


# ----------------------------------------------------------------------------- formatting


def _clip(text: str) -> str:
    data = text.encode()
    if len(data) <= MAX_ATTACHMENT:
        return text
    return "[... first part cut ...]\n" + data[-MAX_ATTACHMENT:].decode(errors="replace")


def format_trace(entries: list[Any]) -> str:
    """A protocol trace as text: time since the first message, direction, id, type, fields."""
    if not entries:
        return "(no messages)"
    start = entries[0][0]
    lines = []
    for at, direction, message_id, kind, fields in entries:
        arrow = {"out": "gw -> dev", "in": "dev -> gw"}.get(direction, "FAULT    ")
        body = json.dumps(fields, default=str, sort_keys=True)
        lines.append(f"+{at - start:9.3f}s  {arrow}  #{message_id:<5} {kind:<18} {body}")
    return "\n".join(lines)


def _stamp(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


def _attach(name: str, text: str, kind: Any = None) -> None:
    if allure is None:
        return
    allure.attach(_clip(text), name=name,
                  attachment_type=kind or AttachmentType.TEXT)


def _label(name: str, value: str) -> None:
    if allure is not None:
        allure.dynamic.label(name, value)


def attach_text(name: str, text: str) -> None:
    """Attach `text` to the running test's Allure result."""
    _attach(name, text)


def attach_convergence(exc: Any) -> None:
    """A failed convergence check (bench.convergence.NotConverged): its disagreements and
    what each source showed, one attachment each."""
    _attach("convergence: disagreements",
            "\n".join(d.describe() for d in exc.disagreements) or "(none)")
    for name, text in exc.evidence.items():
        _attach(name, text)


def label_faults(item: pytest.Item) -> None:
    """Label a scenario with the faults it injects (@pytest.mark.hil_fault("name")): the
    Allure label `fault` and the JUnit property of the same name (before its set-up, so a
    scenario skipped there carries it too)."""
    for mark in item.iter_markers("hil_fault"):
        if not mark.args:
            raise pytest.UsageError(f"{item.nodeid}: hil_fault needs the fault's name")
        _label("fault", str(mark.args[0]))
        item.user_properties.append(("fault", str(mark.args[0])))


# ----------------------------------------------------------------------------- collection


def _device_names(gateway: Any) -> dict[str, str]:
    try:
        return {st.device_id: st.name for st in gateway.devices()}
    except Exception:  # a stopped gateway has no devices to list
        return {}


def attach_evidence(item: pytest.Item) -> None:
    ev = item.stash.get(EVIDENCE, None)
    if ev is None or ev.attached:
        return
    ev.attached = True
    gateways = list(ev.gateways)
    devices = devices_of(ev)
    for plat in ev.platforms:
        gateways.extend(plat.gateways.values())
    for device in devices:
        try:
            _attach(f"console {device.name}", "\n".join(device.console) or "(empty)")
        except Exception as exc:  # evidence must never hide the test's own outcome
            _attach(f"console {device.name}", f"(not available: {exc!r})")
    for handle in gateways:
        if not handle.running:
            continue
        gw = handle.gateway
        names = _device_names(handle)
        for device_id in gw.traced_devices():
            name = names.get(device_id, device_id[:8])
            _attach(f"protocol {name} via {gw.config.name}", format_trace(gw.trace(device_id)))
        events = gw.events.events()
        _attach(f"gateway events {gw.config.name}",
                "\n".join(f"{_stamp(e.at)} {e.describe()}" for e in events) or "(none)")
        _deployment_labels(gw)
    for plat in ev.platforms:
        _platform_evidence(plat)
    _image_evidence(item)
    try:
        _attach("timeline", timeline_text(ev.gateways, ev.devices, ev.platforms))
    except Exception as exc:  # evidence must never hide the test's own outcome
        _attach("timeline", f"(not available: {exc!r})")


def format_image(facts: dict[str, str]) -> str:
    return "\n".join(f"{key:<7} {value}" for key, value in facts.items())


def _image_evidence(item: pytest.Item) -> None:
    """The firmware image of a firmware backend's scenario; the files once per worker."""
    try:
        facts = _backend(item.config).image()
    except Exception as exc:  # evidence must never hide the test's own outcome
        _attach("firmware image", f"(not available: {exc!r})")
        return
    if not facts:
        return
    _attach("firmware image", format_image(facts))
    if facts.get("sha256", "").isalnum() and len(facts["sha256"]) == 64:
        _label("firmware_sha256", facts["sha256"])
    config = item.config
    if not config.getoption("--hil-attach-image") or config.stash.get(IMAGE_ATTACHED, False):
        return
    if allure is None or "sha256" not in facts or facts.get("path", "-") == "-":
        return
    elf = Path(facts["path"])
    if not elf.is_file():
        return
    config.stash[IMAGE_ATTACHED] = True
    allure.attach.file(str(elf), name=f"firmware {elf.name}", extension="elf")
    if "map" in facts:
        allure.attach.file(facts["map"], name=f"linker map {Path(facts['map']).name}",
                           attachment_type=AttachmentType.TEXT)


def _deployment_labels(gw: Any) -> None:
    seen: set[tuple[str, str]] = set()
    for dep in list(gw.deployments.history):
        digest = dep.true_digest.hex()[:16]
        limits = dep.limits
        key = (dep.app_id, digest)
        if key in seen:
            continue
        seen.add(key)
        _label("module", f"{dep.app_id} sha256:{digest} ({dep.size} bytes)")
        _label("limits", f"{dep.app_id}: memory={limits.memory_bytes} fuel={limits.fuel} "
               f"timeout_ms={limits.timeout_ms}")


def _platform_evidence(plat: Any) -> None:
    watcher = plat.watcher
    if watcher is not None:
        lines = [f"{_stamp(at)} {event:<8} {plural[:-1]}/{name}  {phase}"
                 for at, event, plural, name, phase in list(watcher.timeline)]
        _attach("resource timeline", "\n".join(lines) or "(none)")
        for plural, informer in watcher.informers.items():
            for name, obj in sorted(informer.objects.items()):
                if plural == "applications":
                    obj = {**obj, "spec": {**obj.get("spec", {}), "wasmBytes": "<omitted>"}}
                    _label("application", f"{name}: {obj.get('status', {}).get('phase', '-')}")
            _attach(f"{plural} (final)", json.dumps(
                [_without_wasm(o) for o in informer.objects.values()], indent=1, default=str),
                AttachmentType.JSON if allure else None)
    try:
        from ..kube.client import EVENTS

        listed = plat.loop.run(plat.harness_kube.list(EVENTS, plat.namespace), timeout=10)
        lines = [
            f"{e.get('lastTimestamp') or e.get('eventTime') or '-'} {e.get('type', '-'):<7} "
            f"{(e.get('involvedObject') or {}).get('kind', '?')}/"
            f"{(e.get('involvedObject') or {}).get('name', '?')} {e.get('reason', '')}: "
            f"{e.get('message', '')}"
            for e in listed.get("items", [])
        ]
        _attach("kubernetes events", "\n".join(lines) or "(none)")
    except Exception as exc:
        _attach("kubernetes events", f"(not available: {exc!r})")


def _without_wasm(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec")
    if isinstance(spec, dict) and "wasmBytes" in spec:
        return {**obj, "spec": {**spec, "wasmBytes": f"<{len(spec['wasmBytes'])} base64 chars>"}}
    return obj


# ----------------------------------------------------------------------------- provenance


def _backend(config: pytest.Config) -> Any:
    from ..bench.backends import get_backend

    return get_backend(str(config.getoption("--hil-backend")))


def backend_labels(config: pytest.Config) -> dict[str, str]:
    """The backend's name and the provenance labels it gives (board, firmware digest...)."""
    backend = _backend(config)
    try:
        return {"backend": backend.name, **backend.provenance()}
    except Exception as exc:  # evidence must never turn a test's outcome into a crash
        return {"backend": backend.name, "provenance": f"unavailable: {exc}"}


PROVENANCE = pytest.StashKey[dict[str, str]]()


def project_provenance(config: pytest.Config) -> dict[str, str]:
    """What was tested and with what: the git commit of the project under test (pytest's
    rootdir; "no git" outside a work tree) and this plugin's version (with its own commit
    when it runs from a checkout of wasmbed-hil). Computed once per process."""
    if PROVENANCE not in config.stash:
        plugin = resources.package_version()
        own = resources.checkout_commit()
        config.stash[PROVENANCE] = {
            "project": str(config.rootpath),
            "commit": resources.git_commit(config.rootpath) or "no git",
            "wasmbed-hil": f"{plugin} (checkout {own})" if own else plugin,
        }
    return config.stash[PROVENANCE]


def environment_properties(config: pytest.Config) -> dict[str, str]:
    import sys

    props = {
        "python": sys.version.split()[0],
        "host": f"{host_platform.system()} {host_platform.machine()}",
        **{f"hil.{k}": v for k, v in backend_labels(config).items()},
        **{f"hil.{k}": v for k, v in _backend(config).environment().items()},
    }
    for package in ("wasmtime", "kopf", "aiohttp", "cryptography"):
        try:
            from importlib.metadata import version

            props[package] = version(package)
        except Exception:
            continue
    props.update(project_provenance(config))
    workers = getattr(config.option, "numprocesses", None)
    props["workers"] = str(workers or 0)
    shard = config.getoption("--hil-shard", None)
    if shard:
        props["hil.shard"] = shard.strip()  # a merged report shows "1/2, 2/2"
    return props


CATEGORIES = [
    {"name": "Infrastructure problems (the bench, not the product)",
     "matchedStatuses": ["broken", "failed"],
     "traceRegex": r"(?s).*(InfrastructureError|MachineError|MachineDied|FirmwareBuildError|"
                   r"without a power cut by the harness|"
                   r"Address already in use|Too many open files).*"},
    {"name": "Product defects", "matchedStatuses": ["failed"]},
    {"name": "Test errors (broken tests or harness bugs)", "matchedStatuses": ["broken"]},
]


def write_run_files(config: pytest.Config) -> None:
    directory = getattr(config.option, "allure_report_dir", None)
    if not directory:
        return
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    props = environment_properties(config)
    (out / "environment.properties").write_text(
        "".join(f"{k}={v.replace(chr(10), ' ')}\n" for k, v in sorted(props.items())))
    (out / "categories.json").write_text(json.dumps(CATEGORIES, indent=2) + "\n")


# ----------------------------------------------------------------------------- hooks


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    if call.excinfo is not None and uses_hil(item):
        try:
            add_failure_evidence(item, call.excinfo.value)
        except Exception as exc:  # never let evidence hide the outcome
            _attach("evidence error", repr(exc))
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    hil = uses_hil(item)
    if not hil and item.get_closest_marker("backend_specific") is None:
        return
    if report.when == "setup":  # each attempt is its own Allure result: label each
        # A test that says which backends it runs on depends on the backend even without a
        # harness fixture (suites/netns builds its own platform): without the parameter its
        # runs on two backends shared one key, and the report kept only one of them.
        for name, value in backend_labels(item.config).items():
            _label(name, value)
        backend = str(item.config.getoption("--hil-backend"))
        if allure is not None:  # a parameter: one test on two backends is two tests
            allure.dynamic.parameter("backend", backend)
        if ("backend", backend) not in item.user_properties:  # the JUnit file's name too
            item.user_properties.append(("backend", backend))
    if not hil:
        return
    if report.when == "setup":
        item.stash[CATEGORY] = []
        earlier = item.stash.get(EARLIER, [])
        retried = int(getattr(item, "execution_count", 1)) - 1  # set by pytest-rerunfailures
        if retried > 0 and earlier:  # this attempt follows infrastructure failures
            _label("infra_retries", str(retried))
            _attach("earlier attempts (infrastructure failures)", "\n\n".join(earlier))
    if report.failed:
        category = classify(call.excinfo.value if call.excinfo else None)
        ev = item.stash.get(EVIDENCE, None)
        if ev is not None and deaths(devices_of(ev)):
            category = INFRASTRUCTURE  # whatever failed, a machine died under it
        report.wasmbed_category = category  # type: ignore[attr-defined]
        item.stash.setdefault(CATEGORY, []).append(category)
        _label("failure_category", category)
        if category == INFRASTRUCTURE:  # may be re-run: kept for the next attempt
            attempt = int(getattr(item, "execution_count", 1))
            item.stash.setdefault(EARLIER, []).append(
                f"attempt {attempt}, {report.when}:\n{report.longreprtext}")
    if report.when == "teardown":
        # JUnit takes a test case's properties from its teardown report
        for category in dict.fromkeys(item.stash.get(CATEGORY, [])):
            report.user_properties.append(("failure_category", category))
        if INFRASTRUCTURE in item.stash.get(CATEGORY, []):
            item.stash[EVIDENCE] = Evidence()  # an attempt that may follow collects its own
    if report.when == "call" or (report.when == "setup" and report.failed):
        try:
            attach_evidence(item)
        except Exception as exc:  # never let evidence hide the outcome
            _attach("evidence error", repr(exc))


@pytest.hookimpl(optionalhook=True, trylast=True)  # after pytest-rerunfailures' (a re-run)
def pytest_handlecrashitem(crashitem: str, report: pytest.TestReport, sched: Any) -> None:
    """pytest-xdist's controller: a worker died under `crashitem`. allure-pytest writes a
    test's result in the worker, so the test had none: the report read a run without it
    (not failed, not run; "removed" against a baseline) and passed."""
    if report.outcome == "failed":
        write_crash_result(sched.config, crashitem, str(report.longrepr))


def write_crash_result(config: pytest.Config, nodeid: str, message: str) -> None:
    """A broken Allure result for `nodeid`, named as allure-pytest names the test's own
    (fullName, parameter backend), into --alluredir when it is given."""
    directory = getattr(config.option, "allure_report_dir", None)
    if not directory or allure is None:
        return
    import uuid

    from allure_commons.utils import md5
    from allure_pytest.utils import ParsedPytestNodeId

    parsed = ParsedPytestNodeId(nodeid)
    classes = "".join(f".{c}" for c in parsed.class_names)
    full_name = f"{parsed.package}{classes}#{parsed.test_function}"
    names, bracket, params = nodeid.partition("::")[2].partition("[")
    name = names.split("::")[-1] + bracket + params  # pytest's item.name
    backend = str(config.getoption("--hil-backend"))
    now = int(time.time() * 1000)
    result = {
        "uuid": str(uuid.uuid4()), "name": name, "fullName": full_name,
        "historyId": md5(full_name, repr(backend)), "status": "broken",
        "statusDetails": {"message": message}, "start": now, "stop": now,
        "labels": [{"name": "backend", "value": backend}],
        "parameters": [{"name": "backend", "value": repr(backend)}],
        "titlePath": [*parsed.path_segments, *parsed.class_names],
    }
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{result['uuid']}-result.json").write_text(json.dumps(result), encoding="utf-8")


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):
        write_run_files(session.config)
