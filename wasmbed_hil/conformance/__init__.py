"""The firmware conformance suite: does a firmware image meet docs/firmware-contract.md?

A firmware author runs it against their image, on an emulated board::

    pytest --pyargs wasmbed_hil.conformance --hil-backend=qemu --hil-firmware=my.elf \\
        [--hil-board=my-board.toml]

Each check names the contract clause it checks (C1..C8, the sections of
docs/firmware-contract.md) in its failure message, with the device's last console lines.
Our own image passes every check; a deliberately broken one (``make -C firmware
CONFORMANCE_BREAK=no-heartbeat``) fails C3 and every check that waits on heartbeats.
On the virtual backend it checks the reference model (bench/virtual), which passes too.
"""

from .contract import CLAUSES, Clause, clause

__all__ = ["CLAUSES", "Clause", "clause"]
