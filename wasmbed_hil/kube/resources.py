"""Device, Application and Gateway: the control plane's custom resources, as Python models.

The models are the single source of truth. `wasmbed_hil.kube.crdgen` derives the
apiextensions.k8s.io/v1 CustomResourceDefinitions (deploy/crds/*.yaml) from them, and
tests/test_kube_resources.py checks that the YAML files still equal what it produces.

Conventions
- Python attributes are snake_case; the Kubernetes objects are camelCase (`wasm_bytes` is
  `wasmBytes`), derived mechanically by `json_name`.
- `to_dict()` gives the Kubernetes object: optional fields that are None, and empty lists
  and maps, are left out; scalars with a default are always written.
- `from_dict()` checks types, enums, ranges, patterns and the cross-field rules below, and
  raises `ResourceError` (a ValueError) naming the field path, e.g.
  `spec.targetDevices: exactly one of deviceNames, selector, allDevices`.
  Unknown fields are refused (a real API server would prune them silently).
- Enums: phases are the upstream CamelCase strings; `AppState` and `Outcome` (IntEnums of the
  wire protocol) appear by their Python names (`RUNNING`, `OUT_OF_FUEL`).
- Timestamps are RFC 3339 strings (`rfc3339()` makes one).

Rules the OpenAPI schema does not express (checked in Python only; no CEL in the CRDs):
- Device.spec: at least one of publicKey and identity; when both are given the identity
  must be the SHA-256 of the public key (`wasmbed_hil.pki.device_identity`).
- Application.spec: wasmBytes must decode to 1..1 MiB; a given digest must be the SHA-256 of
  the decoded bytes; targetDevices uses exactly one targeting mode.
- Gateway.spec.config: heartbeatTimeoutSeconds must exceed heartbeatIntervalSeconds.
- Label selectors: In/NotIn need values, Exists/DoesNotExist take none.
"""

# prop() returns a dataclasses.field() carrying schema facts, not a shared mutable default:
# ruff: noqa: RUF009

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Self

from ..gateway.config import GatewayConfig
from ..gateway.store import MAX_UNLISTED_RUNS
from ..pki import PkiError, device_identity
from ..protocol.messages import (
    DEVICE_ID_LEN,
    DIGEST_LEN,
    MAX_APP_ID,
    MAX_ARGS,
    MAX_ENTRY,
    MAX_NAME,
    MAX_REASON,
)
from ..protocol.messages import Limits as _WireLimits
from ..protocol.types import AppState, DevicePhase, Outcome
from .schema import (
    ResourceError,
    decode,
    decode_dataclass,
    encode,
    hints,
    json_name,
    pattern_ok,
    prop,
    rfc3339,
    type_name,
)

GROUP = "wasmbed.github.io"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"

