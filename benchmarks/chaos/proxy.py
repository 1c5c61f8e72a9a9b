"""A fault-injecting TCP proxy (asyncio), put in front of the object store and etcd.

Modes, switched at any time from another thread with `set_mode`:

- `pass`: bytes flow both ways untouched;
- `slow`: every chunk from the client waits `delay` seconds before it is forwarded;
- `http_error`: existing connections are cut, and every new request is answered by the
  proxy itself with `status` (500 InternalError or 503 SlowDown, S3's XML error body) and
  the connection closed; nothing reaches the server;
- `blackhole`: existing connections are cut and new ones are accepted but never answered
  (an unreachable store: clients see timeouts, not refusals).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

S3_ERRORS = {
    500: ("Internal Server Error", "InternalError", "We encountered an internal error."),
    503: ("Slow Down", "SlowDown", "Please reduce your request rate."),
}


def error_response(status: int) -> bytes:
    reason, code, message = S3_ERRORS[status]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>chaos</RequestId></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head + body


class FaultProxy:
    """Listens on 127.0.0.1:`port` (0: a free one) and forwards to `upstream_port`."""

    def __init__(self, upstream_port: int, name: str = "proxy") -> None:
        self.upstream_port = upstream_port
        self.name = name
        self.port = 0
        self.mode = "pass"
        self.delay = 0.0
        self.status = 503
        self.requests_faulted = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", self.port)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def set_mode(self, mode: str, delay: float = 0.0, status: int = 503) -> None:
        assert mode in ("pass", "slow", "http_error", "blackhole"), mode
        assert self._loop is not None

        def apply() -> None:
            # every change cuts the connections open so far: into a fault, so it applies
            # at once; out of one, so clients held by a blackhole retry now
            self.mode, self.delay, self.status = mode, delay, status
            for w in list(self._conns):
                w.transport.abort()

        self._loop.call_soon_threadsafe(apply)

    def stop(self) -> None:
        if self._loop is None:
            return

        def close() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._conns):
                w.transport.abort()
            self._loop.stop()  # type: ignore[union-attr]

        self._loop.call_soon_threadsafe(close)
        if self._thread is not None:
            self._thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            if self.mode == "blackhole":
                await reader.read()  # hold it open, answer nothing
                return
            if self.mode == "http_error":
                await self._answer_error(reader, writer)
                return
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                return
            self._conns.add(up_w)
            try:
                await asyncio.gather(
                    self._pipe(reader, up_w, True), self._pipe(up_r, writer, False)
                )
            finally:
                self._conns.discard(up_w)
                up_w.transport.abort()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.discard(writer)
            writer.transport.abort()

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool
    ) -> None:
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                if upstream and self.mode == "slow" and self.delay:
                    await asyncio.sleep(self.delay)
                if self.mode in ("blackhole", "http_error"):
                    break
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                dst.write_eof()

    async def _answer_error(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Read one request (head, then Content-Length bytes of body), answer the error."""
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip() or 0)
        with contextlib.suppress(asyncio.TimeoutError):
            if length:
                await asyncio.wait_for(reader.readexactly(length), 5)
        self.requests_faulted += 1
        writer.write(error_response(self.status))
        await writer.drain()
