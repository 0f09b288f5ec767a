"""``python -m wasmbed_hil.bench.machines.renode device|board ...``: render a Renode script."""

from .scripts import main

raise SystemExit(main())