MAX_MODULE_SIZE = GatewayConfig.max_module_size  # upstream's max app size: 1 MiB
MAX_WASM_BASE64 = 4 * -(-MAX_MODULE_SIZE // 3)  # its base64 length: 1,398,104 characters

HEX64 = f"^[0-9a-f]{{{2 * DIGEST_LEN}}}$"
HEX_DEVICE_ID = f"^[0-9a-f]{{{2 * DEVICE_ID_LEN}}}$"
BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
CONDITION_REASON = r"^([A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?)?$"

__all__ = [
    "API_VERSION", "GROUP", "RESOURCES", "VERSION", "AppState", "Application",
    "ApplicationLimits", "ApplicationPhase", "ApplicationSpec", "ApplicationStatistics",
    "ApplicationStatus", "Condition", "ConditionStatus", "DeploymentPhase", "Device",
    "DeviceApp", "DeviceAppStatus", "DeviceGatewayRef", "DevicePhase", "DeviceSpec",
    "DeviceStatus", "Emulation", "Gateway", "GatewayPhase",
    "GatewaySettings", "GatewaySpec", "GatewayStatus", "LabelSelector",
    "LabelSelectorRequirement", "ObjectMeta", "Outcome", "Resource", "ResourceError",
    "SelectorOperator", "TargetDevices", "json_name", "rfc3339",
]


# ----------------------------------------------------------------------------- enums


class ApplicationPhase(StrEnum):
    """An Application as a whole. Names follow upstream."""

    CREATING = "Creating"
    DEPLOYING = "Deploying"
    RUNNING = "Running"
    PARTIALLY_RUNNING = "PartiallyRunning"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    DELETING = "Deleting"


class GatewayPhase(StrEnum):
    """A Gateway. Names follow upstream."""

    PENDING = "Pending"
    RUNNING = "Running"
    FAILED = "Failed"
    STOPPED = "Stopped"


class DeploymentPhase(StrEnum):
    """One Application on one target device (Application.status.deviceStatuses[].phase).

    Deploying/Installed/Running/Stopped/Failed mirror `AppState` as the device reports it;
    Pending: not sent yet; Unknown: the device cannot be asked (disconnected, unreachable).
    """

    PENDING = "Pending"
    DEPLOYING = "Deploying"
    INSTALLED = "Installed"
    RUNNING = "Running"
    STOPPED = "Stopped"
    FAILED = "Failed"
    UNKNOWN = "Unknown"

    @classmethod
    def from_app_state(cls, state: AppState) -> DeploymentPhase:
        return cls[state.name]


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


# ----------------------------------------------------------------------------- shared parts


@dataclass
class Condition:
    """A standard Kubernetes condition (the shape of metav1.Condition)."""

    type: str = prop(doc="Condition type in CamelCase, e.g. Ready.", min_length=1,
                     max_length=316)
    status: ConditionStatus = prop(doc="True, False or Unknown.")
    reason: str = prop(doc="Programmatic CamelCase reason for the last transition.",
                       min_length=1, max_length=1024, pattern=CONDITION_REASON)
    last_transition_time: str = prop(doc="When the status last changed.", date_time=True)
    message: str = prop("", doc="Human-readable details.", max_length=32768)
    observed_generation: int | None = prop(
        None, doc="metadata.generation the condition was set from.", minimum=0
    )


def _conditions(doc: str = "Latest observations of the resource's state.") -> Any:
    return prop(factory=list, doc=doc, list_map_keys=("type",))


@dataclass
class LabelSelectorRequirement:
    key: str = prop(doc="Label key.", min_length=1)
    operator: SelectorOperator = prop(doc="In, NotIn, Exists or DoesNotExist.")
    values: list[str] = prop(factory=list, doc="Values for In and NotIn; empty otherwise.")

    def __post_init__(self) -> None:
        needs_values = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if needs_values and not self.values:
            raise ResourceError("values", f"operator {self.operator} needs values")
        if not needs_values and self.values:
            raise ResourceError("values", f"operator {self.operator} takes no values")

    def matches(self, labels: dict[str, str]) -> bool:
        match self.operator:
            case SelectorOperator.IN:
                return labels.get(self.key) in self.values
            case SelectorOperator.NOT_IN:
                return labels.get(self.key) not in self.values
            case SelectorOperator.EXISTS:
                return self.key in labels
            case _:
                return self.key not in labels


@dataclass
class LabelSelector:
    """A Kubernetes label selector; all its terms must match (an empty one matches all)."""

    match_labels: dict[str, str] = prop(factory=dict, doc="Labels that must equal these.")
    match_expressions: list[LabelSelectorRequirement] = prop(
        factory=list, doc="Set-based requirements."
    )

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            e.matches(labels) for e in self.match_expressions
        )


# ----------------------------------------------------------------------------- Device


@dataclass
class Emulation:
    """Asks the device manager to start an emulated machine for this Device."""

    backend: str = prop(
        doc="The device backend that runs the machine, by name. The device manager resolves "
        "it in the test bench's backend registry and reports an unknown one in the Device's "
        "Emulated condition.",
        pattern=DNS_LABEL, max_length=63,
    )
    board: str | None = prop(None, doc="Board or machine, e.g. mps2-an385.", min_length=1,
                             max_length=MAX_NAME)


