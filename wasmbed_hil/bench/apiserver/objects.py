"""Create, read, update, patch and delete with kube-apiserver's semantics, free of HTTP.

Server-set metadata (uid, resourceVersion, generation, creationTimestamp), optimistic
concurrency, the status subresource split, finalizer-driven deletion, schema validation with
pruning and defaulting, and the side effects of CustomResourceDefinitions on what is served.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from . import errors
from .errors import ApiError
from .jsoncopy import json_copy
from .patch import apply_patch
from .registry import CRD_GROUP, Registry, ResourceType, crd_to_type
from .schema import prune_and_default, validate
from .store import Store

_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SERVER_METADATA = (
    "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds",
)
Matcher = Callable[[dict[str, Any]], bool]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_part(obj: dict[str, Any], rtype: ResourceType) -> dict[str, Any]:
    """What counts for ``generation``: everything but metadata (and status when it is split)."""
    skip = {"metadata", "status"} if rtype.status_subresource else {"metadata"}
    return {k: v for k, v in obj.items() if k not in skip}


class ObjectApi:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self._ensure_namespace("default")

    # -- helpers ----------------------------------------------------------------------------

    def _ensure_namespace(self, name: str) -> None:
        if self.store.get(("", "namespaces"), "", name) is None:
            rtype = self.registry.lookup("", "v1", "namespaces")
            self.create(rtype, "v1", None, {"metadata": {"name": name}})

    def _shown(self, rtype: ResourceType, version: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj["apiVersion"] = rtype.api_version(version)
        obj["kind"] = rtype.kind
        return obj

    def _require(
        self, rtype: ResourceType, namespace: str | None, name: str
    ) -> dict[str, Any]:
        obj = self.store.get(rtype.key, namespace or "", name)
        if obj is None:
            raise errors.not_found(rtype.group, rtype.plural, name)
        return obj

    def _check_namespace(self, rtype: ResourceType, namespace: str | None) -> str:
        if not rtype.namespaced:
            return ""
        if not namespace:
            raise errors.bad_request("the namespace of the object is required")
        if self.store.get(("", "namespaces"), "", namespace) is None:
            raise errors.not_found("", "namespaces", namespace)
        return namespace

    def _validate(self, rtype: ResourceType, version: str, obj: dict[str, Any]) -> dict[str, Any]:
        schema = rtype.schema(version)
        if not schema:
            return obj
        obj = prune_and_default(schema, obj)
        problems = validate(schema, obj)
        if problems:
            name = (obj.get("metadata") or {}).get("name", "")
            raise errors.invalid(rtype.group, rtype.kind, name, problems)
        return obj

    def _check_body(
        self, rtype: ResourceType, version: str, body: Any
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        kind = body.get("kind")
        if kind not in (None, rtype.kind):
            raise errors.bad_request(
                f"the kind of the object ({kind}) does not match the resource ({rtype.kind})"
            )
        api_version = body.get("apiVersion")
        if api_version not in (None, rtype.api_version(version)):
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rtype.api_version(version)})"
            )
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise errors.bad_request("metadata must be an object")
        return json_copy(body)

    # -- reads ------------------------------------------------------------------------------

    def get(
        self, rtype: ResourceType, version: str, namespace: str | None, name: str
    ) -> dict[str, Any]:
        return self._shown(rtype, version, self._require(rtype, namespace, name))

    def list(
        self,
        rtype: ResourceType,
        version: str,
        namespace: str | None,
        matches: Matcher,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> dict[str, Any]:
        items = [o for o in self.store.items(rtype.key, namespace or None) if matches(o)]
        list_rv = str(self.store.rv)
        if continue_token:
            try:
                state = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                start, list_rv = tuple(state["start"]), state["rv"]
            except (ValueError, KeyError, TypeError) as exc:
                raise errors.bad_request(f"invalid continue token: {exc}") from exc
            items = [
                o for o in items
                if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start
            ]
        metadata: dict[str, Any] = {"resourceVersion": list_rv}
        if limit and limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            state = {"start": [last.get("namespace", ""), last["name"]], "rv": list_rv}
            metadata["continue"] = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
            metadata["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {
            "kind": rtype.list_kind,
            "apiVersion": rtype.api_version(version),
            "metadata": metadata,
            "items": [self._shown(rtype, version, o) for o in items],
        }

    # -- writes -----------------------------------------------------------------------------

    def create(
        self,
        rtype: ResourceType,
        version: str,
        namespace: str | None,
        body: Any,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        obj = self._check_body(rtype, version, body)
        metadata = obj.setdefault("metadata", {})
        namespace = self._check_namespace(rtype, namespace)
        if rtype.namespaced:
            if metadata.get("namespace") not in (None, "", namespace):
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        if not metadata.get("name"):
            prefix = metadata.get("generateName")
            if not prefix:
                raise errors.invalid(rtype.group, rtype.kind, "", [
                    ("metadata.name", "Required value: name or generateName is required")])
            suffix = "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
            metadata["name"] = f"{prefix}{suffix}"
        rtype.check_name(metadata["name"])
        if self.store.get(rtype.key, namespace, metadata["name"]) is not None:
            raise errors.already_exists(rtype.group, rtype.plural, metadata["name"])
        for field in _SERVER_METADATA:
            metadata.pop(field, None)
        if rtype.status_subresource:
            obj.pop("status", None)
        obj = self._validate(rtype, version, obj)
        metadata = obj["metadata"]
        metadata["uid"] = str(uuid.uuid4())
        metadata["generation"] = 1
        metadata["creationTimestamp"] = now_rfc3339()
        obj["apiVersion"], obj["kind"] = rtype.storage_api_version(), rtype.kind
        if dry_run:
            metadata["resourceVersion"] = str(self.store.rv)
            return self._shown(rtype, version, obj)
        self._on_create(rtype, obj)
        metadata["resourceVersion"] = self.store.next_rv()
        self.store.put(rtype.key, obj, "ADDED")
        return self._shown(rtype, version, obj)

    def replace(
        self,
        rtype: ResourceType,
        version: str,
        namespace: str | None,
        name: str,
        body: Any,
        status: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        new = self._check_body(rtype, version, body)
        metadata = new.get("metadata") or {}
        if metadata.get("name") not in (None, name):
            raise errors.bad_request(
                "the name of the object does not match the name on the URL"
            )
        current = self._require(rtype, namespace, name)
        rv = metadata.get("resourceVersion")
        if not rv:
            raise errors.invalid(rtype.group, rtype.kind, name, [
                ("metadata.resourceVersion",
                 "Invalid value: 0x0: must be specified for an update")])
        return self._update(rtype, version, current, new, status, dry_run)

    def patch(
        self,
        rtype: ResourceType,
        version: str,
        namespace: str | None,
        name: str,
        content_type: str,
        patch: Any,
        status: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        current = self._require(rtype, namespace, name)
        shown = self._shown(rtype, version, json_copy(current))
        patched = apply_patch(shown, content_type, patch)
        if not isinstance(patched, dict):
            raise errors.bad_request("the patched object is not a JSON object")
        return self._update(rtype, version, current, patched, status, dry_run)

    def _update(
        self,
        rtype: ResourceType,
        version: str,
        current: dict[str, Any],
        new: dict[str, Any],
        status: bool,
        dry_run: bool,
    ) -> dict[str, Any]:
        old_meta = current["metadata"]
        name = old_meta["name"]
        new_meta = new.get("metadata")
        if not isinstance(new_meta, dict):
            new_meta = {}
        rv = new_meta.get("resourceVersion")
        if rv and rv != old_meta["resourceVersion"]:
            raise errors.conflict(rtype.group, rtype.plural, name)
        if status:
            updated = json_copy(current)
            if "status" in new:
                updated["status"] = new["status"]
            else:
                updated.pop("status", None)
        else:
            updated = new
            if rtype.status_subresource:
                if "status" in current:
                    updated["status"] = json_copy(current["status"])
                else:
                    updated.pop("status", None)
            for field in ("name", "namespace", *_SERVER_METADATA):
                if field in old_meta:
                    new_meta[field] = old_meta[field]
                else:
                    new_meta.pop(field, None)
            updated["metadata"] = new_meta
            if old_meta.get("deletionTimestamp"):
                added = set(new_meta.get("finalizers") or ()) - set(
                    old_meta.get("finalizers") or ()
                )
                if added:
                    raise errors.invalid(rtype.group, rtype.kind, name, [
                        ("metadata.finalizers", "Forbidden: no new finalizers can be added if "
                         "the object is being deleted, found new finalizers "
                         + json.dumps(sorted(added)))])
        updated["apiVersion"], updated["kind"] = rtype.storage_api_version(), rtype.kind
        updated = self._validate(rtype, version, updated)
        meta = updated["metadata"]
        if _spec_part(updated, rtype) != _spec_part(current, rtype):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        if updated == current:
            return self._shown(rtype, version, updated)  # a no-op keeps its resourceVersion
        self._on_update(rtype, current, updated)
        if dry_run:
            return self._shown(rtype, version, updated)
        meta["resourceVersion"] = self.store.next_rv()
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._finally_delete(rtype, updated)
        else:
            self.store.put(rtype.key, updated, "MODIFIED")
        return self._shown(rtype, version, updated)

    def delete(
        self,
        rtype: ResourceType,
        version: str,
        namespace: str | None,
        name: str,
        options: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        current = self._require(rtype, namespace, name)
        meta = current["metadata"]
        preconditions = (options or {}).get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            wanted = preconditions.get(field)
            if wanted and wanted != meta.get(field):
                raise ApiError(
                    409, "Conflict",
                    f"Precondition failed: {field} in precondition: {wanted}, "
                    f"{field} in object meta: {meta.get(field)}",
                )
        if dry_run or meta.get("deletionTimestamp"):
            return self._shown(rtype, version, current)
        if meta.get("finalizers"):
            meta["deletionTimestamp"] = now_rfc3339()
            meta["deletionGracePeriodSeconds"] = 0
            meta["resourceVersion"] = self.store.next_rv()
            self.store.put(rtype.key, current, "MODIFIED")
            return self._shown(rtype, version, current)
        meta["resourceVersion"] = self.store.next_rv()
        self._finally_delete(rtype, current)
        return self._shown(rtype, version, current)

    def delete_collection(
        self,
        rtype: ResourceType,
        version: str,
        namespace: str | None,
        matches: Matcher,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        listed = self.list(rtype, version, namespace, matches)
        for obj in listed["items"]:
            meta = obj["metadata"]
            self.delete(rtype, version, meta.get("namespace"), meta["name"], dry_run=dry_run)
        return listed

    def _finally_delete(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        self.store.remove(rtype.key, obj)
        self._on_delete(rtype, obj)

    # -- side effects of built-in types -----------------------------------------------------

    def _on_create(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        if rtype.key == (CRD_GROUP, "customresourcedefinitions"):
            served = self._serve_crd(obj)
            obj["status"] = self._crd_status(obj, served)
        elif rtype.key == ("", "namespaces"):
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
            labels = obj["metadata"].setdefault("labels", {})
            labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]

    def _on_update(self, rtype: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> None:
        if rtype.key == (CRD_GROUP, "customresourcedefinitions") and old.get("spec") != new.get(
            "spec"
        ):
            served = self._serve_crd(new, replacing=old)
            new["status"] = self._crd_status(new, served)

    def _on_delete(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        if rtype.key == (CRD_GROUP, "customresourcedefinitions"):
            spec = obj.get("spec") or {}
            key = (spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
            gone = self.registry.remove(key)
            if gone is not None:
                for item in self.store.items(key):
                    item["metadata"]["resourceVersion"] = self.store.next_rv()
                    self.store.remove(key, item)
        elif rtype.key == ("", "namespaces"):
            name = obj["metadata"]["name"]
            for served in self.registry.all():
                if not served.namespaced:
                    continue
                for item in self.store.items(served.key, name):
                    item_meta = item["metadata"]
                    if not item_meta.get("deletionTimestamp"):
                        self.delete(served, served.versions[0], name, item_meta["name"])

    def _serve_crd(
        self, crd: dict[str, Any], replacing: dict[str, Any] | None = None
    ) -> ResourceType:
        rtype = crd_to_type(crd)
        existing = self.registry.lookup_key(rtype.key)
        if existing is not None and existing.builtin:
            raise errors.invalid(CRD_GROUP, "CustomResourceDefinition", crd["metadata"]["name"], [
                ("spec.group", f'Invalid value: "{rtype.group}": is a built-in group')])
        if replacing is not None:
            old_type = crd_to_type(replacing)
            if old_type.key != rtype.key:
                raise errors.invalid(
                    CRD_GROUP, "CustomResourceDefinition", crd["metadata"]["name"],
                    [("spec.names.plural", "Invalid value: field is immutable")],
                )
        self.registry.add(rtype)
        return rtype

    @staticmethod
    def _crd_status(crd: dict[str, Any], rtype: ResourceType) -> dict[str, Any]:
        now = now_rfc3339()
        spec = crd["spec"]
        storage = [v["name"] for v in spec["versions"] if v.get("storage")]
        accepted = dict(spec["names"])
        accepted.setdefault("singular", rtype.singular)
        accepted.setdefault("listKind", rtype.list_kind)
        return {
            "acceptedNames": accepted,
            "storedVersions": storage,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
        }
