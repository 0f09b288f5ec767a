"""Gateways: start, stop, restart, pairing, revocation, the enrolled devices."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from robot.api import logger
from robot.api.deco import keyword
from robot.utils import is_truthy

from ...gateway import GatewayConfig
from ..arguments import Timeout
from .component import LibraryComponent


class GatewayKeywords(LibraryComponent):
    def _options(self, base: GatewayConfig, options: dict[str, Any]) -> dict[str, Any]:
        """Keyword options (``max_devices=2``, ``pairing_timeout=300ms``) to config fields."""
        names = {f.name for f in fields(GatewayConfig)}
        out: dict[str, Any] = {}
        for key, value in options.items():
            name = key if key in names else f"{key}_s"
            if name not in names or name == "name":
                valid = ", ".join(sorted(n.removesuffix("_s") for n in names - {"name"}))
                raise TypeError(f"unknown gateway option {key!r}; valid: {valid}")
            current = getattr(base, name)
            if isinstance(value, str) and value.strip().upper() == "NONE":
                out[name] = None
            elif isinstance(current, bool):
                out[name] = is_truthy(value)
            elif name.endswith("_s"):
                out[name] = self.seconds(value)
            elif isinstance(current, int):
                out[name] = int(value)
            else:
                out[name] = value
        return out

    @keyword
    def start_gateway(
        self,
        name: str = "gateway-0",
        pairing: bool = True,
        heartbeat_interval: Timeout = None,
        heartbeat_timeout: Timeout = None,
        **options: Any,
    ) -> str:
        """Starts an in-process gateway on an OS-chosen port and makes it the current one.

        Settings are the harness's test settings (heartbeat every 200 ms, Unreachable after
        800 ms of silence, pairing on) unless given: ``pairing``, ``heartbeat_interval``,
        ``heartbeat_timeout`` and any other gateway option, with or without its ``_s``
        suffix (``max_devices=2``, ``pairing_timeout=300ms``, ``max_frame_size=4096``).
        Starting a stopped gateway again starts it on its old endpoint and local cache.
        Returns the gateway's name.

        | Start Gateway
        | Start Gateway    pairing=False    heartbeat_interval=100ms    heartbeat_timeout=1s
        """
        if name in self.ctx.gateway_names():
            if options or heartbeat_interval or heartbeat_timeout:
                raise AssertionError(
                    f"gateway {name!r} exists already: use 'Restart Gateway' to change options"
                )
            _, existing = self.ctx.gateway(name)
            existing.start()
            self.ctx.current_gateway = name
            return name
        overrides: dict[str, Any] = {"name": name, "pairing": pairing}
        if heartbeat_interval is not None:
            overrides["heartbeat_interval_s"] = self.seconds(heartbeat_interval)
        if heartbeat_timeout is not None:
            overrides["heartbeat_timeout_s"] = self.seconds(heartbeat_timeout)
        base = GatewayConfig.for_tests()
        overrides.update(self._options(base, options))
        config = GatewayConfig.for_tests(**overrides)
        handle = self.ctx.add_gateway(config)
        handle.start()
        host, port = handle.endpoint
        logger.info(
            f"gateway {name} listening on {host}:{port} (pairing "
            f"{'on' if config.pairing else 'off'}, heartbeat {config.heartbeat_interval_s:g}s, "
            f"timeout {config.heartbeat_timeout_s:g}s)"
        )
        return name

    @keyword
    def stop_gateway(self, name: str | None = None) -> None:
        """Stops a gateway (connections drop); its endpoint and local cache are kept, so
        `Start Gateway` with the same name brings it back as it was."""
        _, handle = self.ctx.gateway(name)
        handle.stop()

    @keyword
    def restart_gateway(self, name: str | None = None, **options: Any) -> None:
        """Stops and starts a gateway on the same endpoint with the same local cache, with
        options changed if given (same options as `Start Gateway`).

        | Restart Gateway    pairing=False
        """
        _, handle = self.ctx.gateway(name)
        handle.restart(**self._options(handle.config, options))

    @keyword
    def enable_pairing(self, gateway: str | None = None, duration: Timeout = None) -> None:
        """Turns pairing mode on: unknown devices may enroll. With ``duration`` it turns
        itself off after that long."""
        _, handle = self.ctx.gateway(gateway)
        handle.set_pairing(True, None if duration is None else self.seconds(duration))

    @keyword
    def disable_pairing(self, gateway: str | None = None) -> None:
        """Turns pairing mode off: unknown devices are refused, enrolled ones still connect."""
        _, handle = self.ctx.gateway(gateway)
        handle.set_pairing(False)

    @keyword
    def revoke_device(self, device: str | None = None) -> None:
        """Revokes a device's identity at its gateway: its session is dropped and it is
        refused (REVOKED) from now on."""
        dev = self.ctx.device(device)
        dev.gateway.revoke(dev.handle.identity)
        logger.info(f"revoked {dev.name} ({dev.handle.identity[:12]})")

    @keyword
    def gateway_should_have_devices(self, count: int, gateway: str | None = None) -> None:
        """Fails unless the gateway has exactly ``count`` enrolled devices."""
        name, handle = self.ctx.gateway(gateway)
        devices = handle.devices()
        if len(devices) != int(count):
            listed = ", ".join(f"{d.name} ({d.phase.value})" for d in devices) or "none"
            raise AssertionError(
                f"gateway {name} has {len(devices)} enrolled devices, expected {count}: {listed}"
            )