@dataclass
class DeviceSpec:
    """Identity and kind of one device. At least one of publicKey and identity is required;
    when both are given the identity must be the SHA-256 of the public key."""

    public_key: str | None = prop(
        None, doc="SubjectPublicKeyInfo DER of the device's key, base64.", pattern=BASE64,
        min_length=4, max_length=4096,
    )
    identity: str | None = prop(
        None, doc="Lowercase hex SHA-256 of the SubjectPublicKeyInfo DER.", pattern=HEX64
    )
    device_type: str | None = prop(None, doc="Kind of device, e.g. sensor.", max_length=MAX_NAME)
    mcu_type: str | None = prop(None, doc="Microcontroller, e.g. cortex-m3.",
                                max_length=MAX_NAME)
    architecture: str | None = prop(None, doc="CPU architecture, e.g. armv7m.",
                                    max_length=MAX_NAME)
    preferred_gateway: str | None = prop(None, doc="Name of the Gateway to prefer.",
                                         max_length=253)
    emulation: Emulation | None = prop(None, doc="Start an emulated machine for this device.")
    revoked: bool | None = prop(None, doc="true revokes the device's identity: every gateway "
                                "drops its session and refuses it from then on, across "
                                "restarts. One-way: setting it back to false (or removing it) "
                                "does not reinstate the identity.")

    def __post_init__(self) -> None:
        if self.public_key is None and self.identity is None:
            raise ResourceError("", "one of publicKey and identity is required")
        if self.public_key is not None:
            try:
                der = base64.b64decode(self.public_key, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ResourceError("publicKey", f"not valid base64: {exc}") from None
            try:
                derived = device_identity(der)
            except PkiError as exc:
                raise ResourceError("publicKey", str(exc)) from None
            if self.identity is not None and self.identity != derived:
                raise ResourceError("identity", "is not the SHA-256 of publicKey")

    @property
    def device_identity(self) -> str:
        """The hex identity, given or derived from publicKey."""
        if self.identity is not None:
            return self.identity
        return device_identity(base64.b64decode(self.public_key or ""))


@dataclass
class DeviceGatewayRef:
    """The Gateway a device is (or was last) connected to."""

    name: str = prop(doc="Gateway name.", min_length=1, max_length=253)
    endpoint: str | None = prop(None, doc="Gateway endpoint the device used.")
    connected_at: str | None = prop(None, doc="When the device connected.", date_time=True)


@dataclass
class DeviceApp:
    """One application on the device, as its gateway reports it: the device's own state
    (from its last heartbeat), the deployment and the runs. The gateway serving the device
    is the only writer; the Application controller aggregates these into
    Application.status.deviceStatuses."""

    app_id: str = prop(doc="Application id on the device.", min_length=1, max_length=MAX_APP_ID)
    digest: str = prop(doc="Hex SHA-256 of the module.", pattern=HEX64)
    state: AppState | None = prop(None, doc="State reported by the device; absent before "
                                  "the device holds the module.")
    application: str | None = prop(None, doc="Name of the Application resource it comes from.",
                                   max_length=253)
    deployment: DeploymentPhase = prop(DeploymentPhase.PENDING,
                                       doc="Deployment and run phase of this app here.")
    runs: int = prop(0, doc="Execution results received so far.", minimum=0)
    run_id: int | None = prop(None, doc="Id of the last run.", minimum=0, maximum=2**32 - 1)
    outcome: Outcome | None = prop(None, doc="How the last run ended.")
    values: list[int | float] = prop(factory=list, doc="Results of the last run.",
                                     max_items=MAX_ARGS)
    error: str | None = prop(None, doc="Last deployment or run error here.")
    last_updated: str | None = prop(None, doc="When this entry last changed.", date_time=True)


MAX_OPEN_RUNS = 64  # runs started and not yet answered, published per device


@dataclass
class EnrollmentRun:
    """A run a gateway started on the device whose result it has not received yet."""

    app_id: str = prop(doc="Application id on the device.", min_length=1, max_length=MAX_APP_ID)
    run_id: int = prop(doc="Run id of the StartApp.", minimum=0, maximum=2**32 - 1)


@dataclass
class DeviceEnrollment:
    """The device's enrollment, shared by every gateway through the control plane: the
    gateway serving the device publishes it, every other gateway copies it into its local
    cache, so the device is admitted anywhere with the same device id, without pairing, and
    its revocation, run ids and unanswered runs follow it."""

    device_id: str = prop(doc="Device id given at enrollment (hex, 16 bytes).",
                          pattern=HEX_DEVICE_ID)
    enrolled_at: str | None = prop(None, doc="When the device first enrolled.", date_time=True)
    enrolled_by: str | None = prop(None, doc="Gateway that published this enrollment.",
                                   max_length=253)
    revoked: bool = prop(False, doc="A gateway revoked the identity: every gateway refuses "
                         "it.")
    next_run_id: int = prop(0, doc="Lowest run id no gateway may have given the device yet "
                            "(the publishing gateway reserves a few ahead): gateways start "
                            "runs from here, so run ids never repeat across gateways.",
                            minimum=0, maximum=2**32)
    open_runs: list[EnrollmentRun] = prop(
        factory=list, doc="Runs started and not answered yet: their results are accepted by "
        "whichever gateway the device reconnects to.", max_items=MAX_OPEN_RUNS)
    unlisted_from: int | None = prop(
        None, doc="Run ids from here up to nextRunId may have been started without being "
        "listed in openRuns (those the publishing gateway reserved ahead): whichever gateway "
        "the device reconnects to accepts one result of each, of an Application that still "
        f"selects the Device. At most {MAX_UNLISTED_RUNS} below nextRunId.",
        minimum=0, maximum=2**32)


@dataclass
class DeviceStatus:
    phase: DevicePhase = prop(DevicePhase.PENDING, doc="Lifecycle phase of the device.")
    device_id: str | None = prop(None, doc="Device id given at enrollment (hex, 16 bytes).",
                                 pattern=HEX_DEVICE_ID)
    gateway: DeviceGatewayRef | None = prop(None, doc="Gateway the device is connected to.")
    connected_since: str | None = prop(None, doc="Start of the current session.",
                                       date_time=True)
    last_heartbeat: str | None = prop(None, doc="Last heartbeat received.", date_time=True)
    uptime_ms: int | None = prop(None, doc="Device uptime at the last heartbeat.", minimum=0)
    memory_free: int | None = prop(None, doc="Free memory in bytes at the last heartbeat.",
                                   minimum=0)
    apps: list[DeviceApp] = prop(factory=list, doc="Applications installed on the device.",
                                 list_map_keys=("app_id",))
    conditions: list[Condition] = _conditions()
    observed_generation: int | None = prop(None, doc="metadata.generation last acted upon.",
                                           minimum=0)
    enrollment: DeviceEnrollment | None = prop(
        None, doc="Enrollment shared by the gateways (written by the serving gateway).")


# ----------------------------------------------------------------------------- Application

_WIRE_LIMITS = _WireLimits()


@dataclass
class ApplicationLimits:
    """Runtime limits of each run; defaults are the protocol's (upstream's) defaults."""

    memory_bytes: int = prop(_WIRE_LIMITS.memory_bytes, doc="Linear memory limit in bytes.",
                             minimum=0, maximum=2**32 - 1)
    fuel: int = prop(_WIRE_LIMITS.fuel, doc="Instruction budget; 0 disables fuel metering.",
                     minimum=0)
    timeout_ms: int = prop(_WIRE_LIMITS.timeout_ms, doc="Wall-clock budget of one run.",
                           minimum=0, maximum=2**32 - 1)

    def to_wire(self) -> _WireLimits:
        return _WireLimits(self.memory_bytes, self.fuel, self.timeout_ms)


@dataclass
class TargetDevices:
    """Which Devices (in the Application's namespace) run it: exactly one of deviceNames
    (non-empty), selector, allDevices (true)."""

    device_names: list[str] = prop(factory=list, doc="Names of Device resources.")
    selector: LabelSelector | None = prop(None, doc="Devices whose labels match.")
    all_devices: bool = prop(False, doc="Every Device in the namespace.")

    def __post_init__(self) -> None:
        modes = [bool(self.device_names), self.selector is not None, self.all_devices]
        if sum(modes) != 1:
            raise ResourceError(
                "", "exactly one of deviceNames, selector, allDevices must be set"
                f" (got {sum(modes)})",
            )
        if len(set(self.device_names)) != len(self.device_names):
            raise ResourceError("deviceNames", "duplicate names")

    def selects(self, name: str, labels: dict[str, str] | None = None) -> bool:
        if self.all_devices:
            return True
        if self.selector is not None:
            return self.selector.matches(labels or {})
        return name in self.device_names


@dataclass
class ApplicationSpec:
    """A WebAssembly application and the devices that run it."""

    wasm_bytes: str = prop(doc="The module, base64 (at most 1 MiB decoded).", pattern=BASE64,
                           min_length=4, max_length=MAX_WASM_BASE64)
    target_devices: TargetDevices = prop(doc="Where to run it.")
    name: str | None = prop(None, doc="Display name.", max_length=MAX_NAME)
    description: str | None = prop(None, doc="Free text.", max_length=MAX_REASON * 4)
    digest: str | None = prop(None, doc="Hex SHA-256 of the module; checked if given.",
                              pattern=HEX64)
    entry: str = prop("main", doc="Exported function to run.", min_length=1,
                      max_length=MAX_ENTRY)
    args: list[int | float] = prop(factory=list, doc="Arguments of the entry.",
                                   max_items=MAX_ARGS)
    limits: ApplicationLimits = prop(factory=ApplicationLimits, doc="Runtime limits.")
    config: dict[str, Any] | None = prop(None, doc="Free-form configuration, passed through.",
                                         free_form=True)

    def __post_init__(self) -> None:
        module = self.module  # raises on bad base64
        if not 0 < len(module) <= MAX_MODULE_SIZE:
            raise ResourceError("wasmBytes", f"module must be 1..{MAX_MODULE_SIZE} bytes, "
                                f"got {len(module)}")
        if self.digest is not None and self.digest != hashlib.sha256(module).hexdigest():
            raise ResourceError("digest", "is not the SHA-256 of wasmBytes")

    @property
    def module(self) -> bytes:
        try:
            return base64.b64decode(self.wasm_bytes, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ResourceError("wasmBytes", f"not valid base64: {exc}") from None

    @property
    def module_digest(self) -> str:
        return self.digest or hashlib.sha256(self.module).hexdigest()


@dataclass
class DeviceAppStatus:
    """The Application on one target device."""

    device: str = prop(doc="Device name.", min_length=1, max_length=253)
    phase: DeploymentPhase = prop(DeploymentPhase.PENDING, doc="Deployment phase there.")
    run_id: int | None = prop(None, doc="Id of the last run.", minimum=0, maximum=2**32 - 1)
    outcome: Outcome | None = prop(None, doc="How the last run ended.")
    values: list[int | float] = prop(factory=list, doc="Results of the last run.",
                                     max_items=MAX_ARGS)
    error: str | None = prop(None, doc="Last error on this device.")
    last_updated: str | None = prop(None, doc="When this entry last changed.", date_time=True)


@dataclass
class ApplicationStatistics:
    targets: int = prop(0, doc="Devices targeted.", minimum=0)
    deployed: int = prop(0, doc="Devices holding the module.", minimum=0)
    running: int = prop(0, doc="Devices running it.", minimum=0)
    failed: int = prop(0, doc="Devices where it failed.", minimum=0)
    stopped: int = prop(0, doc="Devices where it is stopped.", minimum=0)

    @classmethod
    def count(cls, statuses: list[DeviceAppStatus]) -> ApplicationStatistics:
        phases = [s.phase for s in statuses]
        held = (DeploymentPhase.INSTALLED, DeploymentPhase.RUNNING, DeploymentPhase.STOPPED)
        return cls(
            targets=len(phases),
            deployed=sum(p in held for p in phases),
            running=phases.count(DeploymentPhase.RUNNING),
            failed=phases.count(DeploymentPhase.FAILED),
            stopped=phases.count(DeploymentPhase.STOPPED),
        )


@dataclass
class ApplicationStatus:
    phase: ApplicationPhase = prop(ApplicationPhase.CREATING, doc="Phase of the application.")
    device_statuses: list[DeviceAppStatus] = prop(
        factory=list, doc="Per target device.", list_map_keys=("device",)
    )
    statistics: ApplicationStatistics = prop(factory=ApplicationStatistics,
                                             doc="Counts over deviceStatuses.")
    last_updated: str | None = prop(None, doc="When the status last changed.", date_time=True)
    error: str | None = prop(None, doc="Application-wide error.")
    conditions: list[Condition] = _conditions()
    observed_generation: int | None = prop(None, doc="metadata.generation last acted upon.",
                                           minimum=0)


# ----------------------------------------------------------------------------- Gateway

_GW = GatewayConfig()


@dataclass
class GatewaySettings:
    """Timings and pairing; defaults are upstream's."""

    heartbeat_interval_seconds: int = prop(int(_GW.heartbeat_interval_s), minimum=1,
                                           doc="Heartbeat period told to devices.")
    heartbeat_timeout_seconds: int = prop(int(_GW.heartbeat_timeout_s), minimum=1,
                                          doc="Silence after which a device is Unreachable.")
    enrollment_timeout_seconds: int = prop(300, minimum=1, doc="Upper bound of an enrollment.")
    connection_timeout_seconds: int = prop(600, minimum=1,
                                           doc="Idle connection limit (upstream's 10 min).")
    pairing_mode: bool = prop(_GW.pairing, doc="Accept enrollment of unknown devices.")
    pairing_timeout_seconds: int = prop(int(_GW.pairing_timeout_s or 300), minimum=1,
                                        doc="Pairing mode turns itself off after this.")

    def __post_init__(self) -> None:
        if self.heartbeat_timeout_seconds <= self.heartbeat_interval_seconds:
            raise ResourceError("heartbeatTimeoutSeconds",
                                "must exceed heartbeatIntervalSeconds")


@dataclass
class GatewaySpec:
    endpoint: str = prop(doc="Address devices connect to (host or host:port).", min_length=1,
                         max_length=512)
    port: int | None = prop(None, doc="HTTP API port.", minimum=1, maximum=65535)
    tls_port: int | None = prop(None, doc="Device (TLS) port.", minimum=1, maximum=65535)
    max_devices: int = prop(_GW.max_devices, doc="Most devices served at once.", minimum=1)
    config: GatewaySettings = prop(factory=GatewaySettings, doc="Timings and pairing.")


@dataclass
class GatewayStatus:
    phase: GatewayPhase = prop(GatewayPhase.PENDING, doc="Phase of the gateway.")
    connected_devices: int = prop(0, doc="Devices with a live session.", minimum=0)
    enrolled_devices: int = prop(0, doc="Devices enrolled through this gateway.", minimum=0)
    last_heartbeat: str | None = prop(None, doc="Last sign of life of the gateway.",
                                      date_time=True)
    conditions: list[Condition] = _conditions()
    observed_generation: int | None = prop(None, doc="metadata.generation last acted upon.",
                                           minimum=0)


# ----------------------------------------------------------------------------- objects


@dataclass
class ObjectMeta:
    """The part of metadata the platform uses; any other key is kept in `extra` as is."""

    name: str = ""
    namespace: str | None = None  # None: the namespace of the request
    generate_name: str | None = None
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    finalizers: list[str] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            json_name(f.name): getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "extra" and getattr(self, f.name) not in (None, [], {})
        }
        out = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
               for k, v in out.items()}
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, raw: Any, path: str = "metadata") -> ObjectMeta:
        if not isinstance(raw, dict):
            raise ResourceError(path, f"expected an object, got {type_name(raw)}")
        known = {json_name(f.name): f for f in dataclasses.fields(cls) if f.name != "extra"}
        kwargs: dict[str, Any] = {}
        for key, f in known.items():
            if raw.get(key) is None:
                continue
            tp = hints(cls)[f.name]
            kwargs[f.name] = decode(tp, raw[key], f"{path}.{key}")
        kwargs["extra"] = {k: v for k, v in raw.items() if k not in known}
        meta = cls(**kwargs)
        if not meta.name and not meta.generate_name:
            raise ResourceError(f"{path}.name", "required field is missing")
        if meta.name and (len(meta.name) > 253 or not pattern_ok(DNS_SUBDOMAIN, meta.name)):
            raise ResourceError(f"{path}.name",
                                f"{meta.name!r} is not a lowercase RFC 1123 subdomain")
        return meta


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0


AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp")


class Resource:
    """Base of the three kinds: class facts for the CRD and the generic to_dict/from_dict."""

    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    SINGULAR: ClassVar[str]
    SHORT_NAMES: ClassVar[tuple[str, ...]]
    CATEGORIES: ClassVar[tuple[str, ...]] = ("wasmbed",)
    PRINTER_COLUMNS: ClassVar[tuple[PrinterColumn, ...]]
    SPEC: ClassVar[type]
    STATUS: ClassVar[type]

    metadata: ObjectMeta
    spec: Any
    status: Any

    @classmethod
    def crd_name(cls) -> str:
        return f"{cls.PLURAL}.{GROUP}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": self.KIND,
            "metadata": self.metadata.to_dict(),
            "spec": encode(self.spec),
        }
        if self.status is not None:
            out["status"] = encode(self.status)
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> Self:
        if not isinstance(raw, dict):
            raise ResourceError("", f"expected an object, got {type_name(raw)}")
        if raw.get("apiVersion") != API_VERSION:
            raise ResourceError("apiVersion", f"expected {API_VERSION}, "
                                f"got {raw.get('apiVersion')!r}")
        if raw.get("kind") != cls.KIND:
            raise ResourceError("kind", f"expected {cls.KIND}, got {raw.get('kind')!r}")
        unknown = sorted(set(raw) - {"apiVersion", "kind", "metadata", "spec", "status"})
        if unknown:
            raise ResourceError(str(unknown[0]), "unknown field")
        if "metadata" not in raw:
            raise ResourceError("metadata", "required field is missing")
        if "spec" not in raw:
            raise ResourceError("spec", "required field is missing")
        metadata = ObjectMeta.from_dict(raw["metadata"])
        spec = decode_dataclass(cls.SPEC, raw["spec"], "spec")
        status = None
        if raw.get("status") is not None:
            status = decode_dataclass(cls.STATUS, raw["status"], "status")
        return cls(metadata=metadata, spec=spec, status=status)  # type: ignore[call-arg]

    def validate(self) -> Self:
        """Check an object built in Python the way from_dict checks input."""
        return type(self).from_dict(self.to_dict())


