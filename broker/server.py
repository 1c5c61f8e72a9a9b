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
import collections
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from broker.deferred import Deferred
from broker.errors import CloseConnection
from broker.security.gate import Authenticator, ConnectionAuth
from broker.security.listeners import Listener
from broker.security.quota_gate import QuotaGate
from broker.security.quotas import FETCH, PRODUCE, REQUEST
from broker.security.session import Session
from broker.security.tls import principal_of
from protocol.codec import (
    Request,
    UnsupportedRequest,
    build_response,
    decode_request,
    encode_response,
    peek_header,
)
from protocol.errors import ErrorCode, ProtocolError
from protocol.fetch_response import encode_fetch_response
from protocol.framing import FrameDecoder
from protocol.framing import frame as size_prefixed
from protocol.versions import ApiKey, is_supported

if TYPE_CHECKING:
    from broker.handlers.context import HandlerContext

log = logging.getLogger(__name__)

Handler = Callable[["HandlerContext", Request], Awaitable[dict | Deferred | None]]
_READ_SIZE = 1024 * 1024
_STREAM_LIMIT = 8 * 1024 * 1024
_CLOSE = object()
_STOP_GRACE_S = 10.0  # how long a stopping server waits for requests under way
# never throttled by request_percentage: the exchanges a client needs to get going
_REQUEST_QUOTA_EXEMPT = frozenset(
    {ApiKey.API_VERSIONS, ApiKey.SASL_HANDSHAKE, ApiKey.SASL_AUTHENTICATE}
)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_request_bytes: int
    max_inflight_requests: int  # decoded and queued, per connection
    max_inflight_bytes: int


class ApiCounters(Protocol):
    """What the front end counts per API (broker.metrics)."""

    def api(self, api_key: int): ...

    def rejected(self, api_key: int) -> None: ...


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


def _records_size(records) -> int:
    """Bytes of a Fetch partition's records: one buffer or a list of batch buffers."""
    if isinstance(records, bytes | bytearray | memoryview):
        return len(records)
    return sum(len(b) for b in records)


class _RequestFailed(Exception):
    """A handler failed unexpectedly (already logged); the connection is closed."""


