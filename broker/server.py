"""The asyncio front end: one reader and one responder task per client connection.

The contract per connection, as Kafka clients rely on it (Kafka itself runs one request
per connection at a time):
- Requests take effect one at a time, in arrival order: a request starts only when
  every earlier one on the connection has been applied, so it sees all their effects
  (DeleteRecords then ListOffsets, CreateTopics then Metadata, OffsetCommit then
  OffsetFetch, IncrementalAlterConfigs then DescribeConfigs).
- Only waits that hold no state overlap. A handler whose request has taken effect and
  now only waits returns a `Deferred` (a produce waiting for its fsync or upload after
  its append, a long-poll Fetch, a parked JoinGroup or SyncGroup); the reader moves on
  to the next request meanwhile. Produces pipeline behind each other this way, as fast
  as before. A produce's last effect, the high watermark moving, comes with its ack, so
  a request other than a produce first waits for the acks of the produces before it.
- Answers go back in request order. A handler that fails unexpectedly closes the
  connection after the answers to the requests before it; the requests after it are
  dropped (never applied).
- A request that has started runs to its end whatever happens to the connection: a
  client that leaves mid-request, or the broker shutting down, never cancels a
  handler half way through a change (a metadata write whose ETag is then lost, a
  rollback of what storage already holds). Only its answer is dropped. Deferred waits
  are cancelled when nobody is left to answer; requests read but not started are
  dropped, as Kafka drops what it had not read yet. A stopping server waits for
  requests under way for a while, then drops their connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aio.tasks import run_to_completion
from broker.deferred import Deferred
from broker.errors import CloseConnection
from protocol.codec import (
    Request,
    UnsupportedRequest,
    build_response,
    decode_request,
    encode_response,
    peek_header,
)
from protocol.errors import ErrorCode, ProtocolError
from protocol.framing import FrameDecoder
from protocol.versions import ApiKey, is_supported

if TYPE_CHECKING:
    from broker.app import Broker

log = logging.getLogger(__name__)

Handler = Callable[["Broker", Request], Awaitable[dict | Deferred | None]]
_READ_SIZE = 1024 * 1024
_STREAM_LIMIT = 8 * 1024 * 1024
_CLOSE = object()
_STOP_GRACE_S = 10.0  # how long a stopping server waits for requests under way


class _ByteBudget:
    """Request bytes a connection may have in flight; past it the reader stops reading,
    so a fast producer is held back by TCP rather than by broker memory. One request
    larger than the whole budget still goes through on its own."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = asyncio.Event()

    async def take(self, n: int) -> None:
        while self.used and self.used + n > self.limit:
            self._freed.clear()
            await self._freed.wait()
        self.used += n

    def give(self, n: int) -> None:
        self.used -= n
        self._freed.set()


class _RequestFailed(Exception):
    """A handler failed unexpectedly (already logged); the connection is closed."""


