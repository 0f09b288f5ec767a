"""Enumerations shared by the protocol, the gateway, the devices and the firmware.

Every numeric value here is part of the wire format: never renumber, only append.
The same tables are in docs/protocol.md and in protocol.cddl.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Outcome(IntEnum):
    """How one execution of a WebAssembly entry point ended."""

    RETURNED = 0  # the entry returned normally; values carry its results
    TRAPPED = 1  # a WebAssembly trap (unreachable, division by zero, bounds...)
    OUT_OF_FUEL = 2  # the fuel (instruction) budget ran out
    OUT_OF_MEMORY = 3  # the memory limit refused the module's memory
    TIMED_OUT = 4  # the wall-clock budget ran out
    STOPPED = 5  # stopped on request (StopApp) before it ended by itself
    LOAD_FAILED = 6  # the module could not be instantiated (imports, entry, arguments)


class ErrorCode(IntEnum):
    """Stable error codes carried by Error and EnrollReject messages and deploy/stop acks."""

    # 1xx: framing and protocol
    MALFORMED = 100  # bytes that are not a valid envelope or message
    UNSUPPORTED_VERSION = 101  # envelope version other than 0
    UNKNOWN_MESSAGE = 102  # tag not in the catalogue (or wrong direction)
    UNEXPECTED_MESSAGE = 103  # valid message, wrong state
    FRAME_TOO_LARGE = 104  # announced length above the receiver's limit
    TIMEOUT = 105  # the peer was too slow (handshake, hello, partial frame)
    # 2xx: identity and enrollment
    PAIRING_DISABLED = 200  # unknown identity while pairing mode is off
    KEY_MISMATCH = 201  # enrollment public key differs from the TLS certificate's
    BAD_PROOF = 202  # enrollment signature does not verify
    REVOKED = 203  # the certificate or identity has been revoked
    NOT_ENROLLED = 204  # the device claimed an id the gateway does not know for it
    CAPACITY = 205  # the gateway holds its maximum number of devices
    BAD_CERTIFICATE = 206  # a CA-signed certificate unfit for a device (CA:TRUE, no clientAuth)
    # 3xx: deployment and applications
    MODULE_TOO_LARGE = 300  # module above the device's (or gateway's) limit
    DIGEST_MISMATCH = 301  # the received bytes do not hash to the announced digest
    INVALID_MODULE = 302  # not a loadable WebAssembly module
    UNKNOWN_APP = 303  # no application with that id on the device
    BAD_OFFSET = 304  # a chunk that does not continue the transfer
    NO_SPACE = 305  # the device cannot store the module
    BUSY = 306  # the application is already running
    # 5xx: internal
    INTERNAL = 500
    SHUTTING_DOWN = 501


class AppState(IntEnum):
    """State of one application on a device, as the device reports it."""

    DEPLOYING = 0
    INSTALLED = 1
    RUNNING = 2
    STOPPED = 3
    FAILED = 4


class DevicePhase(StrEnum):
    """A device as the gateway (and later the Device resource) sees it. Names follow upstream."""

    PENDING = "Pending"
    ENROLLING = "Enrolling"
    ENROLLED = "Enrolled"
    CONNECTED = "Connected"
    DISCONNECTED = "Disconnected"
    UNREACHABLE = "Unreachable"
