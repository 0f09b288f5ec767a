"""Garbage a test leaves, and only that: the ResourceWarnings of what it did not close.

`own_garbage()` freezes what exists when the block starts (earlier tests' garbage included:
it is not this test's), and at the end collects what the block made, so an unclosed socket
or transport warns inside the test that leaked it. Only new objects are traversed, so the
check stays cheap late in a long run, where a full collection costs a tenth of a second.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def own_garbage() -> Iterator[list[warnings.WarningMessage]]:
    """Collect what the block left at its end; yields the warnings recorded meanwhile."""
    gc.freeze()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            yield caught
            gc.collect()
    finally:
        gc.unfreeze()


def resource_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
