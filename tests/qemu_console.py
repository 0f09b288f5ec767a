"""A qemu-system-arm process whose UART0 (its stdio) is read line by line, for firmware tests
that run QEMU directly (without the harness's machine manager)."""

from __future__ import annotations

import queue
import subprocess
import threading
import time


class Console:
    """qemu-system-arm with UART0 on a pipe, read line by line by a thread."""

    def __init__(self, argv: list[str]) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.lines: queue.Queue[tuple[float, str | None]] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            self.output.append(line)
            self.lines.put((time.monotonic(), line))
        self.lines.put((time.monotonic(), None))

    def wait_for(self, *texts: str, timeout: float = 30.0) -> tuple[float, str]:
        """Seconds since QEMU started and the first line containing one of texts."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                when, line = self.lines.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                raise AssertionError(
                    f"none of {texts} on UART0 within {timeout} s:\n" + "\n".join(self.output)
                ) from None
            if line is None:
                raise AssertionError(
                    f"qemu exited ({self.proc.poll()}) before {texts}:\n" + "\n".join(self.output)
                )
            if any(text in line for text in texts):
                return when - self.started, line

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