@dataclass
class Device(Resource):
    KIND = "Device"
    PLURAL = "devices"
    SINGULAR = "device"
    SHORT_NAMES = ("wbdev",)
    PRINTER_COLUMNS = (
        PrinterColumn("Phase", "string", ".status.phase", "Lifecycle phase"),
        PrinterColumn("Gateway", "string", ".status.gateway.name", "Connected gateway"),
        PrinterColumn("Device ID", "string", ".status.deviceId", "Enrollment id", 1),
        AGE,
    )
    SPEC = DeviceSpec
    STATUS = DeviceStatus

    metadata: ObjectMeta
    spec: DeviceSpec
    status: DeviceStatus | None = None


@dataclass
class Application(Resource):
    KIND = "Application"
    PLURAL = "applications"
    SINGULAR = "application"
    SHORT_NAMES = ("wbapp",)
    PRINTER_COLUMNS = (
        PrinterColumn("Phase", "string", ".status.phase", "Application phase"),
        PrinterColumn("Targets", "integer", ".status.statistics.targets", "Devices targeted"),
        PrinterColumn("Running", "integer", ".status.statistics.running", "Devices running it"),
        AGE,
    )
    SPEC = ApplicationSpec
    STATUS = ApplicationStatus

    metadata: ObjectMeta
    spec: ApplicationSpec
    status: ApplicationStatus | None = None


