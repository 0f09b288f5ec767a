"""The CLI's log output: --log-level and --log-format json (wasmbed_hil/cli/logs.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from wasmbed_hil.cli import parser
from wasmbed_hil.cli.logs import JsonFormatter

SERVICE = ["gateway", "--name", "g", "--pki-dir", "p", "--state-dir", "s"]


def test_the_options_parse_and_bad_values_are_refused(capsys):
    args = parser().parse_args(["--log-level", "info", "--log-format", "json", *SERVICE])
    assert (args.log_level, args.log_format) == ("info", "json")
    assert parser().parse_args(SERVICE).log_format == "text"
    for bad in (["--log-level", "verbose"], ["--log-format", "xml"]):
        with pytest.raises(SystemExit) as exit_info:
            parser().parse_args([*bad, *SERVICE])
        assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_json_lines_carry_level_logger_message_extra_fields_and_exceptions():
    """In a fresh interpreter (the root logger is configured once per process), as main()
    configures it: records below the level are dropped, each other one is a JSON object."""
    code = textwrap.dedent("""
        import logging
        from wasmbed_hil.cli import logs
        logs.configure(logging.INFO, "json")
        log = logging.getLogger("wasmbed_hil.gateway")
        log.debug("not shown")
        log.info("device %s connected", "dev-1", extra={"device_id": "ab" * 16, "n": 3})
        try:
            1 / 0
        except ZeroDivisionError:
            log.exception("handler failed")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    lines = [json.loads(line) for line in out.stderr.splitlines()]
    assert [(e["level"], e["logger"], e["message"]) for e in lines] == [
        ("info", "wasmbed_hil.gateway", "device dev-1 connected"),
        ("error", "wasmbed_hil.gateway", "handler failed")]
    assert lines[0]["device_id"] == "ab" * 16 and lines[0]["n"] == 3
    assert lines[0]["time"].endswith("+00:00") and "exception" not in lines[0]
    assert "ZeroDivisionError" in lines[1]["exception"]


def test_a_value_json_cannot_hold_is_written_as_text():
    import logging

    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "m", None, None)
    record.peer = ("127.0.0.1", 4242)
    record.obj = object()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["peer"] == ["127.0.0.1", 4242] and entry["obj"].startswith("<object")