class Connection:
    def __init__(
        self,
        front: _Front,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        listener: Listener,
    ) -> None:
        self.context = front.context
        self.handlers = front.handlers
        self.limits = front.limits
        self.metrics = front.metrics
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.session = Session(listener, self.peer)
        if listener.tls:  # SSL: the client certificate's subject, if it sent one
            cert_principal = principal_of(writer.get_extra_info("ssl_object"))
            if cert_principal is not None and not listener.sasl:
                self.session.principal = cert_principal
                self.session.authenticated = True
                front.authenticator.audit.authenticated(
                    ok=True,
                    mechanism="SSL",
                    principal=cert_principal,
                    client=self.peer,
                    listener=listener.name,
                )
        self.auth: ConnectionAuth = front.authenticator.connection(self.session)
        self._close_after = False  # an answer that must be the connection's last
        self.quotas = front.quotas
        self._muted_until = 0.0  # a quota's throttle (loop time): no request is applied before
        self._queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue(
            front.limits.max_inflight_requests
        )
        self._budget = _ByteBudget(front.limits.max_inflight_bytes)
        self._serve_task: asyncio.Task[None] | None = None
        self._reading = True  # until the reader cleans up
        # a request is being applied: the reader is not cancelled meanwhile, only told to
        # stop after it (see interrupt)
        self._applying = False
        self._interrupted = False
        # deferred produce acks not answered yet: a later request other than a produce
        # waits for them, so it sees their high watermark (see the module docstring)
        self._unacked: collections.deque[asyncio.Future] = collections.deque()

    def interrupt(self) -> None:
        """Stop reading: at once while the reader waits (for data, queue or budget space,
        earlier acks), else right after the request it applies, so that request runs to
        its end. The only way a connection is stopped, so nothing is cancelled midway."""
        self._interrupted = True
        if self._reading and not self._applying and self._serve_task is not None:
            self._serve_task.cancel()

    def abort(self) -> None:
        """Drop the connection at once (a stopping server whose requests are stuck)."""
        self.writer.transport.abort()

    async def serve(self) -> None:
        self._serve_task = asyncio.current_task()
        responder = asyncio.create_task(self._respond(), name=f"respond-{self.peer}")
        responder.add_done_callback(self._responder_done)
        max_frame = self.limits.max_request_bytes
        if self.auth.pending:  # sasl.server.max.receive.size until the client authenticated
            max_frame = min(max_frame, self.auth.auth.settings.max_receive_size)
        decoder = FrameDecoder(max_frame)
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
                if self.auth.raw_tokens:  # after a v0 SaslHandshake: a bare SASL token
                    reply = await self.auth.raw(frame)
                    raw = None if reply.raw is None else size_prefixed(reply.raw)
                    item: object = _CLOSE if reply.close else raw
                else:
                    if self._muted_until:  # checked per frame: one read holds many
                        await self._wait_unmuted()
                    item = await self._apply(frame)
                if not self.auth.pending:
                    decoder.max_frame = self.limits.max_request_bytes
                try:
                    await self._queue.put((len(frame), item))
                except asyncio.CancelledError:
                    if isinstance(item, asyncio.Future):
                        item.cancel()  # queued nowhere: nobody else would stop it
                    raise
                if item is _CLOSE:  # a handler failed: answer what came before, close
                    return True
                if self._close_after:  # e.g. a failed authentication: its answer, then close
                    await self._queue.put((0, _CLOSE))
                    return True
            if decoder.error is not None:
                raise decoder.error
        return False

    async def _wait_unmuted(self) -> None:
        """Muted by a quota (KIP-219): the next request is applied after the throttle
        time, as Kafka mutes the channel; the bytes behind it wait in the socket."""
        delay = self._muted_until - asyncio.get_running_loop().time()
        self._muted_until = 0.0
        if delay > 0:
            await asyncio.sleep(delay)

    def _mute(self, throttle_ms: int) -> None:
        if throttle_ms:
            until = asyncio.get_running_loop().time() + throttle_ms / 1000
            self._muted_until = max(self._muted_until, until)

    def _throttle(self, request: Request, handler_s: float) -> int:
        """The throttle time (ms) of the client's quotas once `request` is applied:
        Produce counts its bytes, every request but the exempt ones the time it took
        to apply (request_percentage: 100 is one request applying all the time); the
        connection is muted for it at once, whatever is left of the request to wait for."""
        h = request.header
        quotas, principal, client = self.quotas, self.session.principal, h.client_id or ""
        throttle = 0
        if h.api_key == ApiKey.PRODUCE and quotas.applies(PRODUCE):
            throttle = quotas.record(PRODUCE, principal, client, request.size)
        if h.api_key not in _REQUEST_QUOTA_EXEMPT and quotas.applies(REQUEST):
            throttle = max(throttle, quotas.record(REQUEST, principal, client, handler_s * 100))
        self._mute(throttle)
        return throttle

    def _fetch_throttle(self, request: Request, body: dict, throttle: int) -> tuple[dict, int]:
        """A Fetch answer as Kafka sends it under quotas (KIP-219, KafkaApis'
        getThrottledResponse): its record bytes count against consumer_byte_rate; when
        that quota or the request quota (`throttle`) throttles it, the bytes are taken
        back and the answer is empty (no partitions) with throttle_time_ms, so the
        consumer refetches the same offsets once the mute ends and its rate converges to
        the quota. One exception: an answer larger than the quota's whole burst would
        never fit (Kafka caps fetch max_bytes to it), so it is sent and throttled after."""
        fetch_throttle, size = 0, 0
        principal, client = self.session.principal, request.header.client_id or ""
        if self.quotas.applies(FETCH):
            size = sum(
                _records_size(p["records"]) for t in body.get("responses", ())
                for p in t["partitions"] if p.get("records")
            )  # fmt: skip
            fetch_throttle = self.quotas.record(FETCH, principal, client, size)
        total = max(throttle, fetch_throttle)
        too_big = fetch_throttle and self.quotas.over_burst(FETCH, principal, client, size)
        if total and not too_big:
            if size:
                self.quotas.record(FETCH, principal, client, -size)  # nothing is sent
            body = self._emptied_fetch(request, body)
        self._mute(fetch_throttle)
        return body, total

    def _capped_fetch(self, request: Request) -> Request:
        """A consumer's fetch asks at most the burst of its consumer_byte_rate (Kafka's
        maxQuotaWindowBytes), so its answer can fit the quota's bucket."""
        if not self.quotas.applies(FETCH) or getattr(request.body, "replica_id", -1) >= 0:
            return request
        principal, client = self.session.principal, request.header.client_id or ""
        burst = self.quotas.burst(FETCH, principal, client)
        max_bytes = getattr(request.body, "max_bytes", None)
        if burst is None or max_bytes is None or max_bytes <= burst:
            return request
        body = dataclasses.replace(request.body, max_bytes=max(1, int(burst)))
        return dataclasses.replace(request, body=body)

    def _emptied_fetch(self, request: Request, body: dict) -> dict:
        """A throttled Fetch's answer: no partitions; a full fetch opens no session (the
        one its handler opened is dropped), an incremental one keeps its session."""
        session_id = body.get("session_id", 0)
        if session_id and getattr(request.body, "session_epoch", -1) == 0:
            self.context.fetch_sessions.close(session_id)
            session_id = 0
        return {**body, "responses": [], "session_id": session_id}

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
        self.interrupt()

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
        if not self.auth.allows(api_key):
            self.metrics.rejected(api_key)
            raise ProtocolError(
                f"api key {api_key} before SASL authentication on listener "
                f"{self.session.listener.name}"
            )
        if self.auth.expired(api_key):
            raise ProtocolError(
                f"the SASL session of {self.session.principal} ended without "
                "re-authentication (connections.max.reauth.ms)"
            )
        if api_key in (ApiKey.SASL_HANDSHAKE, ApiKey.SASL_AUTHENTICATE) and is_supported(
            api_key, api_version
        ):
            return await self._authenticate(frame)
        handler = self.handlers.get(api_key)
        if handler is None or not is_supported(api_key, api_version):
            self.metrics.rejected(api_key)
            raise UnsupportedRequest(
                f"unsupported api key {api_key} v{api_version} (correlation {correlation_id})"
            )
        try:
            # a MalformedRequest closes the connection
            request = decode_request(frame, self.peer, self.session)
        except ProtocolError:
            self.metrics.rejected(api_key)
            raise
        if api_key == ApiKey.FETCH:
            request = self._capped_fetch(request)
        if api_key != ApiKey.PRODUCE and self._unacked:
            await asyncio.wait(self._unacked)  # holds nothing yet: safe to cancel
            self._unacked.clear()
        if self._interrupted:
            raise asyncio.CancelledError()  # not started: dropped
        # applied in this task, which is not cancelled meanwhile (see interrupt): no task
        # or loop turn per request, so a read buffer of produces is applied in one go
        self._applying = True
        try:
            item = await self._handle(handler, request)
        finally:
            self._applying = False
        if self._interrupted:
            if isinstance(item, asyncio.Future):
                item.cancel()  # its deferred wait: nobody is left to answer
            raise asyncio.CancelledError()
        if api_key == ApiKey.PRODUCE and isinstance(item, asyncio.Future):
            unacked = self._unacked
            while unacked and unacked[0].done():  # acks come mostly in order: cheap
                unacked.popleft()
            unacked.append(item)
        return item

    async def _authenticate(self, frame: bytes) -> object:
        """SaslHandshake or SaslAuthenticate, answered by the connection's authenticator."""
        request = decode_request(frame, self.peer, self.session)
        stats = self.metrics.api(request.header.api_key)
        started = stats.begin()
        if request.header.api_key == ApiKey.SASL_HANDSHAKE:
            reply = self.auth.handshake(request)
        else:
            reply = await self.auth.authenticate(request)
        stats.end(started, reply.close)
        self._close_after = reply.close
        return self._encode(request, reply.body)

    async def _handle(self, handler: Handler, request: Request) -> object:
        h = request.header
        stats = self.metrics.api(h.api_key)
        started = stats.begin()
        loop = asyncio.get_running_loop()
        try:
            began = loop.time()
            body = await handler(self.context, request)
            throttle = self._throttle(request, loop.time() - began)
            if isinstance(body, Deferred):
                return asyncio.ensure_future(
                    self._finish(request, body.wait, stats, started, throttle)
                )
            encoded = self._encode(request, body, throttle)
        except (Exception, asyncio.CancelledError) as e:
            # the reader is never cancelled while it applies (interrupt): a
            # cancellation here came from inside the handler, a failure like any other
            stats.end(started, True)
            self._failed(request, e)
            return _CLOSE
        stats.end(started, False)
        return encoded

    async def _finish(
        self, request: Request, wait, stats, started, throttle: int
    ) -> memoryview | list | None:
        """A deferred wait, then its answer; raises _RequestFailed if it fails."""
        try:
            encoded = self._encode(request, await wait, throttle)
        except asyncio.CancelledError:
            stats.end(started, False)  # nobody is left to answer
            raise
        except Exception as e:
            stats.end(started, True)
            self._failed(request, e)
            raise _RequestFailed() from e
        stats.end(started, False)
        return encoded

    def _encode(
        self, request: Request, body: dict | None, throttle: int = 0
    ) -> memoryview | list | None:
        """The answer's bytes (with the quota's throttle time): one buffer, or (Fetch) a
        list of buffers whose record batches are the log's own, written with writelines
        instead of copied."""
        if body is None:  # acks=0 produce
            return None
        h = request.header
        if h.api_key == ApiKey.FETCH:
            body, throttle = self._fetch_throttle(request, body, throttle)
        if throttle and "throttle_time" in body:
            body = {**body, "throttle_time": throttle}
        if h.api_key == ApiKey.FETCH:
            return encode_fetch_response(h.correlation_id, h.api_version, body)[0]
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
                data = item if item is None or isinstance(item, bytes | memoryview | list) else None
                if isinstance(item, asyncio.Future):
                    try:
                        data = await item
                    except _RequestFailed:
                        return  # logged; the reader is woken and closes the connection
                if isinstance(data, list):
                    self.writer.writelines(data)
                elif data is not None:
                    self.writer.write(data)
            finally:
                self._budget.give(size)
            if self._queue.empty() or self.writer.transport.get_write_buffer_size() > 1 << 20:
                await self.writer.drain()


