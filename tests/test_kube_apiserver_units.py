"""Unit tests of the emulated API server's parts: selectors, patches, schema, watch history."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from wasmbed_hil.bench.apiserver.errors import ApiError
from wasmbed_hil.bench.apiserver.jsoncopy import json_copy
from wasmbed_hil.bench.apiserver.objects import ObjectApi
from wasmbed_hil.bench.apiserver.patch import apply_patch, json_patch, merge_patch
from wasmbed_hil.bench.apiserver.registry import Registry, crd_to_type
from wasmbed_hil.bench.apiserver.schema import prune_and_default, validate
from wasmbed_hil.bench.apiserver.selectors import object_filter, parse_label_selector
from wasmbed_hil.bench.apiserver.store import Store
from wasmbed_hil.bench.apiserver.watch import MAX_BATCH, watch_batches, watch_events

# -- selectors -------------------------------------------------------------------------------


def _obj(labels: dict[str, str], name: str = "x", namespace: str = "ns") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels}}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", {}, True),
        ("app=a", {"app": "a"}, True),
        ("app==a", {"app": "b"}, False),
        ("app!=a", {}, True),
        ("app!=a", {"app": "a"}, False),
        ("app in (a, b)", {"app": "b"}, True),
        ("app in (a,b)", {}, False),
        ("app notin (a,b)", {}, True),
        ("app notin (a,b)", {"app": "a"}, False),
        ("app", {"app": ""}, True),
        ("!app", {"app": "x"}, False),
        ("!app", {"tier": "x"}, True),
        ("app in (a,b),tier=web,!legacy", {"app": "a", "tier": "web"}, True),
        ("app in (a,b),tier=web,!legacy", {"app": "a", "tier": "web", "legacy": "1"}, False),
        ("example.com/role=edge", {"example.com/role": "edge"}, True),
    ],
)
def test_label_selector(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert object_filter(selector, None)(_obj(labels)) is expected


@pytest.mark.parametrize("bad", ["app in (a", "app=)", "=a", "app in a", "a,,b", "app=a b"])
def test_label_selector_syntax_errors_are_400(bad: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_label_selector(bad)
    assert info.value.code == 400


def test_field_selector_name_namespace_and_unsupported() -> None:
    supported = ("metadata.name", "metadata.namespace")
    assert object_filter(None, "metadata.name=x", supported)(_obj({}, "x"))
    assert not object_filter(None, "metadata.name!=x", supported)(_obj({}, "x"))
    assert object_filter(None, "metadata.namespace==ns,metadata.name=x", supported)(_obj({}))
    with pytest.raises(ApiError) as info:
        object_filter(None, "spec.size=1", supported)
    assert info.value.code == 400 and "not supported" in info.value.message
    assert object_filter(None, "spec.size=1", None)({"metadata": {}, "spec": {"size": 1}})


# -- patches ---------------------------------------------------------------------------------


def test_merge_patch_rfc7386() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}
    patch = {"a": "z", "c": {"f": None, "n": 1}, "l": [3]}
    assert merge_patch(target, patch) == {"a": "z", "c": {"d": "e", "n": 1}, "l": [3]}
    assert target["c"] == {"d": "e", "f": "g"}  # input untouched


def test_json_patch_operations() -> None:
    doc = {"metadata": {"resourceVersion": "5", "finalizers": ["a"]}, "spec": {"x": 1}}
    result = json_patch(doc, [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "5"},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "b"},
        {"op": "replace", "path": "/spec/x", "value": 2},
        {"op": "copy", "from": "/spec/x", "path": "/spec/y"},
        {"op": "move", "from": "/spec/y", "path": "/spec/z"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
        {"op": "add", "path": "/spec/a~1b", "value": True},
    ])
    assert result == {
        "metadata": {"resourceVersion": "5", "finalizers": ["b"]},
        "spec": {"x": 2, "z": 2, "a/b": True},
    }
    assert doc["spec"] == {"x": 1}


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "test", "path": "/metadata/resourceVersion", "value": "4"}],
        [{"op": "test", "path": "/spec/x", "value": True}],  # 1 is not true in JSON
        [{"op": "remove", "path": "/spec/missing"}],
        [{"op": "replace", "path": "/nope/x", "value": 1}],
        [{"op": "add", "path": "/metadata/finalizers/5", "value": "x"}],
    ],
)
def test_json_patch_failures_are_422(ops: list[dict[str, Any]]) -> None:
    doc = {"metadata": {"resourceVersion": "5", "finalizers": []}, "spec": {"x": 1}}
    with pytest.raises(ApiError) as info:
        json_patch(doc, ops)
    assert info.value.code == 422 and info.value.reason == "Invalid"


def test_patch_dispatch_on_content_type() -> None:
    assert apply_patch({"a": 1}, "application/strategic-merge-patch+json", {"b": 2}) == {
        "a": 1, "b": 2}
    with pytest.raises(ApiError) as info:
        apply_patch({}, "application/yaml", {})
    assert info.value.code == 415
    with pytest.raises(ApiError) as info:
        json_patch({}, {"op": "add"})
    assert info.value.code == 400


# -- schema ----------------------------------------------------------------------------------

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
                "ports": {"type": "array", "maxItems": 2, "items": {"type": "integer"}},
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "ratio": {"type": "number"},
                "port": {"x-kubernetes-int-or-string": True},
                "note": {"type": "string", "nullable": True},
            },
        },
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}


def test_schema_accepts_valid_and_prunes_and_defaults() -> None:
    obj = {
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"size": 3, "unknown": 1, "free": {"any": {"thing": 1}}, "ratio": 1,
                 "port": "http", "note": None, "env": {"A": "b"}},
        "junk": True,
    }
    pruned = prune_and_default(SCHEMA, obj)
    assert "junk" not in pruned and "unknown" not in pruned["spec"]
    assert pruned["spec"]["color"] == "red"
    assert pruned["spec"]["free"] == {"any": {"thing": 1}}
    assert pruned["metadata"] == {"name": "w"} and pruned["kind"] == "Widget"
    assert validate(SCHEMA, pruned) == []


def test_schema_reports_every_field_error() -> None:
    obj = {"spec": {"color": "pink", "name": "ABC", "ports": [1, "x", 3],
                    "env": {"A": 1}, "port": 1.5}}
    errors = dict(validate(SCHEMA, obj))
    assert errors["spec.size"] == "Required value"
    assert errors["spec.color"].startswith('Unsupported value: "pink"')
    assert "should match" in errors["spec.name"]
    assert "must be of type integer" in errors["spec.ports[1]"]
    assert "at most 2 items" in errors["spec.ports"]
    assert "must be of type string" in errors["spec.env.A"]
    assert "integer or string" in errors["spec.port"]
    assert "less than or equal to 10" in dict(validate(SCHEMA, {"spec": {"size": 11}}))[
        "spec.size"]
    assert "must be of type integer" in dict(validate(SCHEMA, {"spec": {"size": True}}))[
        "spec.size"]


def test_crd_checks() -> None:
    with pytest.raises(ApiError) as info:
        crd_to_type({"metadata": {"name": "bad"}, "spec": {"group": "example.com"}})
    fields = {c["field"] for c in info.value.details["causes"]}
    assert {"spec.names.plural", "spec.names.kind", "spec.scope", "spec.versions"} <= fields


# -- store, watch history, 410 ---------------------------------------------------------------

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{"name": "v1", "served": True, "storage": True,
                      "subresources": {"status": {}},
                      "schema": {"openAPIV3Schema": SCHEMA}}],
    },
}


def _api(history: int = 1000) -> ObjectApi:
    api = ObjectApi(Store(history), Registry())
    crds = api.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    api.create(crds, "v1", None, WIDGET_CRD)
    return api


def _widget(name: str, size: int = 1, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": name, "labels": labels}, "spec": {"size": size}}


async def _collect(events: Any, count: int) -> list[dict[str, Any]]:
    seen = []
    async for event in events:
        seen.append(event)
        if len(seen) == count:
            break
    await events.aclose()
    return seen


def test_object_semantics_generation_status_finalizers() -> None:
    api = _api()
    widgets = api.registry.lookup("example.com", "v1", "widgets")
    created = api.create(widgets, "v1", "default", {**_widget("w"), "status": {"x": 1}})
    meta = created["metadata"]
    assert meta["generation"] == 1 and "status" not in created and meta["uid"]
    patched = api.patch(widgets, "v1", "default", "w", "application/merge-patch+json",
                        {"metadata": {"labels": {"a": "b"}}, "status": {"y": 1}})
    assert patched["metadata"]["generation"] == 1 and "status" not in patched
    assert int(patched["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    status = api.patch(widgets, "v1", "default", "w", "application/merge-patch+json",
                       {"spec": {"size": 9}, "status": {"phase": "Ready"}}, status=True)
    assert status["spec"]["size"] == 1 and status["status"] == {"phase": "Ready"}
    assert status["metadata"]["generation"] == 1
    same = api.patch(widgets, "v1", "default", "w", "application/merge-patch+json", {})
    assert same["metadata"]["resourceVersion"] == status["metadata"]["resourceVersion"]
    bumped = api.patch(widgets, "v1", "default", "w", "application/merge-patch+json",
                       {"spec": {"size": 2}, "metadata": {"finalizers": ["f"]}})
    assert bumped["metadata"]["generation"] == 2
    with pytest.raises(ApiError) as info:
        api.replace(widgets, "v1", "default", "w", created)  # stale resourceVersion
    assert info.value.code == 409 and info.value.reason == "Conflict"
    deleting = api.delete(widgets, "v1", "default", "w")
    assert deleting["metadata"]["deletionTimestamp"]
    assert api.get(widgets, "v1", "default", "w")["metadata"]["finalizers"] == ["f"]
    with pytest.raises(ApiError):
        api.patch(widgets, "v1", "default", "w", "application/merge-patch+json",
                  {"metadata": {"finalizers": ["f", "g"]}})
    api.patch(widgets, "v1", "default", "w", "application/merge-patch+json",
              {"metadata": {"finalizers": None}})
    with pytest.raises(ApiError) as info:
        api.get(widgets, "v1", "default", "w")
    assert info.value.code == 404


def test_list_pagination_and_selectors() -> None:
    api = _api()
    widgets = api.registry.lookup("example.com", "v1", "widgets")
    for index in range(5):
        api.create(widgets, "v1", "default", _widget(f"w{index}", tier="a" if index % 2 else "b"))
    everything = object_filter(None, None)
    names, token = [], None
    while True:
        page = api.list(widgets, "v1", "default", everything, 2, token)
        names += [o["metadata"]["name"] for o in page["items"]]
        token = page["metadata"].get("continue")
        if not token:
            break
    assert names == [f"w{i}" for i in range(5)]
    selected = api.list(widgets, "v1", None, object_filter("tier=a", None))
    assert [o["metadata"]["name"] for o in selected["items"]] == ["w1", "w3"]


def test_watch_replays_history_and_gives_410_when_compacted() -> None:
    async def scenario() -> None:
        api = _api(history=3)
        widgets = api.registry.lookup("example.com", "v1", "widgets")
        start = api.store.rv
        api.create(widgets, "v1", "default", _widget("a"))
        api.patch(widgets, "v1", "default", "a", "application/merge-patch+json",
                  {"spec": {"size": 2}})
        api.delete(widgets, "v1", "default", "a")
        everything = object_filter(None, None)
        events = await _collect(watch_events(api.store, widgets, "v1", None, everything,
                                             str(start), timeout=5), 3)
        assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
        api.create(widgets, "v1", "default", _widget("b"))  # evicts the oldest change
        expired = await _collect(watch_events(api.store, widgets, "v1", None, everything,
                                              str(start), timeout=5), 1)
        assert expired[0]["type"] == "ERROR" and expired[0]["object"]["code"] == 410
        initial = await _collect(watch_events(api.store, widgets, "v1", None, everything, "0",
                                              timeout=5), 1)
        assert initial[0]["type"] == "ADDED" and initial[0]["object"]["metadata"]["name"] == "b"
        api.store.compact()
        expired = await _collect(watch_events(api.store, widgets, "v1", None, everything,
                                              str(api.store.rv - 1), timeout=5), 1)
        assert expired[0]["object"]["reason"] == "Expired"

    asyncio.run(scenario())


def test_watch_selector_transitions_and_bookmarks() -> None:
    async def scenario() -> None:
        api = _api()
        widgets = api.registry.lookup("example.com", "v1", "widgets")
        api.create(widgets, "v1", "default", _widget("a", tier="x"))
        events = watch_events(api.store, widgets, "v1", "default", object_filter("tier=y", None),
                              str(api.store.rv), bookmarks=True, timeout=5,
                              bookmark_interval=0.05)
        first = asyncio.ensure_future(events.__anext__())  # replays from the version above
        api.patch(widgets, "v1", "default", "a", "application/merge-patch+json",
                  {"metadata": {"labels": {"tier": "y"}}})
        assert (await asyncio.wait_for(first, 5))["type"] == "ADDED"
        api.patch(widgets, "v1", "default", "a", "application/merge-patch+json",
                  {"metadata": {"labels": {"tier": "z"}}})
        assert (await asyncio.wait_for(events.__anext__(), 5))["type"] == "DELETED"
        mark = await asyncio.wait_for(events.__anext__(), 5)
        assert mark["type"] == "BOOKMARK"
        assert mark["object"]["metadata"]["resourceVersion"] == str(api.store.rv)
        api.store.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(events.__anext__(), 5)

    asyncio.run(scenario())


def test_changes_queued_for_a_watcher_come_in_one_batch_in_order() -> None:
    """A watcher that resumes after many changes gets them in one batch (one write), in
    order, never more than MAX_BATCH at once."""
    async def scenario() -> None:
        api = _api(history=10_000)
        widgets = api.registry.lookup("example.com", "v1", "widgets")
        batches = watch_batches(api.store, widgets, "v1", None, object_filter("tier=a", None),
                                str(api.store.rv), timeout=5)
        first = asyncio.ensure_future(batches.__anext__())
        await asyncio.sleep(0)  # the watcher subscribes and waits
        count = MAX_BATCH + 10
        for i in range(count):  # no turn of the loop in between
            api.create(widgets, "v1", "default", _widget(f"w{i}", tier="a" if i % 2 else "b"))
        one = await asyncio.wait_for(first, 5)
        two = await asyncio.wait_for(batches.__anext__(), 5)
        names = [e["object"]["metadata"]["name"] for e in one + two]
        assert names == [f"w{i}" for i in range(count) if i % 2]  # the filter still applies
        assert len(one) == MAX_BATCH // 2 and len(two) == (count - MAX_BATCH) // 2
        api.store.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(batches.__anext__(), 5)

    asyncio.run(scenario())


def test_pruning_never_touches_root_metadata_even_if_the_schema_names_it() -> None:
    from wasmbed_hil.bench.apiserver.schema import prune_and_default

    schema = {"type": "object", "properties": {"metadata": {"type": "object"},
                                               "spec": {"type": "object"}}}
    obj = {"apiVersion": "g/v1", "kind": "K", "metadata": {"name": "n", "labels": {"a": "b"}},
           "spec": {"unknown": 1}}
    pruned = prune_and_default(schema, obj)
    assert pruned["metadata"] == {"name": "n", "labels": {"a": "b"}}
    assert pruned["spec"] == {}  # below the root, unknown fields still go


def test_json_copy_is_a_deep_copy() -> None:
    doc = {"a": [1, 2.5, {"b": None, "c": True}], "d": {"e": "f"}, "t": (1, [2])}
    copied = json_copy(doc)
    assert copied == doc and copied is not doc
    assert copied["a"] is not doc["a"] and copied["a"][2] is not doc["a"][2]
    assert copied["t"][1] is not doc["t"][1]  # anything else: copy.deepcopy
    copied["a"][2]["b"] = 1
    copied["d"]["e"] = "g"
    assert doc["a"][2]["b"] is None and doc["d"]["e"] == "f"
