"""Entry point of ``python -m wasmbed_hil.kube.apiserver``."""

import sys

from .cli import main

sys.exit(main())
