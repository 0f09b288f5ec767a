"""Unit tests of the gateway's and virtual device's parts: cache, flash, waits, config, loop."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from wasmbed_hil.bench.loop import LoopThread
from wasmbed_hil.bench.virtual.flash import Flash, InstalledApp
from wasmbed_hil.gateway import EventLog, GatewayConfig, GatewayStore, StoredResult, WaitTimeout
from wasmbed_hil.gateway.store import MAX_RUN_ID, RunIdsExhausted, RunRecord
from wasmbed_hil.pki import VerifiedCrl
from wasmbed_hil.protocol import Outcome


def _result(run_id: int, values=(1,)) -> StoredResult:
    return StoredResult("dev", "app", run_id, Outcome.RETURNED, values, b"log", 10, 20, "", 1.0)


def test_store_keeps_enrollments_and_results_across_reopen(tmp_path):
    path = tmp_path / "gw.sqlite3"
    store = GatewayStore(path)
    dev, new = store.enroll("identity-a", "a")
    again, new_again = store.enroll("identity-a", "a")
    assert new and not new_again and again == dev
    assert store.add_result(_result(7, (1, -2, 3.5)))
    assert not store.add_result(_result(7))  # the same run twice is one result
    store.revoke("identity-b")
    store.close()
    reopened = GatewayStore(path)
    assert reopened.by_identity("identity-a") == dev
    assert reopened.by_id(dev.device_id) == dev
    assert [r.values for r in reopened.results("dev")] == [(1, -2, 3.5)]
    assert "identity-b" in reopened.revoked
    reopened.close()


def test_run_ids_come_from_a_kept_counter_per_device_and_never_repeat(tmp_path):
    path = tmp_path / "gw.sqlite3"
    store = GatewayStore(path)
    assert store.add_result(_result(7))  # written by a gateway without counters
    assert [store.new_run("dev", "app") for _ in range(2)] == [8, 9]  # above what it holds
    assert store.new_run("other", "app") == 1  # each device counts for itself
    assert store.run_record("dev", "app", 8) is RunRecord.STARTED
    assert store.run_record("dev", "x", 8) is RunRecord.UNKNOWN
    assert store.run_record("dev", "app", 7) is RunRecord.UNKNOWN
    assert store.run_record("other", "app", 8) is RunRecord.UNKNOWN
    assert store.add_result(_result(MAX_RUN_ID))  # results never move the counter
    store.close()
    reopened = GatewayStore(path)
    assert reopened.new_run("dev", "app") == 10  # the counter survives a restart
    assert reopened.run_record("dev", "app", 9) is RunRecord.STARTED
    reopened.close()


def test_run_records_beyond_the_bound_are_dropped_and_remembered_as_forgotten(tmp_path):
    path = tmp_path / "gw.sqlite3"
    store = GatewayStore(path)
    ids = [store.new_run("dev", "app", keep=3) for _ in range(5)]
    other = store.new_run("dev", "other", keep=3)  # each application is bounded for itself
    assert ids == [1, 2, 3, 4, 5] and other == 6
    assert store.run_count("dev", "app") == 3
    assert [store.run_record("dev", "app", i) for i in ids] == [
        RunRecord.FORGOTTEN, RunRecord.FORGOTTEN, RunRecord.STARTED, RunRecord.STARTED,
        RunRecord.STARTED]
    assert store.run_record("dev", "app", 6) is RunRecord.UNKNOWN  # another app's run
    assert store.run_record("dev", "other", 1) is RunRecord.UNKNOWN
    store.close()
    reopened = GatewayStore(path)
    assert reopened.run_record("dev", "app", 2) is RunRecord.FORGOTTEN  # kept across restarts
    assert reopened.new_run("dev", "app") == 7  # keep=0: no bound
    assert reopened.run_count("dev", "app") == 4
    reopened.close()


def test_results_beyond_the_cap_drop_the_oldest_of_that_device_and_app(tmp_path):
    store = GatewayStore(tmp_path / "gw.sqlite3")
    for run_id in range(1, 6):
        assert store.add_result(replace(_result(run_id), received_at=float(10 - run_id % 2)))
    assert store.add_result(replace(_result(9), device_id="dev2"))
    assert store.add_result(replace(_result(9), app_id="app2"))
    assert store.trim_results("dev", "app", 2) == 3
    # kept: the two received last (received_at 10.0 for runs 2 and 4; ties: the higher run)
    assert [r.run_id for r in store.results("dev", "app")] == [2, 4]
    assert len(store.results()) == 4  # other devices and apps keep theirs
    assert store.trim_results("dev", "app", 2) == 0
    assert not store.add_result(_result(4))  # a repeat is still a repeat
    assert store.add_result(_result(6))
    assert store.trim_results("dev", "app", 0) == 0  # 0: no cap
    assert [r.run_id for r in store.results("dev", "app")] == [6, 2, 4]
    store.close()
    with pytest.raises(ValueError, match="max_results_per_app"):
        GatewayConfig(max_results_per_app=-1)


def test_a_device_whose_run_ids_are_used_up_gets_no_repeated_one(tmp_path):
    store = GatewayStore(tmp_path / "gw.sqlite3")
    store.add_result(_result(MAX_RUN_ID - 1))
    assert store.new_run("dev", "app") == MAX_RUN_ID
    with pytest.raises(RunIdsExhausted, match="every run id"):
        store.new_run("dev", "app")
    assert store.new_run("dev2", "app") == 1
    store.close()


def test_flash_tracks_partial_modules_and_verifies_digests(tmp_path):
    flash = Flash(tmp_path)
    data = b"\x00asm" + bytes(range(200))
    digest = hashlib.sha256(data).digest()
    assert flash.partial_size(digest) == 0
    assert flash.append_partial(digest, 0, data[:100]) == 100
    with pytest.raises(ValueError, match="holds 100"):
        flash.append_partial(digest, 50, data[50:])  # not contiguous
    assert Flash(tmp_path).partial_size(digest) == 100  # survives a "reboot"
    flash.append_partial(digest, 100, data[100:])
    assert flash.finish_partial(digest)
    assert flash.read_module(digest) == data
    wrong = hashlib.sha256(b"other").digest()
    flash.append_partial(wrong, 0, data)
    assert not flash.finish_partial(wrong)
    assert not flash.has_module(wrong) and flash.partial_size(wrong) == 0


def test_flash_keeps_device_id_and_apps_and_survives_garbage(tmp_path):
    flash = Flash(tmp_path)
    assert flash.device_id is None
    flash.device_id = bytes(range(16))
    app = InstalledApp("a", b"\x01" * 32, "name", (1, 2, 3))
    flash.save_apps({"a": app})
    again = Flash(tmp_path)
    assert again.device_id == bytes(range(16))
    assert again.apps() == {"a": app}
    (tmp_path / "state.json").write_text("{not json")
    (tmp_path / "apps.json").write_text("[1, 2]")
    assert again.device_id is None
    assert again.apps() == {}


def test_event_wait_returns_on_the_event_and_times_out_with_what_was_seen():
    async def scenario() -> None:
        log = EventLog()
        async def producer() -> None:
            await asyncio.sleep(0)
            log.emit("phase", "dev", phase="Connected")

        task = asyncio.create_task(producer())
        event = await log.wait_for(lambda: log.events("phase"), 5, "a phase")
        assert event[0].data == {"phase": "Connected"}
        await task
        with pytest.raises(WaitTimeout, match=r"waiting for never.*phase=Connected"):
            await log.wait_for(lambda: None, 0.05, "never")

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "overrides",
    [
        {"heartbeat_interval_s": 5, "heartbeat_timeout_s": 5},
        {"max_frame_size": 100},
        {"frame_timeout_s": 0},
        {"hello_timeout_s": -1},
    ],
)
def test_config_refuses_inconsistent_settings(overrides):
    with pytest.raises(ValueError):
        GatewayConfig.for_tests(**overrides)


def test_upstream_defaults():
    config = GatewayConfig()
    assert (config.heartbeat_interval_s, config.heartbeat_timeout_s) == (30.0, 90.0)
    assert config.pairing is False and config.pairing_timeout_s == 300.0
    assert config.max_devices == 100


def test_loop_thread_runs_coroutines_and_joins_on_close():
    loop = LoopThread("test-loop")

    async def answer() -> int:
        return threading.get_ident()

    ident = loop.run(answer())
    assert ident != threading.get_ident()

    async def forever() -> None:
        await asyncio.Event().wait()

    # asyncio keeps only weak references to tasks: hold the stray one, or a garbage
    # collection between here and close() could destroy it while pending.
    stray: list[asyncio.Task[None]] = []
    loop.loop.call_soon_threadsafe(
        lambda: stray.append(loop.loop.create_task(forever(), name="stray")))
    loop.call(lambda: None)  # the stray task has been created by now
    assert loop.close() == ["stray"]
    assert not loop.alive

    async def boom() -> None:
        raise KeyError("x")

    loop2 = LoopThread()
    with pytest.raises(KeyError):
        loop2.run(boom())
    loop2.close()


def _crl(serials: set[int], number: int | None, day: int) -> VerifiedCrl:
    issued = datetime(2026, 1, day, tzinfo=UTC)
    return VerifiedCrl(frozenset(serials), number, issued, issued + timedelta(days=7))


def test_store_keeps_the_last_crl_across_reopen_and_replaces_it_whole(tmp_path):
    path = tmp_path / "gw.sqlite3"
    store = GatewayStore(path)
    assert store.crl_serials == frozenset() and store.crl is None
    big = (1 << 159) - 1  # serials and CRL numbers go up to 20 octets, beyond SQLite's integers
    store.set_crl(_crl({5, big}, big, 1))
    store.close()
    reopened = GatewayStore(path)
    assert reopened.crl_serials == {5, big}
    assert reopened.crl == _crl({5, big}, big, 1)
    reopened.set_crl(_crl({7}, None, 2))  # a CRL lists every revoked serial: it replaces the last
    reopened.close()
    again = GatewayStore(path)
    assert again.crl_serials == {7}
    assert again.crl == _crl({7}, None, 2)
    again.close()


@pytest.mark.parametrize(("loaded", "new", "refused"), [
    (_crl({1}, 5, 1), _crl({1, 2}, 6, 2), None),
    (_crl({1, 2}, 6, 2), _crl({1}, 5, 3), "CRL number 5 is older than the loaded CRL's 6"),
    (_crl({1}, 6, 2), _crl({1}, 6, 2), None),  # the same CRL reloaded
    (_crl({1}, 6, 2), _crl({1, 2}, 6, 2), "CRL number 6 is loaded already with other serials"),
    (_crl({1}, None, 2), _crl({3}, None, 3), None),  # no numbers: issue dates decide
    (_crl({1}, None, 3), _crl({3}, 9, 2), "older than the loaded CRL issued 2026-01-03"),
], ids=["newer", "replayed older", "same again", "same number other serials",
        "later issue date", "earlier issue date"])
def test_a_crl_never_replaces_a_newer_one(loaded, new, refused):
    why = new.older_than(loaded)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why


def test_results_filter_by_device_and_app_and_look_one_device_up_by_its_key(tmp_path):
    """Each filter alone, both, and none give what a brute-force filter gives, in order of
    arrival; with a device the look-up uses the results' key (the agent reads one device
    and application per status write: a scan of every result made that O(results))."""
    store = GatewayStore(tmp_path / "gw.sqlite3")
    rows = [replace(_result(run), device_id=dev, app_id=app, received_at=float(run))
            for run, (dev, app) in enumerate([(d, a) for d in ("d1", "d2", "d3")
                                              for a in ("a1", "a2")] * 2, start=1)]
    for row in rows:
        assert store.add_result(row)
    for dev in (None, "d1", "d2", "nobody"):
        for app in (None, "a2", "nobody"):
            want = [r.run_id for r in rows if dev in (None, r.device_id)
                    and app in (None, r.app_id)]
            assert [r.run_id for r in store.results(dev, app)] == want, (dev, app)
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)  # the statement as run, its values bound
    store.results("d1", "a1")
    store._db.set_trace_callback(None)
    [query] = [q for q in seen if q.startswith("SELECT")]
    plan = str(store._db.execute("EXPLAIN QUERY PLAN " + query).fetchall())
    assert "USING INDEX" in plan and "SCAN results" not in plan, plan
    store.close()
