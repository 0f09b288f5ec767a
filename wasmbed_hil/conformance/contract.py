"""The clauses of the firmware contract (docs/firmware-contract.md) and how a check that
fails names one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ..bench.device import DeviceHandle

DOC = "docs/firmware-contract.md"


@dataclass(frozen=True)
class Clause:
    id: str  # "C3"
    title: str  # the section's title in the document
    summary: str  # what a firmware must do, in one sentence

    @property
    def reference(self) -> str:
        return f"{DOC}, {self.id} {self.title}"


CLAUSES = {c.id: c for c in (
    Clause("C1", "Boot and console", "after power-on, print `connecting to HOST:PORT` on the "
           "console UART and dial the gateway on the link UART"),
    Clause("C2", "Enrollment", "complete TLS 1.3 with the blob's certificate, enroll (Hello, "
           "EnrollProof) and print `online as <device id>`"),
    Clause("C3", "Heartbeats", "send a Heartbeat every heartbeat_interval_ms of the Welcome, "
           "for as long as the session lasts"),
    Clause("C4", "Deployment and runs", "accept DeployBegin/DeployChunk with acks, install the "
           "module, run it on StartApp and send its ExecutionResult until a ResultAck"),
    Clause("C5", "Refusals", "on a refusal (EnrollReject, Error REVOKED, a failed handshake) "
           "print it on the console, stay offline and retry after a backoff"),
    Clause("C6", "Console commands", "obey `silent 1` (no heartbeats, session kept) and "
           "`silent 0` (heartbeats again) typed on the console"),
    Clause("C7", "Reconnection", "notice a dead link, reconnect with backoff and resume the "
           "session as the same device"),
    Clause("C8", "Reset", "after a reset, boot again from the blob and come back as the same "
           "device"),
)}


@contextlib.contextmanager
def clause(clause_id: str, device: DeviceHandle | None = None) -> Iterator[Clause]:
    """Run a check of clause `clause_id`: any failure inside becomes a test failure whose
    message names the clause, says what it requires, what went wrong and (with `device`) the
    device's last console lines."""
    spec = CLAUSES[clause_id]
    try:
        yield spec
        return
    except Exception as exc:
        text = str(exc).strip() or type(exc).__name__
    console = ""
    if device is not None:
        with contextlib.suppress(Exception):
            console = "\nlast console lines:\n" + device.console_tail(12)
    # `from None`: the report shows this message, not the chain of the failed wait
    raise pytest.fail.Exception(
        f"firmware contract {spec.id} ({spec.title}) not met: {text}\n"
        f"{spec.id} requires: {spec.summary} ({spec.reference}){console}",
        pytrace=False,
    ) from None
