"""Emulated machines: the QEMU machine manager and the TCP bridge to the gateways."""

from .bridge import Bridge, Link, LinkStats

__all__ = ["Bridge", "Link", "LinkStats"]