@dataclass(frozen=True, slots=True)
class _Front:
    """What every connection shares."""

    context: HandlerContext
    handlers: dict[int, Handler]
    limits: ConnectionLimits
    metrics: ApiCounters
    authenticator: Authenticator
    quotas: QuotaGate


class Server:
    def __init__(
        self,
        context: HandlerContext,
        handlers: dict[int, Handler],
        limits: ConnectionLimits,
        metrics: ApiCounters,
        authenticator: Authenticator,
        quotas: QuotaGate,
    ) -> None:
        self._front = _Front(context, handlers, limits, metrics, authenticator, quotas)
        self._servers: list[asyncio.base_events.Server] = []
        self._connections: dict[asyncio.Task[None], Connection] = {}

    async def start(self, listeners: list[Listener], ssl_context=None) -> list[Listener]:
        """Bind every listener (TLS ones with `ssl_context`); returns them with their
        ports (a port 0 resolved). A client speaking plaintext to a TLS port fails the
        handshake and is closed; TLS to a plaintext port reads as an impossible frame
        size and is closed."""
        bound = []
        for lst in listeners:
            # a large stream limit keeps multi-MB produce requests from pausing the reader
            server = await asyncio.start_server(
                lambda r, w, lst=lst: self._accept(r, w, lst),
                lst.host,
                lst.port,
                reuse_address=True,
                limit=_STREAM_LIMIT,
                ssl=ssl_context if lst.tls else None,
                ssl_handshake_timeout=10.0 if lst.tls else None,
            )
            self._servers.append(server)
            bound.append(lst.with_port(server.sockets[0].getsockname()[1]))
        return bound

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener: Listener
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        connection = Connection(self._front, reader, writer, listener)
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
        for server in self._servers:
            server.close()
        for connection in list(self._connections.values()):
            connection.interrupt()  # requests under way still finish (module docstring)
        if self._connections:
            _, stuck = await asyncio.wait(set(self._connections), timeout=_STOP_GRACE_S)
            if stuck:
                log.warning(
                    "%d connections still busy after %.0fs: dropped", len(stuck), _STOP_GRACE_S
                )
                for task in stuck:
                    self._connections[task].abort()
        for server in self._servers:
            await server.wait_closed()
