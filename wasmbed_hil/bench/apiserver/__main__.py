"""Entry point of ``python -m wasmbed_hil.bench.apiserver``."""

import sys

from .cli import main

sys.exit(main())
