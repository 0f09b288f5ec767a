"""A gateway's and a device's TLS contexts from one fresh fleet CA, for tests of TLS layers."""

from __future__ import annotations

import ssl
from pathlib import Path

from wasmbed_hil.pki import FleetCA, client_ssl_context, server_ssl_context


def tls_contexts(root: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client): a gateway certificate for localhost and 127.0.0.1, a device's."""
    ca = FleetCA.create(f"{name} CA")
    ca.issue_gateway("gw", hosts=("localhost", "127.0.0.1")).write(root / "gw")
    ca.issue_device("dev").write(root / "dev")
    return server_ssl_context(root / "gw"), client_ssl_context(root / "dev")
