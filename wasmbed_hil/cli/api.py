"""A small synchronous client of the control plane's REST API (docs/rest-api.md), where
the CLI finds it, and how a command calls it (`call`: an error answer becomes one CliError).

The API and its token come, first found wins, from:

    --api URL / --token-file PATH          on the command line
    --platform DIR                         the --workdir of a running `wasmbed-hil up`
                                           (DIR/platform.json: `rest`, `tokenFile`)
    $WASMBED_API / $WASMBED_TOKEN_FILE     the environment
    $WASMBED_PLATFORM                      like --platform

The token is read from its file and sent as `Authorization: Bearer ...`; it is never printed
(`Api.__repr__` leaves it out and no message quotes it).
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import secrets
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import (
    EXIT_ENVIRONMENT,
    EXIT_FAILED,
    EXIT_USAGE,
    CliError,
    check_token,
    describe,
)

ENV_API = "WASMBED_API"
ENV_TOKEN_FILE = "WASMBED_TOKEN_FILE"
ENV_PLATFORM = "WASMBED_PLATFORM"
REQUEST_TIMEOUT = 30.0  # seconds one request may take
DEVICES = "/api/v1/devices"
APPLICATIONS = "/api/v1/applications"
POLL_S = 0.25  # how often `deploy --wait` and `apps delete --wait` ask the REST API

HOW_TO_CONNECT = (
    f"pass --api URL and --token-file PATH (or set ${ENV_API} and ${ENV_TOKEN_FILE}), or "
    f"--platform DIR (or ${ENV_PLATFORM}) naming the --workdir of a running `wasmbed-hil up`"
)


class ApiError(Exception):
    """An error answer of the REST API: its JSON error body."""

    def __init__(self, status: int, reason: str, message: str, field: str | None = None
                 ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.field = field

    @property
    def exit_code(self) -> int:
        """How a command that got this answer exits (when it has nothing more specific)."""
        if self.status in (401, 403, 502, 503):  # credentials, or the API server behind it
            return EXIT_ENVIRONMENT
        if self.status in (400, 413, 415, 422):  # what the command sent was refused
            return EXIT_USAGE
        return EXIT_FAILED  # 404 NotFound, 409 AlreadyExists, ...


@dataclass
class Api:
    """The REST API at `url`; `source` says where the URL came from (for messages)."""

    url: str
    token: str = field(repr=False)
    source: str = "--api"
    token_source: str = "--token-file"
    hint: str = ""  # appended when the API cannot be reached

    def request(self, method: str, path: str, body: Any = None, *,
                query: dict[str, str] | None = None,
                multipart: list[tuple[str, str | None, str, bytes]] | None = None,
                timeout: float = REQUEST_TIMEOUT) -> Any:
        """Send one request; return the decoded JSON answer. Raises ApiError for an error
        answer, CliError (exit 3) when the API cannot be reached."""
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data: bytes | None = None
        if multipart is not None:
            data, headers["Content-Type"] = encode_multipart(multipart)
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                raise self._error(exc.code, exc.read()) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            if isinstance(reason, socket.timeout | TimeoutError):
                reason = f"no answer within {timeout:g} s"
            raise CliError(f"cannot reach the REST API at {self.url} (from {self.source}): "
                           f"{reason}{self.hint}; {HOW_TO_CONNECT}", EXIT_ENVIRONMENT) from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise CliError(f"the REST API at {self.url} answered {path} with something that is "
                           f"not JSON: {raw[:80]!r}", EXIT_ENVIRONMENT) from None

    def _error(self, status: int, raw: bytes) -> ApiError:
        try:
            error = json.loads(raw)["error"]
            exc = ApiError(int(error["status"]), str(error["reason"]), str(error["message"]),
                           error.get("field"))
        except (ValueError, KeyError, TypeError):
            exc = ApiError(status, "Error", raw[:200].decode(errors="replace").strip()
                           or f"HTTP {status}")
        if exc.status == 401:
            exc.message = (f"the REST API at {self.url} refused the token from "
                           f"{self.token_source} ({exc.message})")
        return exc

    def get(self, path: str, **query: str) -> Any:
        return self.request("GET", path, query=query or None)


def call(api: Api, method: str, path: str, *, what: str | None = None,
         query: dict[str, str] | None = None, timeout: float = REQUEST_TIMEOUT) -> Any:
    """One request whose error answer ends the command: ApiError becomes `cli_error`'s
    CliError."""
    try:
        return api.request(method, path, query=query, timeout=timeout)
    except ApiError as exc:
        raise cli_error(exc, what) from None


def renders_answers(command: Callable[[argparse.Namespace], int]
                    ) -> Callable[[argparse.Namespace], int]:
    """For a command that only asks the REST API and prints its answers: an answer of
    another shape (a server at --api that is not this REST API, or a version that differs)
    ends it with a one-line error (exit 3), not a traceback from the formatting."""
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            raise CliError(f"the REST API's answer is not of the shape this command reads "
                           f"({type(exc).__name__}: {exc}); is the API URL right?",
                           EXIT_ENVIRONMENT) from None
    return run


def cli_error(exc: ApiError, what: str | None = None) -> CliError:
    """The one-line error for an error answer: `no WHAT` (exit 1) for a 404 about `what`,
    else the API's message, field and status, with ApiError.exit_code."""
    if exc.status == 404 and what:
        return CliError(f"no {what}", EXIT_FAILED)
    where = f" ({exc.field})" if exc.field else ""
    return CliError(f"{exc.message}{where} [{exc.status} {exc.reason}]", exc.exit_code)


def quote(name: str) -> str:
    """A resource name as one path segment."""
    return urllib.parse.quote(name, safe="")


