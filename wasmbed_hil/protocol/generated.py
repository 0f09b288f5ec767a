"""The command line of a file generated from the catalogue (vectors.json, the C header).

`python -m wasmbed_hil.protocol.vectors` / `.cgen` write their file; with `--check` they only
compare it with what they would write and exit 1 when it differs (the drift tests use that).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def generator_main(
    description: str,
    default_path: Path,
    render: Callable[[], str],
    argv: list[str] | None,
    out: Callable[[str], object],
) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--path", type=Path, default=default_path)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        same = args.path.exists() and args.path.read_text(encoding="utf-8") == text
        out(f"{args.path}: {'up to date' if same else 'differs from the generator'}")
        return 0 if same else 1
    args.path.write_text(text, encoding="utf-8")
    out(f"wrote {args.path}")
    return 0
