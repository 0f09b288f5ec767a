"""The resource types served: the built-in few (namespaces, events, CRDs) and those CRDs define."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, invalid

CRD_GROUP = "apiextensions.k8s.io"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass
class ResourceType:
    """One served resource (all of its versions share one store; no conversion between them)."""

    group: str  # "" for the core group
    versions: list[str]  # served versions, preferred first
    plural: str
    singular: str
    kind: str
    namespaced: bool
    status_subresource: bool = False
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)  # version -> schema
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    printer_columns: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    selectable_fields: tuple[str, ...] | None = ("metadata.name", "metadata.namespace")
    name_pattern: re.Pattern[str] = _DNS_SUBDOMAIN
    builtin: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def schema(self, version: str) -> dict[str, Any]:
        return self.schemas.get(version) or {}

    def storage_api_version(self) -> str:
        return self.api_version(self.versions[0])

    def check_name(self, name: str) -> None:
        if not name or len(name) > 253 or not self.name_pattern.match(name):
            raise invalid(
                self.group,
                self.kind,
                name,
                [("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 name must '
                  "consist of lower case alphanumeric characters, '-' or '.'")],
            )


def builtin_types() -> list[ResourceType]:
    """Namespaces, events and customresourcedefinitions: what clients touch outside CRDs."""
    return [
        ResourceType(
            group="", versions=["v1"], plural="namespaces", singular="namespace",
            kind="Namespace", namespaced=False, status_subresource=True,
            short_names=["ns"], selectable_fields=None, name_pattern=_DNS_LABEL, builtin=True,
        ),
        ResourceType(
            group="", versions=["v1"], plural="events", singular="event", kind="Event",
            namespaced=True, short_names=["ev"], selectable_fields=None, builtin=True,
        ),
        ResourceType(
            group=CRD_GROUP, versions=["v1"], plural="customresourcedefinitions",
            singular="customresourcedefinition", kind="CustomResourceDefinition",
            namespaced=False, status_subresource=True, short_names=["crd", "crds"],
            categories=["api-extensions"], selectable_fields=None, builtin=True,
        ),
    ]


def crd_to_type(crd: dict[str, Any]) -> ResourceType:
    """Check a CustomResourceDefinition and derive the resource type it serves (422 if bad)."""
    name = (crd.get("metadata") or {}).get("name", "")
    spec = crd.get("spec") or {}
    errors: list[tuple[str, str]] = []
    group = spec.get("group") or ""
    names = spec.get("names") or {}
    plural, kind = names.get("plural") or "", names.get("kind") or ""
    if not group:
        errors.append(("spec.group", "Required value"))
    if not plural:
        errors.append(("spec.names.plural", "Required value"))
    if not kind:
        errors.append(("spec.names.kind", "Required value"))
    if plural and group and name != f"{plural}.{group}":
        errors.append(("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+'
                                        '"."+spec.group'))
    scope = spec.get("scope")
    if scope not in ("Namespaced", "Cluster"):
        errors.append(("spec.scope", f'Unsupported value: "{scope}": supported values: '
                                     '"Cluster", "Namespaced"'))
    versions = [v for v in spec.get("versions") or [] if isinstance(v, dict)]
    if not versions:
        errors.append(("spec.versions", "Invalid value: null: must have exactly one version "
                                        "marked as storage version"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        errors.append(("spec.versions", "Invalid value: must have exactly one version marked as "
                                        "storage version"))
    served = [v for v in versions if v.get("served")]
    if versions and not served:
        errors.append(("spec.versions", "Invalid value: must have at least one served version"))
    for index, version in enumerate(versions):
        if not version.get("name"):
            errors.append((f"spec.versions[{index}].name", "Required value"))
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if schema is None:
            errors.append((f"spec.versions[{index}].schema.openAPIV3Schema", "Required value"))
        elif not isinstance(schema, dict) or schema.get("type") != "object":
            errors.append((f"spec.versions[{index}].schema.openAPIV3Schema.type",
                           'Required value: must be "object" at the root'))
    if errors:
        raise invalid(CRD_GROUP, "CustomResourceDefinition", name, errors)
    served.sort(key=lambda v: not v.get("storage"))  # the storage version first
    return ResourceType(
        group=group,
        versions=[v["name"] for v in served],
        plural=plural,
        singular=names.get("singular") or kind.lower(),
        kind=kind,
        namespaced=scope == "Namespaced",
        status_subresource=any(
            "status" in (v.get("subresources") or {}) for v in served
        ),
        schemas={v["name"]: v["schema"]["openAPIV3Schema"] for v in served},
        short_names=list(names.get("shortNames") or []),
        categories=list(names.get("categories") or []),
        printer_columns={v["name"]: list(v.get("additionalPrinterColumns") or []) for v in served},
    )


class Registry:
    """Resource types by (group, plural), with lookups the HTTP layer needs."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str], ResourceType] = {}
        for rtype in builtin_types():
            self.add(rtype)

    def add(self, rtype: ResourceType) -> None:
        self._types[rtype.key] = rtype

    def remove(self, key: tuple[str, str]) -> ResourceType | None:
        return self._types.pop(key, None)

    def lookup_key(self, key: tuple[str, str]) -> ResourceType | None:
        return self._types.get(key)

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def lookup(self, group: str, version: str, plural: str) -> ResourceType:
        rtype = self._types.get((group, plural))
        if rtype is None or version not in rtype.versions:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return rtype

    def groups(self) -> dict[str, list[str]]:
        """Served non-core groups and their versions, preferred version first."""
        result: dict[str, list[str]] = {}
        for rtype in self._types.values():
            if rtype.group:
                versions = result.setdefault(rtype.group, [])
                versions.extend(v for v in rtype.versions if v not in versions)
        return result

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [t for t in self._types.values() if t.group == group and version in t.versions]
