"""The gateway's local cache: enrolled devices, deployments, the runs it started and their
execution results in SQLite.

It survives a gateway restart, so enrolled identities reconnect without pairing, revoked
identities and the serials of the last CRL loaded stay refused (and an older CRL cannot
replace it), no execution result is lost, a result for a run started by an earlier
incarnation is still accepted and run ids are never handed out twice. Results and run records
are kept up to a number per (device, application) (`trim_results`, `new_run(keep=...)`,
GatewayConfig.max_results_per_app), the oldest dropped. Liveness (heartbeats, phases) lives
in memory only.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

from ..pki import VerifiedCrl
from ..protocol import Outcome

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    identity TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    enrolled_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    name TEXT NOT NULL,
    module BLOB NOT NULL,
    digest BLOB NOT NULL,
    limits TEXT NOT NULL,
    run TEXT,
    chunk_size INTEGER,
    state TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS revoked (identity TEXT PRIMARY KEY, revoked_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS crl_serials (serial TEXT PRIMARY KEY, loaded_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS crl_loaded (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    number TEXT,
    this_update REAL NOT NULL,
    next_update REAL
);
CREATE TABLE IF NOT EXISTS results (
    device_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    outcome INTEGER NOT NULL,
    result_values TEXT NOT NULL,
    log BLOB NOT NULL,
    fuel_used INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    detail TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (device_id, app_id, run_id)
);
CREATE TABLE IF NOT EXISTS runs (
    device_id TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    app_id TEXT NOT NULL,
    started_at REAL NOT NULL,
    PRIMARY KEY (device_id, run_id)
);
CREATE TABLE IF NOT EXISTS run_counters (
    device_id TEXT PRIMARY KEY,
    next_run_id INTEGER NOT NULL
);
-- Run ids this gateway may give the device without a new publication: the control plane
-- holds them as the device's counter (GatewayAgent), so no other gateway ever gives them.
CREATE TABLE IF NOT EXISTS run_reservations (
    device_id TEXT PRIMARY KEY,
    ceiling INTEGER NOT NULL
);
-- Run ids [first, end) another gateway published as possibly started without listing them:
-- one result of each is accepted here (RunRecord.UNLISTED).
CREATE TABLE IF NOT EXISTS unlisted_runs (
    device_id TEXT PRIMARY KEY,
    first INTEGER NOT NULL,
    end INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS run_floors (
    device_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    floor INTEGER NOT NULL,
    PRIMARY KEY (device_id, app_id)
);
"""

MAX_RUN_ID = 0xFFFFFFFF  # run ids are u32 on the wire
# Run ids a publication may leave unlisted (reserved ahead, or taken in from another
# gateway's publication): a gateway accepts one result of each without knowing the run.
MAX_UNLISTED_RUNS = 64


class RunRecord(Enum):
    """What the cache knows of a run id of (device, application)."""

    STARTED = "started"  # this gateway started it, and still holds the record
    FORGOTTEN = "forgotten"  # at or below the runs dropped by `new_run(keep=...)`
    # Maybe started by another gateway inside the run ids it reserved, not listed (see
    # `merge_runs`), and no result of that id held yet
    UNLISTED = "unlisted"
    UNKNOWN = "unknown"  # never started here


class RunIdsExhausted(Exception):
    """Every run id of a device has been used: a new run would repeat one."""


@dataclass(frozen=True)
class EnrolledDevice:
    device_id: str  # 32 hex digits (16 bytes on the wire)
    identity: str  # SHA-256 of the certificate's SubjectPublicKeyInfo
    name: str  # the certificate's common name
    enrolled_at: float


@dataclass(frozen=True)
class StoredDeployment:
    device_id: str
    app_id: str
    name: str
    module: bytes
    digest: bytes
    limits: tuple[int, ...]  # Limits fields in order
    run: tuple[str, tuple[int | float, ...]] | None  # (entry, args)
    chunk_size: int | None
    state: str
    row_id: int = 0


@dataclass(frozen=True)
class StoredResult:
    device_id: str
    app_id: str
    run_id: int
    outcome: Outcome
    values: tuple[int | float, ...]
    log: bytes
    fuel_used: int
    duration_us: int
    detail: str
    received_at: float


