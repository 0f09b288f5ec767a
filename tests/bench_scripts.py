"""The scripts of benchmarks/ as modules, for their tests: loaded once per process by plain
name, with benchmarks/ on sys.path, since the scripts import their siblings that way; and
what those tests share (an MQTT server's check, the child processes left)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import ssl
import sys
from pathlib import Path
from types import ModuleType

import pytest

from wasmbed_hil.pki import FleetCA, client_ssl_context

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str) -> ModuleType:
    """benchmarks/NAME.py as the module NAME (the one already loaded, if any)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def mqtt_pings_and_refusal(mqtt: ModuleType, ca_dir: Path, port: int) -> list[float]:
    """Against an MQTT server on 127.0.0.1:`port` that requires client certificates of the
    FleetCA saved in `ca_dir` (Mosquitto, or bench_mosquitto's floor): a client certified by
    it connects and gets three PINGRESPs; one without a certificate is refused. Returns the
    certified client's round trips (s)."""
    ca = FleetCA.load(ca_dir)
    ca.issue_device("dev-1").write(ca_dir.parent / "dev-1")
    client = mqtt.Client("dev-1", client_ssl_context(ca_dir.parent / "dev-1"))
    no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    no_cert.load_verify_locations(cadata=ca.cert_pem.decode())

    async def scenario() -> None:
        await client.connect("127.0.0.1", port, 2, 10)
        await client.ping_loop(0.05, 5, limit=3)
        assert client.state == "connected", client.error
        await client.close()
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=no_cert, server_hostname="127.0.0.1")
            writer.write(mqtt.connect_packet("anon", 2))
            await asyncio.wait_for(reader.readexactly(4), 10)

    asyncio.run(asyncio.wait_for(scenario(), 30))
    return list(client.rtts)


def children() -> set[int]:
    """Live (not zombie) child processes of this test process: a test that starts scripts
    checks none is left."""
    me = os.getpid()
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            out.add(int(entry))
    return out
