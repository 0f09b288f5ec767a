"""Stdlib ``ssl`` contexts for mutual TLS 1.3 from a credentials directory."""

from __future__ import annotations

import ssl
from pathlib import Path

from .credentials import CA_PEM, CERT_PEM, KEY_PEM
from .errors import PkiError


def _paths(creds_dir: Path) -> tuple[Path, Path, Path]:
    directory = Path(creds_dir)
    if not directory.is_dir():
        raise PkiError(f"credentials directory {directory} does not exist")
    paths = (directory / CERT_PEM, directory / KEY_PEM, directory / CA_PEM)
    for path in paths:
        if not path.is_file():
            raise PkiError(f"missing file {path}")
    return paths


def _configure(context: ssl.SSLContext, creds_dir: Path) -> ssl.SSLContext:
    cert, key, ca = _paths(creds_dir)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_cert_chain(cert, key)
        context.load_verify_locations(cafile=ca)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise PkiError(f"cannot load TLS credentials from {creds_dir}: {exc}") from exc
    return context


def server_ssl_context(creds_dir: Path) -> ssl.SSLContext:
    """TLS 1.3-only server context from creds_dir/{cert,key,ca}.pem that requires client certs.

    Session tickets are disabled (``num_tickets = 0``).
    """
    context = _configure(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), creds_dir)
    context.num_tickets = 0
    return context


def client_ssl_context(creds_dir: Path) -> ssl.SSLContext:
    """TLS 1.3-only client context: verifies the server (and its hostname) against ca.pem
    and presents cert.pem/key.pem."""
    context = _configure(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), creds_dir)
    context.check_hostname = True
    return context