def request_timeout(deadline: float) -> float:
    """The timeout of one polling request before `deadline` (time.monotonic): 5 to 30 s."""
    return max(5.0, min(30.0, deadline - time.monotonic() + 5.0))


def encode_multipart(parts: list[tuple[str, str | None, str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of (name, filename, content type, data) parts, and its
    Content-Type."""
    boundary = f"wasmbed-{secrets.token_hex(16)}"
    chunks: list[bytes] = []
    for name, filename, content_type, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
            disposition += f'; filename="{safe}"'
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                      f"Content-Type: {content_type}\r\n\r\n".encode())
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


# ----------------------------------------------------------------------------- options


def add_api_options(parser: argparse.ArgumentParser) -> None:
    """--api, --token-file, --platform. Their defaults are SUPPRESS so that they can be given
    before or after a sub-action (`apps --api X show NAME`, `apps show NAME --api X`)."""
    group = parser.add_argument_group("REST API", describe(
        "Where the control plane's REST API is: --api and --token-file, else --platform, "
        f"else ${ENV_API} and ${ENV_TOKEN_FILE}, else ${ENV_PLATFORM}.", 76))
    group.add_argument("--api", metavar="URL", default=argparse.SUPPRESS,
                       help=f"base URL of the REST API, e.g. http://127.0.0.1:8080 "
                       f"(default: ${ENV_API})")
    group.add_argument("--token-file", metavar="PATH", type=Path, default=argparse.SUPPRESS,
                       help=f"file holding the bearer token (default: ${ENV_TOKEN_FILE})")
    group.add_argument("--platform", metavar="DIR", type=Path, default=argparse.SUPPRESS,
                       help="the --workdir of a running `wasmbed-hil up` (its platform.json "
                       f"names the API and the token file; default: ${ENV_PLATFORM})")


def _platform_info(directory: Path, source: str) -> dict[str, Any]:
    path = directory / "platform.json"
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"{source}: {path} does not exist: is `wasmbed-hil up --workdir "
                       f"{directory}` running?", EXIT_ENVIRONMENT) from None
    except (OSError, ValueError) as exc:
        raise CliError(f"{source}: cannot read {path}: {exc}", EXIT_ENVIRONMENT) from None
    if not isinstance(info, dict):
        raise CliError(f"{source}: {path} is not a JSON object", EXIT_ENVIRONMENT)
    info["_dir"] = directory
    return info


def _pid_hint(info: dict[str, Any]) -> str:
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return ""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return (f" (the `wasmbed-hil up` that wrote {info['_dir']}/platform.json, pid {pid}, "
                "is no longer running)")
    except OSError:
        pass
    return ""


def connect(args: argparse.Namespace) -> Api:
    """The REST API the options and environment name; CliError (exit 3) if none does, or if
    the token file is missing or empty. Nothing is sent yet."""
    # Flags before the environment; in each, the specific option before the platform's.
    url_sources: list[tuple[str, Callable[[], Any]]] = [
        ("--api", lambda: getattr(args, "api", None))]
    token_sources: list[tuple[str, Callable[[], Any]]] = [
        ("--token-file", lambda: getattr(args, "token_file", None))]
    infos: dict[str, dict[str, Any]] = {}

    def add_platform(option: str, directory: Path) -> None:
        source = f"{option} {directory}"

        def info() -> dict[str, Any]:
            if source not in infos:
                infos[source] = _platform_info(directory, option)
            return infos[source]

        url_sources.append((source, lambda: info().get("rest")))
        token_sources.append((source, lambda: directory / str(info().get("tokenFile")
                                                               or "token")))

    if getattr(args, "platform", None) is not None:
        add_platform("--platform", args.platform)
    url_sources.append((f"${ENV_API}", lambda: os.environ.get(ENV_API)))
    token_sources.append((f"${ENV_TOKEN_FILE}", lambda: os.environ.get(ENV_TOKEN_FILE)))
    if os.environ.get(ENV_PLATFORM):
        add_platform(f"${ENV_PLATFORM}", Path(os.environ[ENV_PLATFORM]))

    url, url_source = _first(url_sources)
    if not url:
        raise CliError(f"no REST API given: {HOW_TO_CONNECT}", EXIT_ENVIRONMENT)
    url = str(url).rstrip("/")
    try:
        parsed = urllib.parse.urlsplit(url)
    except ValueError as exc:  # an unclosed or invalid [IPv6] host
        raise CliError(f"{url_source}: {url!r} is not an http(s) URL: {exc}",
                       EXIT_USAGE) from None
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CliError(f"{url_source}: {url!r} is not an http(s) URL "
                       "(e.g. http://127.0.0.1:8080)", EXIT_USAGE)
    token_file, token_source = _first(token_sources)
    if not token_file:
        raise CliError(f"no token file given for {url}: {HOW_TO_CONNECT}", EXIT_ENVIRONMENT)
    path = Path(token_file)
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise CliError(f"{token_source}: token file {path} does not exist",
                       EXIT_ENVIRONMENT) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{token_source}: cannot read token file {path}: "
                       f"{getattr(exc, 'strerror', None) or exc}", EXIT_ENVIRONMENT) from None
    if not token:
        raise CliError(f"{token_source}: token file {path} is empty", EXIT_ENVIRONMENT)
    check_token(token, f"{token_source}: token file {path}")
    hint = _pid_hint(infos[url_source]) if url_source in infos else ""
    return Api(url, token, url_source, f"{token_source} ({path})", hint)


def _first(sources: list[tuple[str, Callable[[], Any]]]) -> tuple[Any, str]:
    for source, get in sources:
        value = get()
        if value:
            return value, source
    return None, ""
