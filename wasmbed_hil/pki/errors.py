"""The single exception type of the fleet PKI."""

from __future__ import annotations


class PkiError(Exception):
    """Bad PKI input: unparsable PEM/DER, unsupported key type, missing or unreadable files."""
