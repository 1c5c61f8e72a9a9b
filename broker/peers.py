"""The broker's own Kafka client, for calls to other brokers of the cluster (today:
WriteTxnMarkers from a transaction coordinator to a partition's leader).

One connection per peer, one request at a time on it; a failed call drops the
connection, and the caller retries with fresh leadership. Calls go to each peer's
inter-broker listener (`--inter-broker-listener-name`); on an SSL or SASL_SSL one over
TLS (the peers' certificates checked against `--ssl-cafile`, this broker's own
certificate offered), on a SASL one after a SCRAM-SHA-512 login as
`--inter-broker-user`. A link's source cluster (broker.links) is reached the same way,
with the settings of the link (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import struct
from dataclasses import dataclass
from typing import Any

from broker.leadership import BrokerAddress
from protocol.codec import decode_response, encode_request

log = logging.getLogger(__name__)

_SIZE = struct.Struct(">i")
TIMEOUT_S = 10.0


class PeerUnavailable(Exception):
    """The peer could not be reached, or answered nothing usable."""


@dataclass(frozen=True, slots=True)
class PeerSecurity:
    """How this broker reaches its peers: which of their listeners, and with what."""

    listener: str | None = None  # a listener name; None: the first
    tls: ssl.SSLContext | None = None  # for SSL and SASL_SSL listeners
    sasl_user: str = ""  # a login on SASL listeners
    sasl_password: str = ""
    sasl_mechanism: str = "SCRAM-SHA-512"  # or SCRAM-SHA-256, PLAIN


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.lock = asyncio.Lock()


class Peers:
    def __init__(self, client_id: str, security: PeerSecurity | None = None) -> None:
        self.client_id = client_id
        self.security = security or PeerSecurity()
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
            sec = self.security
            host, port = peer.reachable(sec.listener)
            async with asyncio.timeout(TIMEOUT_S):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=sec.tls, server_hostname=host if sec.tls else None
                )
                conn = _Connection(reader, writer)
                if sec.sasl_user:
                    try:
                        await self._login(conn, peer)
                    except BaseException:
                        writer.close()
                        raise
            self._connections[peer] = conn
        return conn

    async def _exchange(self, conn: _Connection, api_key: int, version: int, body: dict) -> Any:
        correlation = next(self._correlation)
        conn.writer.write(encode_request(api_key, version, correlation, self.client_id, body))
        await conn.writer.drain()
        (size,) = _SIZE.unpack(await conn.reader.readexactly(4))
        _, response = decode_response(api_key, version, await conn.reader.readexactly(size))
        return response

    async def _login(self, conn: _Connection, peer: BrokerAddress) -> None:
        from broker.security.scram import ScramClient
        from protocol.versions import ApiKey

        sec = self.security
        mech = sec.sasl_mechanism
        hs = await self._exchange(conn, ApiKey.SASL_HANDSHAKE, 1, {"mechanism": mech})
        if hs.error_code:
            raise PeerUnavailable(f"broker {peer.broker_id}: SaslHandshake {hs.error_code!r}")
        if mech == "PLAIN":
            token = f"\0{sec.sasl_user}\0{sec.sasl_password}".encode()
            answer = await self._exchange(conn, ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": token})
            if answer.error_code:
                raise PeerUnavailable(f"broker {peer.broker_id}: login {answer.error_message}")
            return
        client = ScramClient(mech, sec.sasl_user, sec.sasl_password)
        first = await self._exchange(
            conn, ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": client.first()}
        )
        if first.error_code:
            raise PeerUnavailable(f"broker {peer.broker_id}: login {first.error_message}")
        final_token = await asyncio.to_thread(client.final, bytes(first.auth_bytes))
        final = await self._exchange(conn, ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": final_token})
        if final.error_code or not client.check(bytes(final.auth_bytes)):
            raise PeerUnavailable(f"broker {peer.broker_id}: login {final.error_message}")

    async def _drop(self, peer: BrokerAddress) -> None:
        conn = self._connections.pop(peer, None)
        if conn is not None:
            conn.writer.close()
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()

    async def close(self) -> None:
        for peer in list(self._connections):
            await self._drop(peer)
