"""The base of every keyword component: the library it belongs to, and shortcuts into it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..arguments import Timeout

if TYPE_CHECKING:
    from ..library import WasmbedLibrary


class LibraryComponent:
    def __init__(self, ctx: WasmbedLibrary) -> None:
        self.ctx = ctx

    def seconds(self, timeout: Timeout) -> float:
        """A keyword's ``timeout`` in seconds; the library's default when not given."""
        return self.ctx.seconds(timeout)
