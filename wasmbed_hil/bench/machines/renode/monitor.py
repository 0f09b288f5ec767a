"""A client for Renode's monitor: the telnet port of ``renode --port N``, or pyrenode3.

The monitor is a line-oriented shell (AntShell) behind a telnet-flavoured TCP socket. What
a client sees, from Renode's sources (renode 06854d4d, renode-infrastructure 0c7d0762,
AntShell 2b60558; file:line in tests/data/renode/README.md):

- On connect the server sends telnet negotiation: IAC DO BINARY, IAC DO NAWS (since infra
  54c1bbe72, 2026-02-16), IAC WILL ECHO, IAC WILL SUPPRESS-GO-AHEAD, IAC WONT LINEMODE.
  The 1.15.x line read exactly one 3-byte answer per DO/WILL before handing the connection
  to the shell (bytes sent before were swallowed); since infra 933d56403 (2025-05) replies
  are parsed. So the client parses the negotiation and answers first, one answer per
  DO/WILL (NAWS refused: a width of 0 keeps AntShell from wrapping long echoes), none for
  WONT/DONT.
- Then ESC[0m, the banner ("Renode, version 1.16.1 (…)": no revision, so a nightly
  looks like the release before it; no clear screen), "\\n\\r\\n\\r" and the prompt
  "(monitor) " in red (SGR 91). After ``mach create "x"`` the prompt is "(x) " in SGR 33.
- Every command is echoed as typed, Enter answers "\\n\\r", then the command's output,
  then the prompt again. A line of output ends in "\\r\\n\\r" (a coloured one has each
  character in its own SGR pair), an error line in "\\r\\n".
- Errors have no channel of their own: they are text in red (SGR 91) unless Renode runs
  with --plain, phrased "No such command or device: …", "There was an error executing
  command '…': " (then the exception's message), "Error E04: …", "Could not tokenize
  here: …". An error inside ``include`` stops the script at that line.
- ``quit`` prints "Renode is quitting" (green) and the connection closes; no prompt follows.

So a reply is complete when the received text ends in a prompt at the start of a line; the
echo is dropped; a reply is an error when any of it was red or starts with one of those
phrases. The parsing is sans-I/O (MonitorParser); MonitorClient adds an asyncio transport.

Synchronising after connect: whether the banner and its prompt have been sent yet depends
on timing, so counting prompts cannot tell where the first reply starts. The client sends a
token that is not a command (``wasmbed_sync_<hex>``); the monitor answers "No such command
or device: wasmbed_sync_<hex>" and a prompt. The block that contains the token ends the
greeting; everything before it is skipped.

Transcript format (recorded by MonitorClient when given a file, replayed by the fake
monitor in tests/test_renode_monitor.py, fixtures in tests/data/renode/):

    # comment
    S: <bytes the server sent>      escaped: \\\\ \\n \\r \\t \\e (ESC) \\xNN; others as is
    C: <bytes the client sent>
    S! close                        the server closed the connection
"""

from __future__ import annotations

import asyncio
import codecs
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from ...errors import InfrastructureError

IAC, SE, SB, WILL, WONT, DO, DONT = 255, 240, 250, 251, 252, 253, 254
OPT_BINARY, OPT_ECHO, OPT_SGA = 0, 1, 3

#: A prompt: "(monitor) " or "(machine-name) " at the start of a line, ending the text.
PROMPT = re.compile(r"(?:\A|\n)\((?P<name>[^()\s]{1,64})\) \Z")
#: How the monitor words its refusals (the text of the line, at its start).
ERROR_LINE = re.compile(
    r"^(?:There was an error|No such command or device|Could not tokenize|Bad parameters"
    r"|Internal error|Errors? during compilation|Failed to download|Could not find"
    r"|Error E\d+|Error:|[\w.]*Exception\b)",
    re.IGNORECASE,
)
VERSION = re.compile(r"version (\d+)\.(\d+)\.(\d+)")
SYNC_PREFIX = "wasmbed_sync_"
INCLUDE = re.compile(r"include @(\S+)")


