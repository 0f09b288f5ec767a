"""The renode-test backend: each device a machine of the Renode that ``renode-test`` runs,
so that Renode's own Robot keywords (``Execute Command``, ``Create Terminal Tester``,
``Wait For Line On Uart``) act on it while ours drive the gateway and deployments.

Same image, blob, platform and device script as the renode backend (renode/
wasmbed-device.resc, rendered per boot), but no Renode process of ours: the script's
commands go one by one through renode-test's keyword server (``ExecuteCommand`` over
XML-RPC, bench.machines.renode.remote), whose URL is $WASMBED_RENODE_REMOTE
(``--renode-remote``; the Robot library sets it from ``${PORT_NUMBER}`` in `Wasmbed Suite
Setup`). Boot N of device D is machine ``D_b<N>`` (`Get Renode Machine` names it); each boot
writes its own console log, since Renode keeps a file backend after ``mach rem``.
"""

from __future__ import annotations

from pathlib import Path

from ..loop import LoopThread
from ..machines.renode.machine import RenodeMachine
from ..machines.renode.remote import RemoteMonitor, check_url
from ..machines.renode.scripts import machine_name
from ..seams import Link
from .base import BackendOption, register
from .firmware import FirmwareBackend, image_unavailable_reason
from .renode import device_script

__all__ = ["REMOTE", "RenodeTestBackend"]

REMOTE = BackendOption(
    "--renode-remote", "WASMBED_RENODE_REMOTE",
    "the keyword server of renode-test's Renode, e.g. http://127.0.0.1:9999/ (robot: set "
    "from ${PORT_NUMBER} by Wasmbed Suite Setup)",
    backends="renode-test",
)


@register
class RenodeTestBackend(FirmwareBackend):
    name = "renode-test"
    emulator = "Renode"
    options = (*FirmwareBackend.options, REMOTE)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        url = REMOTE.value()
        if not url:
            return (f"no renode-test keyword server: run the suite with renode-test (Wasmbed "
                    f"Suite Setup sets it from ${{PORT_NUMBER}}) or set {REMOTE.env}")
        try:
            check_url(url)
        except ValueError as exc:
            return f"{REMOTE.env}: {exc}"
        return image_unavailable_reason()

    def __init__(self, loop: LoopThread, workdir: Path) -> None:
        super().__init__(loop, workdir)
        self.url = check_url(REMOTE.value() or "")
        self.monitor = RemoteMonitor(self.url)  # one server: one call at a time for all

    def make_machine(self, name: str, devdir: Path, blob: Path, link: Link) -> RenodeMachine:
        elf = self.image_of(name)
        script = device_script(self.board_spec, elf, blob, devdir)
        return RenodeMachine(
            machine_name(name), devdir, script, link=("127.0.0.1", link.port),
            control="remote", monitor=self.monitor, image=elf,
        )
