"""The device's console (UART0 on emulated boards): read it, check what it printed, wait
for a line as it arrives and type a line, named to sit beside Renode's `Wait For Line On
Uart` and `Write Line To Uart`."""

from __future__ import annotations

import re

from robot.api.deco import keyword
from robot.utils import is_truthy

from ..arguments import Timeout
from .component import LibraryComponent


class ConsoleKeywords(LibraryComponent):
    @keyword
    def wait_for_line_on_console(
        self,
        content: str,
        timeout: Timeout = None,
        treat_as_regex: bool = False,
        device: str | None = None,
        from_start: bool = False,
        **renode_style: str,
    ) -> str:
        """Waits until a line of the device's console contains ``content`` (with
        ``treat_as_regex=True``: matches the regular expression ``content``) and returns
        that line. Renode's spelling ``treatAsRegex=`` is accepted too.

        Like pytest's ``device.console.expect``: each wait searches the lines after the
        line the previous wait matched (``from_start=True``: every line so far), then each
        new line as it arrives, never polling. ``timeout`` defaults to the library's. A
        timeout fails with the pattern and the console's last lines; a device whose
        emulator died fails with its exit status instead.

        | Write Line To Console       silent 1
        | Wait For Line On Console    heartbeats silenced
        | ${line}=    Wait For Line On Console    online as [0-9a-f]{32}    treat_as_regex=True
        """
        unknown = set(renode_style) - {"treatAsRegex"}
        if unknown:
            raise TypeError(f"Wait For Line On Console got unexpected arguments: "
                            f"{sorted(unknown)}")
        regex = is_truthy(renode_style.get("treatAsRegex", treat_as_regex))
        dev = self.ctx.device(device)
        console = dev.handle.console
        seconds = self.seconds(timeout)
        start = is_truthy(from_start)
        if regex:
            match = console.expect(content, seconds, from_start=start)
        else:
            match = console.expect_exact(content, seconds, from_start=start)
        return match.string

    @keyword
    def write_line_to_console(self, line: str, device: str | None = None) -> None:
        """Types ``line`` and a line end into the device's console input (the firmware's
        test commands: ``silent 1``, ``silent 0``, ``forget``); on the virtual device its
        console commands, on qemu the emulator's UART0, on Renode the console UART."""
        self.ctx.device(device).handle.console.write_line(line)

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
