"""`python -m wasmbed_hil` is `wasmbed-hil`."""

import sys

from .cli import main

sys.exit(main())