class MonitorError(InfrastructureError):
    """The monitor could not be reached, closed, or did not answer in time."""


class MonitorCommandError(MonitorError):
    """Renode answered a command with an error; ``reply`` has the whole answer."""

    def __init__(self, reply: MonitorReply) -> None:
        self.reply = reply
        detail = "; ".join(reply.errors) or reply.output or "(no text)"
        super().__init__(f"renode monitor: {reply.command!r} failed: {detail}")


@dataclass(frozen=True)
class MonitorReply:
    command: str
    output: str  # the text between the echo and the next prompt, "\r" removed
    errors: tuple[str, ...]  # lines written in red or worded as errors
    prompt: str  # the prompt that ended the reply ("monitor", a machine name)

    @property
    def ok(self) -> bool:
        return not self.errors


# --- sans-I/O ------------------------------------------------------------------------------


class TelnetDecoder:
    """Removes telnet commands from the server's bytes and works out the answers."""

    def __init__(self) -> None:
        self._state = "data"
        self._verb = 0
        self.options_seen = 0

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """(payload, answer): the bytes meant for the terminal, and what to send back."""
        payload = bytearray()
        answer = bytearray()
        for b in data:
            state = self._state
            if state == "data":
                if b == IAC:
                    self._state = "iac"
                else:
                    payload.append(b)
            elif state == "iac":
                if b == IAC:  # an escaped 0xFF data byte
                    payload.append(IAC)
                    self._state = "data"
                elif b in (WILL, WONT, DO, DONT):
                    self._verb = b
                    self._state = "option"
                elif b == SB:
                    self._state = "sb"
                else:  # NOP, GA, AYT...: nothing to do
                    self._state = "data"
            elif state == "option":
                self.options_seen += 1
                answer += self.answer(self._verb, b)
                self._state = "data"
            elif state == "sb":
                if b == IAC:
                    self._state = "sb_iac"
            else:  # sb_iac
                self._state = "data" if b == SE else "sb"
        return bytes(payload), bytes(answer)

    @property
    def idle(self) -> bool:
        """Not in the middle of a telnet command."""
        return self._state == "data"

    @staticmethod
    def answer(verb: int, option: int) -> bytes:
        """One answer per DO/WILL (binary, echo and go-ahead suppression agreed to, anything
        else refused); none for WONT/DONT, which ask for what is already the case."""
        if verb == DO:
            return bytes([IAC, WILL if option == OPT_BINARY else WONT, option])
        if verb == WILL:
            return bytes([IAC, DO if option in (OPT_ECHO, OPT_SGA) else DONT, option])
        return b""


class TerminalText:
    """The shell's output as plain text, with which characters were written in red.

    UTF-8 is decoded incrementally; ANSI escape sequences are dropped (SGR colour changes
    are followed to know what is red); "\\r" and other control characters except "\\n" and
    "\\t" are dropped."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._escape = ""  # an escape sequence being read
        self.red = False

    def feed(self, data: bytes) -> list[tuple[str, bool]]:
        runs: list[tuple[str, bool]] = []
        text = ""
        for ch in self._utf8.decode(data):
            if self._escape:
                self._escape += ch
                if self._escape_done():
                    if text:
                        runs.append((text, self.red))
                        text = ""
                    self._apply(self._escape)
                    self._escape = ""
                continue
            if ch == "\x1b":
                self._escape = ch
            elif ch in "\n\t" or (ch >= " " and ch != "\x7f"):
                text += ch
        if text:
            runs.append((text, self.red))
        return runs

    def _escape_done(self) -> bool:
        seq = self._escape
        if len(seq) < 2:
            return False
        if seq[1] != "[":  # ESC + one character (ESC D, ESC 7, ...)
            return True
        return (len(seq) > 2 and "\x40" <= seq[-1] <= "\x7e") or len(seq) > 32

    def _apply(self, seq: str) -> None:
        if not (seq.startswith("\x1b[") and seq.endswith("m")):
            return
        for param in seq[2:-1].split(";") or [""]:
            if param in ("", "0", "39"):
                self.red = False
            elif param in ("31", "91"):
                self.red = True
            elif param.isdigit() and (30 <= int(param) <= 37 or 90 <= int(param) <= 97):
                self.red = False


@dataclass(frozen=True)
class Block:
    """Everything the monitor wrote up to a prompt."""

    text: str
    red: str  # the red characters of text, other characters replaced by spaces
    prompt: str


class MonitorParser:
    """Feed it the server's bytes; it answers telnet negotiation and cuts the text at prompts."""

    def __init__(self) -> None:
        self.telnet = TelnetDecoder()
        self.terminal = TerminalText()
        self._text = ""
        self._red = ""
        self.seen_text = False
        self.blocks: list[Block] = []

    def receive(self, data: bytes) -> bytes:
        """Take bytes from the server; returns the telnet answers to send back at once."""
        payload, answer = self.telnet.feed(data)
        for text, red in self.terminal.feed(payload):
            self.seen_text = True
            self._text += text
            self._red += text if red else re.sub(r"[^\n]", " ", text)
        if m := PROMPT.search(self._text):
            self.blocks.append(Block(self._text[: m.start()], self._red[: m.start()], m["name"]))
            self._text = self._red = ""
        return answer

    @property
    def pending(self) -> str:
        """Text received since the last prompt."""
        return self._text

    def take(self) -> Block | None:
        return self.blocks.pop(0) if self.blocks else None


