"""Link impairments: one class each, hooked into the byte pump (pump.py says how).

Put one on a link with ``link.impairments.impair(Partition())`` (a context manager) or
``add``/``remove``; on the loop that runs the link.
"""

from __future__ import annotations

from .pump import Direction, Impairment, Impairments, Sever


class Partition(Impairment):
    """No byte passes and no connection opens: the connections open when it is applied are
    cut, new ones are refused (accepted and closed at once, as a dead server behind a load
    balancer looks). The fault proxy's cut() is this."""

    def on_add(self, impairments: Impairments) -> None:
        impairments.sever()

    def admit(self) -> None:
        raise Sever("partitioned")

    async def chunk(self, direction: Direction, data: bytes) -> bytes:
        raise Sever("partitioned")
