"""pytest settings of the conformance suite (found by ``pytest --pyargs
wasmbed_hil.conformance``, also from an installed wheel). The run's header (the plugin's)
says which image and board are checked."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # The suite's module marker; registered here too so that --strict-markers passes
    # whatever the plugin registers.
    config.addinivalue_line("markers", "hil_gateway(**overrides): GatewayConfig overrides")