def reply_from_block(command: str, block: Block) -> MonitorReply:
    """The reply to ``command``: its echo dropped, errors found by colour and by wording."""
    lines = block.text.split("\n")
    red_lines = block.red.split("\n")
    if lines and lines[0].strip() == command.strip():
        lines, red_lines = lines[1:], red_lines[1:]
    while lines and not lines[-1].strip():
        lines, red_lines = lines[:-1], red_lines[:-1]
    errors: list[str] = []
    for line, red in zip(lines, red_lines, strict=True):
        red_text = red.strip()
        if red_text and red_text not in errors:
            errors.append(red_text)
        elif ERROR_LINE.match(line.strip()) and line.strip() not in errors:
            errors.append(line.strip())
    return MonitorReply(command, "\n".join(lines), tuple(errors), block.prompt)


def parse_version(text: str) -> tuple[int, int, int] | None:
    m = VERSION.search(text)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


# --- transcripts ---------------------------------------------------------------------------


def escape(data: bytes) -> str:
    out = []
    for b in data:
        ch = chr(b)
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif b == 0x1B:
            out.append("\\e")
        elif 0x20 <= b < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def unescape(text: str) -> bytes:
    out = bytearray()
    i = 0
    simple = {"\\": 0x5C, "n": 0x0A, "r": 0x0D, "t": 0x09, "e": 0x1B}
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out += ch.encode()
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt in simple:
            out.append(simple[nxt])
            i += 2
        elif nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2 : i + 4]):
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        else:
            raise ValueError(f"bad escape at {i} in {text!r}")
    return bytes(out)


@dataclass(frozen=True)
class TranscriptStep:
    direction: str  # "S" server sends, "C" client must send, "close" server closes
    data: bytes


def parse_transcript(text: str, values: dict[str, str] | None = None) -> list[TranscriptStep]:
    """Steps of a transcript; ``{name}`` is replaced by values[name] before unescaping.
    Consecutive server lines are merged into one step; each client line is a step."""
    steps: list[TranscriptStep] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.startswith("#"):
            continue
        if raw.strip() == "S! close":
            steps.append(TranscriptStep("close", b""))
            continue
        kind, sep, rest = raw.partition(": ")
        if not sep or kind not in ("S", "C"):
            raise ValueError(f"transcript line {lineno}: expected 'S: ', 'C: ' or 'S! close'")
        for name, value in (values or {}).items():
            rest = rest.replace("{" + name + "}", value)
        data = unescape(rest)
        if kind == "S" and steps and steps[-1].direction == "S":
            steps[-1] = TranscriptStep(kind, steps[-1].data + data)
        else:
            steps.append(TranscriptStep(kind, data))
    return steps


# --- transports ----------------------------------------------------------------------------