@dataclass
class Gateway(Resource):
    KIND = "Gateway"
    PLURAL = "gateways"
    SINGULAR = "gateway"
    SHORT_NAMES = ("wbgw",)
    PRINTER_COLUMNS = (
        PrinterColumn("Phase", "string", ".status.phase", "Gateway phase"),
        PrinterColumn("Connected", "integer", ".status.connectedDevices", "Live sessions"),
        PrinterColumn("Enrolled", "integer", ".status.enrolledDevices", "Enrolled devices"),
        AGE,
    )
    SPEC = GatewaySpec
    STATUS = GatewayStatus

    metadata: ObjectMeta
    spec: GatewaySpec
    status: GatewayStatus | None = None

    def gateway_config(self, **overrides: Any) -> GatewayConfig:
        """The GatewayConfig this resource asks for (other settings keep their defaults).

        enrollmentTimeoutSeconds and connectionTimeoutSeconds are upstream's coarse limits
        and have no GatewayConfig counterpart (its enrollment_timeout_s is the much shorter
        challenge-to-proof limit).
        """
        c = self.spec.config
        values: dict[str, Any] = {
            "name": self.metadata.name,
            "heartbeat_interval_s": float(c.heartbeat_interval_seconds),
            "heartbeat_timeout_s": float(c.heartbeat_timeout_seconds),
            "pairing": c.pairing_mode,
            "pairing_timeout_s": float(c.pairing_timeout_seconds),
            "max_devices": self.spec.max_devices,
        }
        return GatewayConfig(**{**values, **overrides})


RESOURCES: tuple[type[Resource], ...] = (Device, Application, Gateway)
