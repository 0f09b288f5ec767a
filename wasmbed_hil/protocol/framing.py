"""Length-prefixed framing: a 4-byte big-endian length, then that many bytes of envelope."""

from __future__ import annotations

from collections.abc import Iterator

from .messages import ProtocolError
from .types import ErrorCode

HEADER = 4
MIN_FRAME_LIMIT = 1024  # every party accepts frames at least this large
UPSTREAM_MAX_FRAME = 16 * 1024 * 1024


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(HEADER, "big") + payload


class FrameBuffer:
    """Accumulates stream bytes and yields complete frame payloads.

    The announced length is checked against `max_frame` before any payload is buffered, so a
    peer can never make the receiver hold more than `max_frame + 4` bytes.
    """

    def __init__(self, max_frame: int) -> None:
        if not MIN_FRAME_LIMIT <= max_frame <= UPSTREAM_MAX_FRAME:
            allowed = f"{MIN_FRAME_LIMIT}..{UPSTREAM_MAX_FRAME}"
            raise ValueError(f"max_frame {max_frame} outside {allowed}")
        self.max_frame = max_frame
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held (0 between frames)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        return list(self.frames(data))

    def frames(self, data: bytes) -> Iterator[bytes]:
        """Yield each complete frame as soon as it is whole.

        A bad length prefix raises only after the frames before it were yielded, so a valid
        message followed by garbage is still delivered; the buffer is then emptied.
        """
        if not self._buf and len(data) > HEADER:  # the common case: one whole frame alone
            length = int.from_bytes(data[:HEADER], "big")
            if len(data) == HEADER + length and length <= self.max_frame:
                yield bytes(data[HEADER:])
                return
        self._buf += data
        while len(self._buf) >= HEADER:
            length = int.from_bytes(self._buf[:HEADER], "big")
            if length == 0 or length > self.max_frame:
                self._buf.clear()
                if length == 0:
                    raise ProtocolError(ErrorCode.MALFORMED, "empty frame")
                raise ProtocolError(
                    ErrorCode.FRAME_TOO_LARGE, f"frame of {length} bytes exceeds {self.max_frame}"
                )
            if len(self._buf) < HEADER + length:
                break
            payload = bytes(self._buf[HEADER : HEADER + length])
            del self._buf[: HEADER + length]
            yield payload