class MonitorTransport(Protocol):
    """What the machine driver needs from a monitor, whatever carries the commands."""

    history: list[str]

    async def execute(
        self, command: str, timeout: float = 30.0, check: bool = True
    ) -> MonitorReply: ...

    async def quit(self, timeout: float = 10.0) -> str: ...

    def close(self) -> None: ...


def _check_command(command: str) -> str:
    if not command.strip() or any(c in command for c in "\r\n\x00"):
        raise ValueError(f"one non-empty line per monitor command: {command!r}")
    return command


class MonitorClient:
    """Renode's monitor over its telnet port (``renode --port N``)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        record: TextIO | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._record = record
        self._parser = MonitorParser()
        self._lock = asyncio.Lock()
        self._eof = False
        self.greeting = ""
        self.version: tuple[int, int, int] | None = None
        self.prompt = ""
        self.history: list[str] = []  # commands sent, sync token excluded

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        timeout: float = 30.0,
        record: TextIO | None = None,
        sync_token: str | None = None,
    ) -> MonitorClient:
        """Connect, answer the negotiation and synchronise on a token (see the module doc)."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, TimeoutError) as exc:
            raise MonitorError(f"renode monitor at {host}:{port}: cannot connect: {exc}") from exc
        client = cls(reader, writer, record=record)
        try:
            await client._sync(sync_token or SYNC_PREFIX + secrets.token_hex(4), timeout)
        except BaseException:
            client.close()
            raise
        return client

    async def _sync(self, token: str, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        # Answers to the negotiation go out as it arrives (in _read); the token waits for the
        # first text, which Renode sends only once it has read those answers.
        while not self._parser.seen_text:
            await self._read(deadline, f"the greeting (sent so far: {self._parser.pending!r})")
        self._send(token + "\n")
        greeting: list[str] = []
        while True:
            block = self._parser.take()
            if block is None:
                await self._read(deadline, f"an answer to the sync token {token!r}")
                continue
            if token in block.text:
                break
            greeting.append(block.text)
        self.greeting = "\n".join(greeting)
        self.version = parse_version(self.greeting + block.text)
        self.prompt = block.prompt

    def _send(self, text: str) -> None:
        data = text.encode()
        if self._record is not None:
            self._record.write(f"C: {escape(data)}\n")
        self._writer.write(data)

    async def _read(self, deadline: float, waiting_for: str) -> None:
        remaining = deadline - asyncio.get_running_loop().time()
        if self._eof:
            raise MonitorError(f"renode monitor closed while waiting for {waiting_for}")
        try:
            data = await asyncio.wait_for(self._reader.read(65536), max(remaining, 0))
        except TimeoutError:
            raise MonitorError(
                f"renode monitor: timed out waiting for {waiting_for} (received since the "
                f"last prompt: {self._parser.pending[-500:]!r})"
            ) from None
        except (ConnectionError, OSError) as exc:
            self._eof = True
            raise MonitorError(f"renode monitor: connection lost waiting for {waiting_for}: "
                               f"{exc}") from exc
        if not data:
            self._eof = True
            if self._record is not None:
                self._record.write("S! close\n")
            raise MonitorError(
                f"renode monitor closed while waiting for {waiting_for}; last text: "
                f"{self._parser.pending[-500:]!r}"
            )
        if self._record is not None:
            self._record.write(f"S: {escape(data)}\n")
        answer = self._parser.receive(data)
        if answer:
            if self._record is not None:
                self._record.write(f"C: {escape(answer)}\n")
            self._writer.write(answer)

    async def execute(
        self, command: str, timeout: float = 30.0, check: bool = True
    ) -> MonitorReply:
        """Run one command; returns its reply, or raises MonitorCommandError (check=True)
        when Renode answered with an error, MonitorError when it did not answer."""
        _check_command(command)
        async with self._lock:
            self._parser.blocks.clear()  # nothing else can be waiting for them
            deadline = asyncio.get_running_loop().time() + timeout
            self.history.append(command)
            self._send(command + "\n")
            while (block := self._parser.take()) is None:
                await self._read(deadline, f"the prompt after {command!r}")
            reply = reply_from_block(command, block)
            self.prompt = reply.prompt
        if check and not reply.ok:
            raise MonitorCommandError(reply)
        return reply

    async def quit(self, timeout: float = 10.0) -> str:
        """Send ``quit`` and wait until Renode closes the connection; returns its last words."""
        async with self._lock:
            self.history.append("quit")
            self._send("quit\n")
            deadline = asyncio.get_running_loop().time() + timeout
            text = []
            while True:
                try:
                    await self._read(deadline, "the connection to close after quit")
                except MonitorError:
                    if self._eof:
                        break
                    raise
                text.extend(b.text for b in self._parser.blocks)
                self._parser.blocks.clear()
            return "\n".join([*text, self._parser.pending]).strip()

    def close(self) -> None:
        self._writer.close()


class Pyrenode3Monitor:
    """The same interface over pyrenode3, which runs Renode inside this Python process.

    ``pyrenode3.wrappers.Monitor().execute(command)`` returns (output, error): errors have
    their own channel there. Calls block, so they run in a worker thread; a call that
    overruns its timeout cannot be interrupted and is left to finish in that thread.

    ``include @file`` is the exception: Renode runs the script without the caller's
    output channel (infra IncludeFileCommand.cs:93, Monitor.cs:1028 binds
    ``x => TryExecuteScript(x)``), so its errors go to the monitor's own interaction and
    ``execute`` would return ("", "") even when loading the platform failed. An include
    therefore goes through ``execute_script(path)``, which clears that interaction, runs
    the script and returns what it holds (pyrenode3 wrappers/monitor.py).
    """

    def __init__(self, monitor: Any) -> None:
        self._monitor = monitor
        self._lock = asyncio.Lock()
        self.history: list[str] = []
        self.prompt = "monitor"

    @classmethod
    def load(cls) -> Pyrenode3Monitor:
        try:
            from pyrenode3.wrappers import Monitor  # type: ignore[import-not-found]
        except Exception as exc:  # ImportError, or Renode's runtime failing to load
            raise MonitorError(f"pyrenode3 could not load Renode: {exc}") from exc
        return cls(Monitor())

    async def execute(
        self, command: str, timeout: float = 30.0, check: bool = True
    ) -> MonitorReply:
        _check_command(command)
        async with self._lock:
            self.history.append(command)
            try:
                output, error = await asyncio.wait_for(
                    asyncio.to_thread(self._call, command), timeout
                )
            except TimeoutError:
                raise MonitorError(
                    f"pyrenode3: {command!r} did not return in {timeout:g}s"
                ) from None
        out_lines = [line.rstrip() for line in str(output or "").replace("\r", "").split("\n")]
        errors = [line.strip() for line in str(error or "").replace("\r", "").split("\n")]
        errors = [e for e in errors if e]
        errors += [ln.strip() for ln in out_lines if ERROR_LINE.match(ln.strip())]
        reply = MonitorReply(command, "\n".join(out_lines).strip("\n"), tuple(errors), "")
        if check and not reply.ok:
            raise MonitorCommandError(reply)
        return reply

    def _call(self, command: str) -> tuple[Any, Any]:
        script = INCLUDE.fullmatch(command)
        if script is None:
            return self._monitor.execute(command)  # type: ignore[no-any-return]
        return self._monitor.execute_script(script[1])  # type: ignore[no-any-return]

    async def quit(self, timeout: float = 10.0) -> str:
        return ""  # Renode lives in this process: quitting it would end every machine here

    def close(self) -> None:
        pass


def commands_of(steps: Iterable[TranscriptStep], skip: Sequence[bytes] = ()) -> list[str]:
    """The command lines a transcript's client sends (telnet answers and ``skip`` left out)."""
    out = []
    for step in steps:
        if step.direction != "C" or not step.data.endswith(b"\n") or step.data[:1] == b"\xff":
            continue
        if any(step.data.startswith(s) for s in skip):
            continue
        out.append(step.data.decode().rstrip("\n"))
    return out
