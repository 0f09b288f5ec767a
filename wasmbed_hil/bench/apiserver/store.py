"""The object store: objects by resource type, the global resourceVersion counter, the
retained event history and the live watch subscriptions.

Everything runs on one asyncio loop, so a change, its history entry and its delivery to every
subscriber happen in one step: a watcher registered between two changes misses nothing.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import gone
from .jsoncopy import json_copy

Key = tuple[str, str]  # (group, plural)
ObjectKey = tuple[str, str]  # (namespace or "", name)

DEFAULT_HISTORY = 1000


@dataclass(frozen=True)
class Change:
    """One stored change: ADDED, MODIFIED or DELETED, with the object before it (MODIFIED)."""

    rv: int
    key: Key
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None = None


class Subscription:
    """A watcher's changes of one resource type, not yet taken; ``None`` marks the store
    closing. `take` hands over everything queued at once (a watch writes it as one batch)."""

    def __init__(self, store: Store, key: Key) -> None:
        self.key = key
        self._pending: deque[Change | None] = deque()
        self._ready = asyncio.Event()
        self._store = store

    def put(self, change: Change | None) -> None:
        self._pending.append(change)
        self._ready.set()

    def empty(self) -> bool:
        return not self._pending

    async def wait(self) -> None:
        """Until something is queued."""
        await self._ready.wait()

    def take(self, limit: int) -> list[Change | None]:
        """Up to `limit` queued changes, oldest first."""
        pending = self._pending
        taken = [pending.popleft() for _ in range(min(limit, len(pending)))]
        if not pending:
            self._ready.clear()
        return taken

    def close(self) -> None:
        self._store._subscriptions.discard(self)


def object_key(obj: dict[str, Any]) -> ObjectKey:
    metadata = obj["metadata"]
    return (metadata.get("namespace") or "", metadata["name"])


class Store:
    def __init__(self, history_limit: int = DEFAULT_HISTORY) -> None:
        if history_limit < 1:
            raise ValueError("history_limit must be at least 1")
        self.rv = 0
        self.compacted_rv = 0  # changes with rv <= this are no longer retained
        self._objects: dict[Key, dict[ObjectKey, dict[str, Any]]] = {}
        self._history: deque[Change] = deque()
        self._history_limit = history_limit
        self._subscriptions: set[Subscription] = set()
        self.closed = False

    # -- objects ----------------------------------------------------------------------------

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def get(self, key: Key, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self._objects.get(key, {}).get((namespace, name))
        return json_copy(obj) if obj is not None else None

    def items(self, key: Key, namespace: str | None = None) -> list[dict[str, Any]]:
        """Copies of the stored objects ordered by (namespace, name); None: all namespaces."""
        bucket = self._objects.get(key, {})
        return [
            json_copy(bucket[k])
            for k in sorted(bucket)
            if namespace is None or k[0] == namespace
        ]

    def iter_keys(self, key: Key) -> Iterator[ObjectKey]:
        return iter(sorted(self._objects.get(key, {})))

    def put(self, key: Key, obj: dict[str, Any], change_type: str) -> None:
        """Store ``obj`` (its resourceVersion already set by next_rv) and record the change."""
        bucket = self._objects.setdefault(key, {})
        okey = object_key(obj)
        old = bucket.get(okey)
        bucket[okey] = json_copy(obj)
        self._record(Change(int(obj["metadata"]["resourceVersion"]), key, change_type,
                            json_copy(obj), old))

    def remove(self, key: Key, obj: dict[str, Any]) -> None:
        """Remove the object and record DELETED with ``obj`` (carrying its final version)."""
        okey = object_key(obj)
        old = self._objects.get(key, {}).pop(okey, None)
        self._record(Change(int(obj["metadata"]["resourceVersion"]), key, "DELETED",
                            json_copy(obj), old))

    def drop_type(self, key: Key) -> list[dict[str, Any]]:
        """Forget a resource type's objects without events (its CRD went away)."""
        return list(self._objects.pop(key, {}).values())

    # -- history and watches ----------------------------------------------------------------

    def _record(self, change: Change) -> None:
        self._history.append(change)
        while len(self._history) > self._history_limit:
            self.compacted_rv = self._history.popleft().rv
        for subscription in list(self._subscriptions):
            if subscription.key == change.key:
                subscription.put(change)

    def compact(self) -> None:
        """Forget the whole history, as an etcd compaction does: older versions give 410."""
        self._history.clear()
        self.compacted_rv = self.rv

    def subscribe(self, key: Key, since: int | None) -> tuple[list[Change], Subscription]:
        """Changes of ``key`` after ``since`` still retained, and a subscription for later ones.

        ``since`` None means "from now". Raises 410 Gone when ``since`` is older than the
        retained history.
        """
        replay: list[Change] = []
        if since is not None:
            if since < self.compacted_rv:
                raise gone(f"too old resource version: {since} ({self.compacted_rv + 1})")
            replay = [c for c in self._history if c.rv > since and c.key == key]
        subscription = Subscription(self, key)
        self._subscriptions.add(subscription)
        return replay, subscription

    def close(self) -> None:
        """End every watch: each subscriber gets the closing marker."""
        self.closed = True
        for subscription in list(self._subscriptions):
            subscription.put(None)
        self._subscriptions.clear()
