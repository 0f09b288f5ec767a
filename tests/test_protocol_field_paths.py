"""A field that does not fit is named by its whole path, however deep it sits: the decoder's
hot path formats no path (protocol/fields.py), so its cold path must still name the field."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest

from wasmbed_hil.protocol import ErrorCode, ProtocolError
from wasmbed_hil.protocol.messages import AppState, Heartbeat, decode_envelope

APP = ["app", b"d" * 32, int(AppState.RUNNING)]


@pytest.mark.parametrize(("body", "says"), [
    ([Heartbeat.TAG, -1, 5, []], "Heartbeat.uptime_ms: -1 out of range"),
    ([Heartbeat.TAG, 1, "x", []], "Heartbeat.memory_free: expected unsigned integer, got str"),
    ([Heartbeat.TAG, 1, 5, [APP, ["app", b"d" * 32, 99]]],
     "Heartbeat.apps[1].state: 99 is not a AppState code"),
    ([Heartbeat.TAG, 1, 5, [APP, APP, ["", b"d" * 32, 1]]], "Heartbeat.apps[2].app_id: "),
    ([Heartbeat.TAG, 1, 5, [APP, "no app"]], "Heartbeat.apps[1]: expected AppSummary array"),
    ([Heartbeat.TAG, 1, 5, [APP, ["app", b"d" * 32]]],
     "Heartbeat.apps[1]: AppSummary has 3 fields, got 2"),
])
def test_a_bad_field_is_named_by_its_path(body: list[Any], says: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_envelope(cbor2.dumps([0, 7, body]))
    assert info.value.code is ErrorCode.MALFORMED
    assert str(info.value.reason).startswith(says), info.value.reason


def test_good_fields_decode_by_position() -> None:
    message = decode_envelope(cbor2.dumps([0, 7, [Heartbeat.TAG, 1, 5, [APP, APP]]])).message
    assert isinstance(message, Heartbeat)
    assert (message.uptime_ms, message.memory_free, len(message.apps)) == (1, 5, 2)
    assert message.apps[1].state is AppState.RUNNING and message.apps[0].app_id == "app"
