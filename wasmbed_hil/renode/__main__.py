"""``python -m wasmbed_hil.renode device|board ...``: render a Renode script by hand."""

from .scripts import main

raise SystemExit(main())
