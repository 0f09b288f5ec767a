"""A `MachineManager` in another process, reached over HTTP: the controllers run as their own
process (as in a cluster) while a device manager serves their machines elsewhere.

The device manager's side is `wasmbed_hil.bench.machineservice`; the wire format is in
docs/architecture.md ("The device manager as a service"):

    PUT    /v1/machines/<name>  {"identity", "backend", "board", "preferredGateway", "options"}
           200 {"backend": str, "gateway": str}   422 {"error": str} (it cannot be started)
    DELETE /v1/machines/<name>  200 {"stopped": bool}

Every request carries `Authorization: Bearer <token>`. What the manager answers is checked
before it is used: an answer of another shape, a status it does not use, a refused token or
no answer at all is an `EmulationError` whose message names the device manager and what went
wrong (never the token), which the Device controller puts in the Device's `Emulated`
condition. A manager that cannot be reached is `DeviceManagerUnreachable`, which the
controller retries (the manager may be restarting) rather than report as final.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .emulation import DeviceManagerUnreachable, EmulationError

#: The longest answer read from the device manager (its answers are a few hundred bytes).
MAX_ANSWER = 64 * 1024
#: How long a start may take by default: a QEMU machine boots before the manager answers.
DEFAULT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class RemoteMachine:
    backend: str
    gateway: str


def parse_manager_url(url: str) -> tuple[str, int, str]:
    """(host, port, path prefix) of an `http://host:port[/prefix]` URL; ValueError otherwise.
    Plain HTTP only: the manager is the bench's, on the same host or a private network, and
    the bearer token is what admits a caller."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"device manager URL {url!r}: {exc}") from None
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"device manager URL {url!r}: must be http://HOST:PORT")
    if port is None:
        raise ValueError(f"device manager URL {url!r}: needs a port")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"device manager URL {url!r}: no user, query or fragment allowed")
    return parts.hostname, port, parts.path.rstrip("/")


class RemoteMachineManager:
    """`MachineManager` over HTTP (module docstring). Synchronous and thread-safe, as the
    protocol asks: each call opens its own connection (the Device controller calls it from
    kopf's worker threads, a few times per Device's life)."""

    def __init__(self, url: str, token: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.host, self.port, self._prefix = parse_manager_url(url)
        if not token or any(c in token for c in "\r\n"):
            raise ValueError("the device manager's token must be one non-empty line")
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        self.url = url
        self._token = token
        self.timeout_s = timeout_s

    def __repr__(self) -> str:  # never the token
        return f"RemoteMachineManager({self.url!r})"

    def start(
        self,
        name: str,
        identity: str,
        backend: str,
        board: str | None = None,
        preferred_gateway: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> RemoteMachine:
        answer = self._call("PUT", name, {
            "identity": identity, "backend": backend, "board": board,
            "preferredGateway": preferred_gateway, "options": options or {},
        })
        backend_used, gateway = answer.get("backend"), answer.get("gateway")
        if not isinstance(backend_used, str) or not isinstance(gateway, str):
            raise EmulationError(f"device manager at {self.url}: its answer to starting "
                                 f"{name!r} has no backend and gateway names")
        return RemoteMachine(backend_used, gateway)

    def stop(self, name: str) -> bool:
        stopped = self._call("DELETE", name, None).get("stopped")
        if not isinstance(stopped, bool):
            raise EmulationError(f"device manager at {self.url}: its answer to stopping "
                                 f"{name!r} has no 'stopped' true or false")
        return stopped

    def _call(self, method: str, name: str, body: dict[str, Any] | None) -> dict[str, Any]:
        path = f"{self._prefix}/v1/machines/{urllib.parse.quote(name, safe='')}"
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read(MAX_ANSWER + 1)
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            raise DeviceManagerUnreachable(
                f"device manager at {self.url} did not answer: "
                f"{type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
        return self._answer(method, name, status, raw)

    def _answer(self, method: str, name: str, status: int, raw: bytes) -> dict[str, Any]:
        what = f"device manager at {self.url} ({method} {name!r})"
        if len(raw) > MAX_ANSWER:
            raise EmulationError(f"{what}: answer longer than {MAX_ANSWER} bytes")
        try:
            answer = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            answer = None
        error = answer.get("error") if isinstance(answer, dict) else None
        if status == 200 and isinstance(answer, dict):
            return answer
        if status == 422 and isinstance(error, str):
            raise EmulationError(error)
        if status == 401:
            raise EmulationError(f"{what}: the token was refused (401)")
        shown = error if isinstance(error, str) else raw[:200].decode("utf-8", "replace")
        raise EmulationError(f"{what}: answered {status}: {shown or 'no body'}")