class GatewayStore:
    """SQLite-backed cache with an in-memory index of enrolled identities."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._by_identity: dict[str, EnrolledDevice] = {}
        self._by_id: dict[str, EnrolledDevice] = {}
        for row in self._db.execute("SELECT device_id, identity, name, enrolled_at FROM devices"):
            self._index(EnrolledDevice(*row))
        self.revoked: set[str] = {r[0] for r in self._db.execute("SELECT identity FROM revoked")}
        self.crl_serials: frozenset[int] = frozenset(
            int(r[0], 16) for r in self._db.execute("SELECT serial FROM crl_serials")
        )

    def close(self) -> None:
        self._db.close()

    def _index(self, dev: EnrolledDevice) -> None:
        self._by_identity[dev.identity] = dev
        self._by_id[dev.device_id] = dev

    # -- devices -------------------------------------------------------------------------
    def by_identity(self, identity: str) -> EnrolledDevice | None:
        return self._by_identity.get(identity)

    def by_id(self, device_id: str) -> EnrolledDevice | None:
        return self._by_id.get(device_id)

    def devices(self) -> list[EnrolledDevice]:
        return list(self._by_id.values())

    def count(self) -> int:
        return len(self._by_id)

    def enroll(self, identity: str, name: str) -> tuple[EnrolledDevice, bool]:
        """Enroll an identity; idempotent. Returns the record and whether it is new."""
        existing = self._by_identity.get(identity)
        if existing is not None:
            return existing, False
        dev = EnrolledDevice(uuid.uuid4().hex, identity, name, time.time())
        self._db.execute(
            "INSERT INTO devices VALUES (?, ?, ?, ?)",
            (dev.device_id, dev.identity, dev.name, dev.enrolled_at),
        )
        self._index(dev)
        return dev, True

    def adopt(self, device_id: str, identity: str, name: str, enrolled_at: float) -> bool:
        """Record an enrollment made at another gateway (shared through the control plane),
        keeping its device id. False, and nothing changes, when the identity or the device id
        is already enrolled here (the local enrollment is kept)."""
        if identity in self._by_identity or device_id in self._by_id:
            return False
        dev = EnrolledDevice(device_id, identity, name, enrolled_at)
        self._db.execute(
            "INSERT INTO devices VALUES (?, ?, ?, ?)",
            (dev.device_id, dev.identity, dev.name, dev.enrolled_at),
        )
        self._index(dev)
        return True

    def forget(self, device_id: str) -> None:
        dev = self._by_id.pop(device_id, None)
        if dev is not None:
            self._by_identity.pop(dev.identity, None)
            self._db.execute("DELETE FROM devices WHERE device_id = ?", (device_id,))

    def revoke(self, identity: str) -> None:
        self.revoked.add(identity)
        self._db.execute("INSERT OR IGNORE INTO revoked VALUES (?, ?)", (identity, time.time()))

    @property
    def crl(self) -> VerifiedCrl | None:
        """The last CRL loaded, or None (none yet, or one loaded by a version that did not
        keep its number and dates: any CRL may then replace it)."""
        row = self._db.execute(
            "SELECT number, this_update, next_update FROM crl_loaded").fetchone()
        if row is None:
            return None
        return VerifiedCrl(
            self.crl_serials,
            None if row[0] is None else int(row[0], 16),
            datetime.fromtimestamp(row[1], UTC),
            None if row[2] is None else datetime.fromtimestamp(row[2], UTC),
        )

    def set_crl(self, crl: VerifiedCrl) -> None:
        """Replace the last CRL loaded (a CRL lists every revoked serial), in one
        transaction. Serials and the CRL number are kept as hex text: they may have 20
        octets, beyond SQLite's integers."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM crl_serials")
            now = time.time()
            db.executemany(
                "INSERT INTO crl_serials VALUES (?, ?)", [(f"{s:x}", now) for s in crl.serials]
            )
            db.execute(
                "INSERT OR REPLACE INTO crl_loaded VALUES (1, ?, ?, ?)",
                (
                    None if crl.number is None else f"{crl.number:x}",
                    crl.this_update.timestamp(),
                    None if crl.next_update is None else crl.next_update.timestamp(),
                ),
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self.crl_serials = crl.serials

    # -- deployments ---------------------------------------------------------------------
    def add_deployment(self, record: StoredDeployment) -> int:
        cur = self._db.execute(
            "INSERT INTO deployments (device_id, app_id, name, module, digest, limits, run,"
            " chunk_size, state, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.device_id,
                record.app_id,
                record.name,
                record.module,
                record.digest,
                json.dumps(list(record.limits)),
                None if record.run is None else json.dumps([record.run[0], list(record.run[1])]),
                record.chunk_size,
                record.state,
                time.time(),
            ),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def update_deployment(self, row_id: int, state: str, error: str = "") -> None:
        self._db.execute(
            "UPDATE deployments SET state = ?, error = ?, updated_at = ? WHERE id = ?",
            (state, error, time.time(), row_id),
        )

    def unfinished_deployments(self) -> list[StoredDeployment]:
        """Deployments a previous incarnation accepted and did not finish, oldest first."""
        rows = self._db.execute(
            "SELECT id, device_id, app_id, name, module, digest, limits, run, chunk_size, state"
            " FROM deployments WHERE state IN ('pending', 'transferring') ORDER BY id"
        ).fetchall()
        out = []
        for r in rows:
            run = json.loads(r[7]) if r[7] else None
            out.append(
                StoredDeployment(
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    tuple(json.loads(r[6])),
                    (run[0], tuple(run[1])) if run else None,
                    r[8],
                    r[9],
                    r[0],
                )
            )
        return out

    # -- results -------------------------------------------------------------------------
    def add_result(self, result: StoredResult) -> bool:
        """Record a result; False when that (device, app, run) was already recorded."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                result.device_id,
                result.app_id,
                result.run_id,
                int(result.outcome),
                json.dumps(list(result.values)),
                result.log,
                result.fuel_used,
                result.duration_us,
                result.detail,
                result.received_at,
            ),
        )
        return cur.rowcount == 1

    def trim_results(self, device_id: str, app_id: str, keep: int) -> int:
        """Keep the `keep` results of (device, app) received last (0: all); returns how many
        older ones were dropped. Their runs stay recorded (see `new_run`): a late repeat of a
        dropped result is accepted again rather than refused."""
        if keep <= 0:
            return 0
        cur = self._db.execute(
            "DELETE FROM results WHERE device_id = ?1 AND app_id = ?2 AND run_id NOT IN"
            " (SELECT run_id FROM results WHERE device_id = ?1 AND app_id = ?2"
            " ORDER BY received_at DESC, run_id DESC LIMIT ?3)",
            (device_id, app_id, keep),
        )
        return cur.rowcount

    def results(
        self, device_id: str | None = None, app_id: str | None = None
    ) -> list[StoredResult]:
        # Only the filters given: SQLite plans `(?1 IS NULL OR device_id = ?1)` as a scan of
        # every result, and the control plane's agent reads one (device, app) per status
        # write (1,000 devices, 3 Applications: a scan of up to 3,000 rows, 2,000 times).
        where = [clause for clause, value in (("device_id = :device", device_id),
                                              ("app_id = :app", app_id)) if value is not None]
        query = "SELECT * FROM results" + (" WHERE " + " AND ".join(where) if where else "")
        query += " ORDER BY received_at, run_id"
        rows = self._db.execute(query, {"device": device_id, "app": app_id}).fetchall()
        return [
            StoredResult(
                r[0],
                r[1],
                r[2],
                Outcome(r[3]),
                tuple(json.loads(r[4])),
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
            )
            for r in rows
        ]

    # -- runs ---------------------------------------------------------------------------
    def new_run(self, device_id: str, app_id: str, keep: int = 0) -> int:
        """Allocate the device's next run id and record the run as started by this gateway.

        Each device has its own counter, kept here and never derived from the results held
        (a device chooses what its results say); it only goes up. A device without one (a
        cache written before counters existed) starts above its highest stored run id.
        Raises RunIdsExhausted rather than repeat an id.

        `keep` (0: all) bounds the run records of (device, app): the oldest beyond it are
        dropped and remembered as a floor, at or below which a run id is FORGOTTEN.
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT next_run_id FROM run_counters WHERE device_id = ?", (device_id,)
            ).fetchone()
            if row is None:
                row = db.execute(
                    "SELECT MAX(m) + 1 FROM (SELECT MAX(run_id) AS m FROM results"
                    " WHERE device_id = ?1 UNION ALL SELECT MAX(run_id) FROM runs"
                    " WHERE device_id = ?1 UNION ALL SELECT 0)",
                    (device_id,),
                ).fetchone()
            run_id = int(row[0])
            if run_id > MAX_RUN_ID:
                raise RunIdsExhausted(
                    f"device {device_id[:8]} has used every run id up to {MAX_RUN_ID}")
            db.execute(
                "INSERT OR REPLACE INTO run_counters VALUES (?, ?)", (device_id, run_id + 1)
            )
            db.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?)",
                (device_id, run_id, app_id, time.time()),
            )
            if keep > 0:
                self._trim_runs(device_id, app_id, keep)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return run_id

    def started_runs(self, device_id: str | None = None) -> list[tuple[str, int, str]]:
        """The runs this gateway (any incarnation) started: (device id, run id, app id), in
        the order they were started. Read by the harness's convergence check."""
        rows = self._db.execute(
            "SELECT device_id, run_id, app_id FROM runs WHERE (?1 IS NULL OR device_id = ?1)"
            " ORDER BY started_at, run_id",
            (device_id,),
        ).fetchall()
        return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]

    def _trim_runs(self, device_id: str, app_id: str, keep: int) -> None:
        floor = self._db.execute(
            "SELECT run_id FROM runs WHERE device_id = ?1 AND app_id = ?2"
            " ORDER BY run_id DESC LIMIT 1 OFFSET ?3",
            (device_id, app_id, keep),
        ).fetchone()
        if floor is None:
            return
        self._db.execute(
            "DELETE FROM runs WHERE device_id = ? AND app_id = ? AND run_id <= ?",
            (device_id, app_id, floor[0]),
        )
        self._db.execute(
            "INSERT INTO run_floors VALUES (?1, ?2, ?3) ON CONFLICT (device_id, app_id)"
            " DO UPDATE SET floor = MAX(floor, ?3)",
            (device_id, app_id, floor[0]),
        )

    def next_run_id(self, device_id: str) -> int:
        """The run id the device's next run would get here."""
        row = self._db.execute(
            "SELECT next_run_id FROM run_counters WHERE device_id = ?", (device_id,)
        ).fetchone()
        return int(row[0]) if row is not None else self._derived_next(device_id)

    def _derived_next(self, device_id: str) -> int:
        """For a device without a counter: above every run id held for it, at least 1."""
        row = self._db.execute(
            "SELECT MAX(m) + 1 FROM (SELECT MAX(run_id) AS m FROM results"
            " WHERE device_id = ?1 UNION ALL SELECT MAX(run_id) FROM runs"
            " WHERE device_id = ?1 UNION ALL SELECT 0)",
            (device_id,),
        ).fetchone()
        return int(row[0])

    def open_runs(self, device_id: str, limit: int) -> list[tuple[str, int]]:
        """(app_id, run_id) of the device's runs started and without a result, the `limit`
        started last."""
        rows = self._db.execute(
            "SELECT app_id, run_id FROM runs r WHERE device_id = ?1 AND NOT EXISTS"
            " (SELECT 1 FROM results s WHERE s.device_id = r.device_id"
            " AND s.app_id = r.app_id AND s.run_id = r.run_id)"
            " ORDER BY run_id DESC LIMIT ?2",
            (device_id, limit),
        ).fetchall()
        return [(str(a), int(r)) for a, r in reversed(rows)]

    def merge_runs(
        self, device_id: str, next_run_id: int, started: list[tuple[str, int]],
        unlisted_from: int | None = None,
    ) -> None:
        """Take in what another gateway did with the device: its run counter (ours only goes
        up, to at least `next_run_id`), the runs it started (their results are then
        accepted here) and, with `unlisted_from`, the run ids from there up to
        `next_run_id` that it may have started without listing them (one result of each is
        then accepted, RunRecord.UNLISTED; a later merge widens the range, at most
        MAX_UNLISTED_RUNS ids below the counter). ValueError, and nothing changes, for a
        counter out of range, a started run id at or above it, or an unlisted range that is
        inverted or wider than MAX_UNLISTED_RUNS."""
        if not 0 <= next_run_id <= MAX_RUN_ID + 1:
            raise ValueError(f"next run id {next_run_id} out of range")
        if any(not 0 <= run_id < next_run_id for _app, run_id in started):
            raise ValueError("a started run id at or above the next run id")
        if unlisted_from is not None and not (
                0 <= next_run_id - unlisted_from <= MAX_UNLISTED_RUNS):
            raise ValueError(f"unlisted run ids from {unlisted_from} to {next_run_id}: "
                             f"at most {MAX_UNLISTED_RUNS}, below the next run id")
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if self.next_run_id(device_id) < next_run_id:
                db.execute("INSERT OR REPLACE INTO run_counters VALUES (?, ?)",
                           (device_id, next_run_id))
            now = time.time()
            db.executemany(
                "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?)",
                [(device_id, run_id, app_id, now) for app_id, run_id in started],
            )
            if unlisted_from is not None and unlisted_from < next_run_id:
                first, end = unlisted_from, next_run_id
                held = self._unlisted(device_id)
                if held is not None:
                    first, end = min(first, held[0]), max(end, held[1])
                first = max(first, end - MAX_UNLISTED_RUNS)
                db.execute("INSERT OR REPLACE INTO unlisted_runs VALUES (?, ?, ?)",
                           (device_id, first, end))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _unlisted(self, device_id: str) -> tuple[int, int] | None:
        row = self._db.execute(
            "SELECT first, end FROM unlisted_runs WHERE device_id = ?", (device_id,)
        ).fetchone()
        return (int(row[0]), int(row[1])) if row is not None else None

    def reservation(self, device_id: str, ahead: int) -> tuple[int, int]:
        """(unlisted_from, ceiling) of the device's run ids, as its serving gateway publishes
        them: run ids below `ceiling` may be given here without a new publication (reserved
        `ahead` ids beyond the counter; extended once fewer than half remain, and only ever
        up), and those from `unlisted_from` on may be runs not listed in the publication (the
        counter's run ids onwards, and a range taken in from another gateway), at most
        MAX_UNLISTED_RUNS below the ceiling."""
        if not 0 < ahead <= MAX_UNLISTED_RUNS:
            raise ValueError(f"reserve 1 to {MAX_UNLISTED_RUNS} run ids ahead, not {ahead}")
        following = self.next_run_id(device_id)
        row = self._db.execute(
            "SELECT ceiling FROM run_reservations WHERE device_id = ?", (device_id,)
        ).fetchone()
        ceiling = int(row[0]) if row is not None else 0
        if ceiling - following < (ahead + 1) // 2:
            ceiling = min(max(ceiling, following + ahead), MAX_RUN_ID + 1)
            self._db.execute("INSERT OR REPLACE INTO run_reservations VALUES (?, ?)",
                             (device_id, ceiling))
        first = min(following, ceiling)
        held = self._unlisted(device_id)
        if held is not None:
            first = min(first, held[0])
        return max(first, ceiling - MAX_UNLISTED_RUNS), ceiling

    def record_unlisted_run(self, device_id: str, app_id: str, run_id: int) -> None:
        """Record an UNLISTED run as started (by the gateway that gave it): its result is
        then held as any other, and a second result of that id, of any app, is not
        UNLISTED."""
        self._db.execute("INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?)",
                         (device_id, run_id, app_id, time.time()))

    def has_run(self, device_id: str, app_id: str) -> bool:
        """Whether any run of `app_id` on the device is known here (started here, taken in
        from another gateway, answered, or dropped below the floor)."""
        row = self._db.execute(
            "SELECT 1 FROM runs WHERE device_id = ?1 AND app_id = ?2 UNION ALL"
            " SELECT 1 FROM results WHERE device_id = ?1 AND app_id = ?2 UNION ALL"
            " SELECT 1 FROM run_floors WHERE device_id = ?1 AND app_id = ?2 LIMIT 1",
            (device_id, app_id),
        ).fetchone()
        return row is not None

    def run_record(self, device_id: str, app_id: str, run_id: int) -> RunRecord:
        """Whether this gateway started run `run_id` of `app_id` on the device (or took it in
        from another gateway)."""
        row = self._db.execute(
            "SELECT 1 FROM runs WHERE device_id = ? AND run_id = ? AND app_id = ?",
            (device_id, run_id, app_id),
        ).fetchone()
        if row is not None:
            return RunRecord.STARTED
        row = self._db.execute(
            "SELECT floor FROM run_floors WHERE device_id = ? AND app_id = ?",
            (device_id, app_id),
        ).fetchone()
        if row is not None and run_id <= row[0]:
            return RunRecord.FORGOTTEN
        held = self._unlisted(device_id)
        if held is not None and held[0] <= run_id < held[1]:
            taken = self._db.execute(
                "SELECT 1 FROM runs WHERE device_id = ?1 AND run_id = ?2 UNION ALL"
                " SELECT 1 FROM results WHERE device_id = ?1 AND run_id = ?2 LIMIT 1",
                (device_id, run_id),
            ).fetchone()
            if taken is None:
                return RunRecord.UNLISTED
        return RunRecord.UNKNOWN

    def run_count(self, device_id: str, app_id: str) -> int:
        """How many run records of (device, app) are held."""
        return int(self._db.execute(
            "SELECT COUNT(*) FROM runs WHERE device_id = ? AND app_id = ?", (device_id, app_id)
        ).fetchone()[0])
