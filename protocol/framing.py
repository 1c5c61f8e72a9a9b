"""Size-prefixed frames, as a push parser in the style of h11: feed bytes, take frames."""

from __future__ import annotations

import struct

from protocol.errors import FrameTooLarge, InvalidFrame

_SIZE = struct.Struct(">i")

# Kafka's socket.request.max.bytes default.
DEFAULT_MAX_FRAME = 100 * 1024 * 1024


class FrameDecoder:
    """Splits a byte stream into Kafka frames (the 4-byte size prefix removed).

    The size is checked before the body is buffered, so an oversized or negative
    prefix is refused without reading what follows it.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._need: int | None = None
        self.error: Exception | None = None  # a bad size seen behind good frames

    def feed(self, data: bytes) -> list[bytes]:
        """Complete frames so far. A bad size prefix is raised once the frames before it
        are handed out: on this call if there are none, else on the next (see `error`)."""
        if self.error is not None:
            raise self.error
        self._buf += data
        frames: list[bytes] = []
        while True:
            if self._need is None:
                if len(self._buf) < 4:
                    break
                (size,) = _SIZE.unpack_from(self._buf, 0)
                if size < 0 or size > self.max_frame:
                    self.error = (
                        InvalidFrame(f"negative frame size {size}")
                        if size < 0
                        else FrameTooLarge(f"frame of {size} bytes exceeds {self.max_frame}")
                    )
                    if not frames:
                        raise self.error
                    break
                del self._buf[:4]
                self._need = size
            if len(self._buf) < self._need:
                break
            frames.append(bytes(memoryview(self._buf)[: self._need]))  # one copy, not two
            del self._buf[: self._need]
            self._need = None
        return frames

    @property
    def pending(self) -> int:
        """Bytes buffered toward an incomplete frame."""
        return len(self._buf)


def frame(payload: bytes) -> bytes:
    return _SIZE.pack(len(payload)) + payload
