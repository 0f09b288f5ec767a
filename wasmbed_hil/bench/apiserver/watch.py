"""Watch streams: the events a watcher receives, from its resourceVersion on.

Starting from "0" or no resourceVersion gives a synthetic ADDED for every existing object
(what kube-apiserver does); starting from a retained version replays the changes after it;
an older version gives one ERROR event with a 410 Expired Status. Selectors are applied to
both sides of a change, so an object moving into the selection arrives as ADDED and one
moving out as DELETED. BOOKMARK events carry the current resourceVersion when asked for;
``sendInitialEvents`` (watch-list) ends the initial ADDED events with a marked BOOKMARK.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from .errors import ApiError, bad_request
from .registry import ResourceType
from .store import Change, Store

Matcher = Callable[[dict[str, Any]], bool]
Event = dict[str, Any]


def _in_scope(obj: dict[str, Any] | None, namespace: str | None, matches: Matcher) -> bool:
    if obj is None:
        return False
    if namespace and (obj.get("metadata") or {}).get("namespace") != namespace:
        return False
    return matches(obj)


def event_for(change: Change, namespace: str | None, matches: Matcher) -> tuple[str, Any] | None:
    """The (type, object) a watcher with this scope sees for a change, or None."""
    now = _in_scope(change.obj, namespace, matches)
    if change.type == "ADDED":
        return ("ADDED", change.obj) if now else None
    if change.type == "DELETED":
        return ("DELETED", change.obj) if _in_scope(change.old or change.obj, namespace,
                                                    matches) else None
    before = _in_scope(change.old, namespace, matches)
    if now and before:
        return ("MODIFIED", change.obj)
    if now:
        return ("ADDED", change.obj)
    if before:
        return ("DELETED", change.obj)
    return None


def parse_resource_version(value: str | None) -> int | None:
    """None for "from now with the current state" ("" or "0"), else the integer version."""
    if value in (None, "", "0"):
        return None
    try:
        number = int(value)
    except ValueError as exc:
        raise bad_request(f"invalid resource version: {value!r}") from exc
    if number < 0:
        raise bad_request(f"invalid resource version: {value!r}")
    return number


#: The most changes one watch batch carries (one write to the stream).
MAX_BATCH = 256


async def watch_events(
    store: Store,
    rtype: ResourceType,
    version: str,
    namespace: str | None,
    matches: Matcher,
    resource_version: str | None,
    *,
    bookmarks: bool = False,
    timeout: float | None = None,
    bookmark_interval: float = 60.0,
    send_initial_events: bool = False,
) -> AsyncIterator[Event]:
    """Yield watch events until the timeout, the store closing, or a 410 (its last event):
    the events of `watch_batches`, one at a time."""
    batches = watch_batches(store, rtype, version, namespace, matches, resource_version,
                            bookmarks=bookmarks, timeout=timeout,
                            bookmark_interval=bookmark_interval,
                            send_initial_events=send_initial_events)
    try:
        async for batch in batches:
            for event in batch:
                yield event
    finally:
        await batches.aclose()


async def watch_batches(
    store: Store,
    rtype: ResourceType,
    version: str,
    namespace: str | None,
    matches: Matcher,
    resource_version: str | None,
    *,
    bookmarks: bool = False,
    timeout: float | None = None,
    bookmark_interval: float = 60.0,
    send_initial_events: bool = False,
) -> AsyncIterator[list[Event]]:
    """Watch events in batches: every change already queued for this watcher when it
    resumes (up to MAX_BATCH) comes in one batch, which the server writes to the stream at
    once. One event per turn of the loop fell behind at 1,000 devices: on a busy loop a
    watcher was served once per turn while many changes were made per turn, and its backlog
    grew until the stream's timeout and a re-list (its changes had left the history)."""
    api_version = rtype.api_version(version)

    def shown(obj: dict[str, Any]) -> dict[str, Any]:
        obj = dict(obj)
        obj["apiVersion"] = api_version
        return obj

    def seen_as_event(change: Change) -> Event | None:
        seen = event_for(change, namespace, matches)
        return {"type": seen[0], "object": shown(seen[1])} if seen else None

    since = parse_resource_version(resource_version)
    if send_initial_events:  # a watch-list request: the current state, then a marked bookmark
        since = None
    try:
        replay, subscription = store.subscribe(rtype.key, since)
    except ApiError as exc:
        yield [{"type": "ERROR", "object": exc.body()}]
        return
    try:
        first: list[Event] = []
        if since is None:
            first = [{"type": "ADDED", "object": shown(obj)}
                     for obj in store.items(rtype.key, namespace or None) if matches(obj)]
        if send_initial_events:
            end = bookmark(rtype, version, store.rv)
            end["object"]["metadata"]["annotations"] = {"k8s.io/initial-events-end": "true"}
            first.append(end)
        first += [e for e in map(seen_as_event, replay) if e is not None]
        if first:
            yield first
        deadline = None if timeout is None else time.monotonic() + timeout
        while not store.closed:
            if subscription.empty():
                wait = bookmark_interval if bookmarks else None
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    wait = left if wait is None else min(wait, left)
                try:
                    await asyncio.wait_for(subscription.wait(), wait)
                except TimeoutError:
                    if bookmarks and subscription.empty():
                        yield [bookmark(rtype, version, store.rv)]
                    continue
            elif deadline is not None and time.monotonic() >= deadline:
                return
            batch: list[Event] = []
            for change in subscription.take(MAX_BATCH):
                if change is None:  # the store closes: what came before it still goes
                    if batch:
                        yield batch
                    return
                event = seen_as_event(change)
                if event is not None:
                    batch.append(event)
            if batch:
                yield batch
    finally:
        subscription.close()


def bookmark(rtype: ResourceType, version: str, rv: int) -> Event:
    return {
        "type": "BOOKMARK",
        "object": {
            "kind": rtype.kind,
            "apiVersion": rtype.api_version(version),
            "metadata": {"resourceVersion": str(rv)},
        },
    }
