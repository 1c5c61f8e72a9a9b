"""The broker's own Kafka client, for calls to other brokers of the cluster (today:
WriteTxnMarkers from a transaction coordinator to a partition's leader).

One connection per peer, one request at a time on it; a failed call drops the
connection, and the caller retries with fresh leadership.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from typing import Any

from broker.leadership import BrokerAddress
from protocol.codec import decode_response, encode_request

log = logging.getLogger(__name__)

_SIZE = struct.Struct(">i")
TIMEOUT_S = 10.0


class PeerUnavailable(Exception):
    """The peer could not be reached, or answered nothing usable."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.lock = asyncio.Lock()


class Peers:
    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self._connections: dict[BrokerAddress, _Connection] = {}
        self._correlation = itertools.count(1)

    async def call(
        self, peer: BrokerAddress, api_key: int, api_version: int, body: dict[str, Any]
    ) -> Any:
        correlation = next(self._correlation)
        frame = encode_request(api_key, api_version, correlation, self.client_id, body)
        try:
            conn = await self._connect(peer)
            async with conn.lock:
                conn.writer.write(frame)
                await conn.writer.drain()
                async with asyncio.timeout(TIMEOUT_S):
                    (size,) = _SIZE.unpack(await conn.reader.readexactly(4))
                    data = await conn.reader.readexactly(size)
            got, response = decode_response(api_key, api_version, data)
            if got != correlation:
                raise PeerUnavailable(f"broker {peer.broker_id}: answer {got} to {correlation}")
            return response
        except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError) as e:
            await self._drop(peer)
            where = f"broker {peer.broker_id} at {peer.host}:{peer.port}"
            raise PeerUnavailable(f"{where}: {e!r}") from e
        except PeerUnavailable:
            await self._drop(peer)
            raise

    async def _connect(self, peer: BrokerAddress) -> _Connection:
        conn = self._connections.get(peer)
        if conn is None or conn.writer.is_closing():
            async with asyncio.timeout(TIMEOUT_S):
                reader, writer = await asyncio.open_connection(peer.host, peer.port)
            conn = self._connections[peer] = _Connection(reader, writer)
        return conn

    async def _drop(self, peer: BrokerAddress) -> None:
        conn = self._connections.pop(peer, None)
        if conn is not None:
            conn.writer.close()
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()

    async def close(self) -> None:
        for peer in list(self._connections):
            await self._drop(peer)
