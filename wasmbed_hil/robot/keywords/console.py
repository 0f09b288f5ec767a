"""The device's console (UART0 on emulated boards): read it, check what it printed."""

from __future__ import annotations

import re

from robot.api.deco import keyword
from robot.utils import is_truthy

from .component import LibraryComponent


class ConsoleKeywords(LibraryComponent):
    @keyword
    def get_console_log(self, device: str | None = None) -> str:
        """The device's console log so far (UART0 on emulated boards), one line per line."""
        return "\n".join(self.ctx.device(device).handle.console)

    @keyword
    def console_log_should_contain(
        self, text: str, device: str | None = None, regex: bool = False
    ) -> str:
        """Fails unless a line of the device's console so far contains ``text`` (with
        ``regex=True``: matches the regular expression ``text``); returns the first such line.
        It checks what was printed already: wait for the state first (e.g. `Wait Until
        Connected`), then check the console."""
        dev = self.ctx.device(device)
        use_regex = is_truthy(regex)
        for line in dev.handle.console:
            if (re.search(text, line) if use_regex else text in line):
                return line
        how = "matching" if use_regex else "containing"
        raise AssertionError(
            f"{dev.name}'s console has no line {how} {text!r}; its last lines:\n"
            f"{dev.handle.console_tail(20)}"
        )

    @keyword
    def console_log_should_not_contain(
        self, text: str, device: str | None = None, regex: bool = False
    ) -> None:
        """Fails if a line of the device's console so far contains (or matches) ``text``."""
        dev = self.ctx.device(device)
        use_regex = is_truthy(regex)
        for line in dev.handle.console:
            if (re.search(text, line) if use_regex else text in line):
                raise AssertionError(f"{dev.name}'s console has {line!r}")
