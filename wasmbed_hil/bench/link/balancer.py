"""A TCP load balancer in front of several gateways: the seed's Kubernetes Service.

Devices are given one address, the balancer's; each new connection goes to the next live
upstream in turn (round robin over `upstreams()`, asked afresh for each connection), and
an upstream that refuses is skipped, as a Service drops an endpoint whose pod died. When
a gateway dies its devices' connections end with it and their reconnections reach another
gateway: the failover path, identical for virtual and emulated devices since both only
know this address. It is a FaultProxy, so cut() and impairments apply to every device
behind it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence

from .faultproxy import FaultProxy

Endpoint = tuple[str, int]


class Balancer(FaultProxy):
    def __init__(self, upstreams: Callable[[], Sequence[Endpoint]],
                 host: str = "127.0.0.1") -> None:
        super().__init__(("127.0.0.1", 0), host)
        self.upstreams = upstreams
        self.carried: Counter[Endpoint] = Counter()  # connections handed to each upstream
        self._next = 0

    async def _dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        candidates = list(self.upstreams())
        if not candidates:
            raise OSError("no upstream to balance to")
        start, self._next = self._next, self._next + 1
        last: OSError | None = None
        for i in range(len(candidates)):
            endpoint = candidates[(start + i) % len(candidates)]
            try:
                connection = await asyncio.open_connection(*endpoint)
            except OSError as exc:
                last = exc
                continue
            self.carried[endpoint] += 1
            return connection
        raise OSError(f"no upstream accepts connections: {last}")