class Connection:
    def __init__(
        self,
        broker: Broker,
        handlers: dict[int, Handler],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.broker = broker
        self.handlers = handlers
        self.metrics = broker.metrics
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue(
            broker.config.max_inflight_per_connection
        )
        self._budget = _ByteBudget(broker.config.max_inflight_bytes_per_connection)
        self._serve_task: asyncio.Task[None] | None = None
        self._reading = True  # until the reader cleans up
        # deferred produce acks not answered yet: a later request other than a produce
        # waits for them, so it sees their high watermark (see the module docstring)
        self._unacked: list[asyncio.Future] = []

    def abort(self) -> None:
        """Drop the connection at once (a stopping server whose requests are stuck)."""
        self.writer.transport.abort()

    async def serve(self) -> None:
        self._serve_task = asyncio.current_task()
        responder = asyncio.create_task(self._respond(), name=f"respond-{self.peer}")
        responder.add_done_callback(self._responder_done)
        decoder = FrameDecoder(self.broker.config.max_request_bytes)
        closing = False  # _CLOSE is queued: answer the requests before it, then close
        try:
            closing = await self._read_requests(decoder, responder)
        except ProtocolError as e:
            log.warning("closing connection from %s: %s", self.peer, e)
            if not responder.done():
                await self._queue.put((0, _CLOSE))
                closing = True
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._reading = False
            try:
                # on EOF, a reset or shutdown nobody is left to answer: deferred waits
                # (produce acks, long polls, joins) are cancelled rather than waited for;
                # every request that had started has been applied already
                if not closing:
                    self._stop_responder(responder)
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await responder
            finally:
                self._stop_responder(responder)
                self.writer.close()
                with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                    await asyncio.wait_for(self.writer.wait_closed(), 1.0)

    async def _read_requests(self, decoder: FrameDecoder, responder: asyncio.Task) -> bool:
        """Read, apply and queue requests until EOF; True if a handler failed (its
        earlier answers are still to be sent, then the connection closes)."""
        while not responder.done():
            data = await self.reader.read(_READ_SIZE)
            if not data:
                return False
            for frame in decoder.feed(data):
                await self._budget.take(len(frame))  # stop reading while too much is owed
                item = await self._apply(frame)
                try:
                    await self._queue.put((len(frame), item))
                except asyncio.CancelledError:
                    if isinstance(item, asyncio.Future):
                        item.cancel()  # queued nowhere: nobody else would stop it
                    raise
                if item is _CLOSE:  # a handler failed: answer what came before, close
                    return True
            if decoder.error is not None:
                raise decoder.error
        return False

    def _stop_responder(self, responder: asyncio.Task) -> None:
        responder.cancel()
        while not self._queue.empty():  # requests nobody will answer: stop them
            _, item = self._queue.get_nowait()
            if isinstance(item, asyncio.Future):
                item.cancel()
                if item.done() and not item.cancelled():
                    item.exception()  # failed before it was stopped: already logged

    def _responder_done(self, responder: asyncio.Task) -> None:
        """The responder ended (the client went away, or an answer failed): wake the
        reader if it waits for queue or budget space, so the connection is cleaned up."""
        if not responder.cancelled() and responder.exception() is not None:
            log.info("connection from %s lost: %r", self.peer, responder.exception())
        if self._reading and self._serve_task is not None:
            self._serve_task.cancel()

    async def _apply(self, frame: bytes) -> object:
        """Decode a request and run its handler until the request has taken effect;
        returns what the responder sends: encoded bytes, None (no answer), a task that
        yields them (a deferred wait), or _CLOSE (the handler failed: answer the
        requests before it, then close)."""
        api_key, api_version, correlation_id = peek_header(frame)
        if api_key == ApiKey.API_VERSIONS and not is_supported(api_key, api_version):
            # KIP-511: answer in v0 with our ranges so the client can pick a version.
            from broker.handlers.api_versions import api_versions_body

            body = api_versions_body(ErrorCode.unsupported_version)
            return bytes(encode_response(correlation_id, build_response(api_key, 0, body)))
        handler = self.handlers.get(api_key)
        if handler is None or not is_supported(api_key, api_version):
            self.metrics.rejected(api_key)
            raise UnsupportedRequest(
                f"unsupported api key {api_key} v{api_version} (correlation {correlation_id})"
            )
        try:
            request = decode_request(frame, self.peer)  # a MalformedRequest closes the connection
        except ProtocolError:
            self.metrics.rejected(api_key)
            raise
        if api_key != ApiKey.PRODUCE and self._unacked:
            await asyncio.wait(self._unacked)  # holds nothing yet: safe to cancel
            self._unacked.clear()
        # its own task, awaited to the end even if this connection is cancelled meanwhile
        applying = asyncio.ensure_future(self._handle(handler, request))
        try:
            item = await run_to_completion(applying)
        except asyncio.CancelledError:
            if not applying.cancelled() and isinstance(applying.result(), asyncio.Future):
                applying.result().cancel()  # its deferred wait: nobody is left to answer
            raise
        if api_key == ApiKey.PRODUCE and isinstance(item, asyncio.Future):
            self._unacked = [f for f in self._unacked if not f.done()]
            self._unacked.append(item)
        return item

    async def _handle(self, handler: Handler, request: Request) -> object:
        h = request.header
        stats = self.metrics.api(h.api_key)
        started = stats.begin()
        try:
            body = await handler(self.broker, request)
            if isinstance(body, Deferred):
                return asyncio.ensure_future(self._finish(request, body.wait, stats, started))
            encoded = self._encode(request, body)
        except (Exception, asyncio.CancelledError) as e:
            # this task is never cancelled from outside (run_to_completion): a
            # cancellation here came from inside the handler, a failure like any other
            stats.end(started, True)
            self._failed(request, e)
            return _CLOSE
        stats.end(started, False)
        return encoded

    async def _finish(self, request: Request, wait, stats, started) -> memoryview | None:
        """A deferred wait, then its answer; raises _RequestFailed if it fails."""
        try:
            encoded = self._encode(request, await wait)
        except asyncio.CancelledError:
            stats.end(started, False)  # nobody is left to answer
            raise
        except Exception as e:
            stats.end(started, True)
            self._failed(request, e)
            raise _RequestFailed() from e
        stats.end(started, False)
        return encoded

    @staticmethod
    def _encode(request: Request, body: dict | None) -> memoryview | None:
        if body is None:  # acks=0 produce
            return None
        h = request.header
        return encode_response(h.correlation_id, build_response(h.api_key, h.api_version, body))

    def _failed(self, request: Request, e: BaseException) -> None:
        h = request.header
        if isinstance(e, CloseConnection):
            log.info("closing connection from %s (client %s): %s", self.peer, h.client_id, e)
            return
        log.error(
            "request failed: api key %d v%d correlation %d from %s (client %s)",
            h.api_key,
            h.api_version,
            h.correlation_id,
            self.peer,
            h.client_id,
            exc_info=e,
        )

    async def _respond(self) -> None:
        while True:
            size, item = await self._queue.get()
            if item is _CLOSE:
                if self.writer.transport.get_write_buffer_size():
                    with contextlib.suppress(ConnectionError):
                        await self.writer.drain()
                return
            try:
                data = item if item is None or isinstance(item, bytes | memoryview) else None
                if isinstance(item, asyncio.Future):
                    try:
                        data = await item
                    except _RequestFailed:
                        return  # logged; the reader is woken and closes the connection
                if data is not None:
                    self.writer.write(data)
            finally:
                self._budget.give(size)
            if self._queue.empty() or self.writer.transport.get_write_buffer_size() > 1 << 20:
                await self.writer.drain()


class Server:
    def __init__(self, broker: Broker, handlers: dict[int, Handler]) -> None:
        self.broker = broker
        self.handlers = handlers
        self._server: asyncio.base_events.Server | None = None
        self._connections: dict[asyncio.Task[None], Connection] = {}

    async def start(self, host: str, port: int) -> int:
        # a large stream limit keeps multi-MB produce requests from pausing the reader
        self._server = await asyncio.start_server(
            self._accept, host, port, reuse_address=True, limit=_STREAM_LIMIT
        )
        return self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connection = Connection(self.broker, self.handlers, reader, writer)
        self._connections[task] = connection
        try:
            await connection.serve()
        except asyncio.CancelledError:
            pass  # shutdown: end quietly (asyncio would log a cancelled callback task)
        except Exception:
            log.exception("connection failed")
        finally:
            self._connections.pop(task, None)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()  # requests under way still finish (see the module docstring)
        if self._connections:
            _, stuck = await asyncio.wait(set(self._connections), timeout=_STOP_GRACE_S)
            if stuck:
                log.warning(
                    "%d connections still busy after %.0fs: dropped", len(stuck), _STOP_GRACE_S
                )
                for task in stuck:
                    self._connections[task].abort()
        if self._server is not None:
            await self._server.wait_closed()
