"""The per-device blob: what differs between devices, loaded into guest RAM at boot.

Layout version 1 (little-endian; the C parser is firmware/app/blob.c and
the layout is documented in firmware/README.md)::

    0   4  magic b"WBLB"
    4   2  version = 1
    6   2  flags = 0
    8   4  total_len (whole blob, header and trailing digest included)
    12  .. entries: type u16, length u16, value (no padding)
    end 32 SHA-256 over bytes [0, total_len - 32)

Entry types: 1 device key (PKCS#8 DER), 2 device certificate (DER), 3 CA certificate (DER),
4 entropy seed (32 bytes), 5 device name (UTF-8, 1..64 bytes), 6 TLS server name (1..253).
"""

from __future__ import annotations

import hashlib
import os
import struct

from cryptography.hazmat.primitives.asymmetric import ec

from ...pki import Credentials

MAGIC = b"WBLB"
VERSION = 1
#: Guest address of the blob on mps2-an385 (top 16 KiB of RAM, outside the linker's RAM); a
#: board's own is build.blob_address(board), read from its port's board_port.h.
BLOB_ADDRESS = 0x203FC000
BLOB_MAX_SIZE = 0x4000
HEADER = struct.Struct("<4sHHI")
ENTRY = struct.Struct("<HH")
DIGEST_LEN = 32
SEED_LEN = 32
MAX_NAME = 64
MAX_SERVER_NAME = 253

KEY, CERT, CA, SEED, NAME, SERVER_NAME, CONFIG = 1, 2, 3, 4, 5, 6, 7
# Keys of the optional configuration entry (firmware/app/blob.h); the firmware
# clamps each value to what its buffers allow.
CONFIG_KEYS = {
    "max_frame_size": 1,
    "max_module_size": 2,
    "window": 3,
    "max_apps": 4,
    "backoff_initial_ms": 5,
    "backoff_max_ms": 6,
    "reject_backoff_ms": 7,
    "setup_timeout_ms": 8,
    "link": 9,  # the port's link: 1 its UART, 2 Ethernet (LINK_ETHERNET) where it has one
}
LINK_UART = 1
LINK_ETHERNET = 2
CONFIG_PAIR = struct.Struct("<HI")
_FIELDS = {
    KEY: "key_der",
    CERT: "cert_der",
    CA: "ca_der",
    SEED: "seed",
    NAME: "name",
    SERVER_NAME: "server_name",
}


class BlobError(ValueError):
    """A blob that cannot be built or parsed."""


def _text(value: str, what: str, limit: int) -> bytes:
    if not isinstance(value, str):
        raise BlobError(f"{what} must be a str, not {type(value).__name__}")
    data = value.encode()
    if not 1 <= len(data) <= limit or any(b < 0x20 or b == 0x7F for b in data):
        raise BlobError(f"{what} must be 1..{limit} printable bytes, got {value!r}")
    return data


def build_blob(
    credentials: Credentials,
    name: str,
    server_name: str,
    seed: bytes | None = None,
    config: dict[str, int] | None = None,
) -> bytes:
    """The blob for one device: its P-256 key and certificate, the CA, an entropy seed
    (random unless given), its name, the gateway's TLS server name and, optionally,
    configuration (keys of CONFIG_KEYS, values u32)."""
    if not isinstance(credentials.key, ec.EllipticCurvePrivateKey) or not isinstance(
        credentials.key.curve, ec.SECP256R1
    ):
        raise BlobError("firmware devices need an ECDSA P-256 key (mbedTLS has no Ed25519 TLS)")
    if seed is None:
        seed = os.urandom(SEED_LEN)
    if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_LEN:
        raise BlobError(f"seed must be {SEED_LEN} bytes")
    entries = [
        (KEY, credentials.key_der),
        (CERT, credentials.cert_der),
        (CA, credentials.ca_der),
        (SEED, bytes(seed)),
        (NAME, _text(name, "name", MAX_NAME)),
        (SERVER_NAME, _text(server_name, "server_name", MAX_SERVER_NAME)),
    ]
    if config:
        unknown = sorted(set(config) - set(CONFIG_KEYS))
        if unknown:
            raise BlobError(f"unknown configuration keys {unknown}; known: {sorted(CONFIG_KEYS)}")
        pairs = []
        for key, value in sorted(config.items()):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**32:
                raise BlobError(f"configuration {key} must be an integer 1..2**32-1")
            pairs.append(CONFIG_PAIR.pack(CONFIG_KEYS[key], value))
        entries.append((CONFIG, b"".join(pairs)))
    body = b"".join(ENTRY.pack(kind, len(value)) + value for kind, value in entries)
    total = HEADER.size + len(body) + DIGEST_LEN
    if total > BLOB_MAX_SIZE:
        raise BlobError(f"blob is {total} bytes, the region holds {BLOB_MAX_SIZE}")
    head = HEADER.pack(MAGIC, VERSION, 0, total) + body
    return head + hashlib.sha256(head).digest()


def parse_blob(data: bytes) -> dict:
    """Check and decode a blob (the same checks as the firmware). Returns a dict with
    version, key_der, cert_der, ca_der, seed, name, server_name. BlobError if invalid."""
    data = bytes(data)
    if len(data) < HEADER.size + DIGEST_LEN:
        raise BlobError(f"blob too short ({len(data)} bytes)")
    magic, version, _flags, total = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BlobError(f"bad magic {magic!r}")
    if version != VERSION:
        raise BlobError(f"unsupported blob version {version}")
    if not HEADER.size + DIGEST_LEN <= total <= min(len(data), BLOB_MAX_SIZE):
        raise BlobError(f"bad blob length {total}")
    body_end = total - DIGEST_LEN
    if hashlib.sha256(data[:body_end]).digest() != data[body_end:total]:
        raise BlobError("blob corrupted: SHA-256 mismatch")
    out: dict = {"version": version}
    offset = HEADER.size
    while offset < body_end:
        if body_end - offset < ENTRY.size:
            raise BlobError(f"truncated entry header at offset {offset}")
        kind, length = ENTRY.unpack_from(data, offset)
        offset += ENTRY.size
        if length > body_end - offset:
            raise BlobError(f"entry type {kind} overruns the blob")
        value = data[offset : offset + length]
        offset += length
        if kind == CONFIG:
            if "config" in out or length % CONFIG_PAIR.size:
                raise BlobError("bad or duplicate configuration entry")
            names = {v: k for k, v in CONFIG_KEYS.items()}
            out["config"] = {
                names[k]: v for k, v in CONFIG_PAIR.iter_unpack(value) if k in names
            }
            continue
        field = _FIELDS.get(kind)
        if field is None:
            continue
        if field in out:
            raise BlobError(f"duplicate entry type {kind}")
        if kind == SEED and length != SEED_LEN:
            raise BlobError(f"entropy seed must be {SEED_LEN} bytes")
        if kind in (NAME, SERVER_NAME):
            limit = MAX_NAME if kind == NAME else MAX_SERVER_NAME
            if not 1 <= length <= limit or any(b < 0x20 or b == 0x7F for b in value):
                raise BlobError(f"{field} must be 1..{limit} printable bytes")
            value = value.decode(errors="replace")
        out[field] = value
    missing = [f for f in _FIELDS.values() if f not in out]
    if missing:
        raise BlobError(f"blob lacks {', '.join(missing)}")
    return out
