"""Authentication at the connection: what a SASL listener lets through before the
exchange succeeded (ApiVersions, SaslHandshake, SaslAuthenticate and nothing else),
the exchange itself, the request size limit before it (`sasl.server.max.receive.size`),
failed-authentication delays and a per-address limit, and the audit line of each
outcome. broker.server asks it about every frame of a connection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass

from broker.security.audit import Audit
from broker.security.oauth import JwksValidator
from broker.security.sasl import AuthenticationFailed, Lookup, SaslExchange
from broker.security.session import Session
from protocol.codec import Request
from protocol.errors import ErrorCode
from protocol.versions import ApiKey

PRE_AUTH_APIS = frozenset({ApiKey.API_VERSIONS, ApiKey.SASL_HANDSHAKE, ApiKey.SASL_AUTHENTICATE})


class FailureLimiter:
    """A token bucket of failed authentications per client address: each failure takes
    a token, tokens come back at `rate` per second up to `burst`; an address without a
    token is refused at once (no credential check, no CPU spent on it) until it has
    one. Other addresses are not affected. Pure apart from the clock passed in."""

    def __init__(self, burst: float = 20.0, rate: float = 5.0, max_hosts: int = 10_000) -> None:
        self.burst = burst
        self.rate = rate
        self.max_hosts = max_hosts
        self._buckets: dict[str, tuple[float, float]] = {}  # host -> (tokens, at)

    def _tokens(self, host: str, now: float) -> float:
        tokens, at = self._buckets.get(host, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def may_try(self, host: str, now: float) -> bool:
        return self._tokens(host, now) >= 1.0

    def failed(self, host: str, now: float) -> None:
        if len(self._buckets) >= self.max_hosts and host not in self._buckets:
            full = [h for h in self._buckets if self._tokens(h, now) >= self.burst]
            for h in full or list(self._buckets)[: self.max_hosts // 10]:
                del self._buckets[h]
        self._buckets[host] = (max(0.0, self._tokens(host, now) - 1.0), now)


@dataclass(frozen=True, slots=True)
class AuthSettings:
    mechanisms: tuple[str, ...]
    max_receive_size: int  # sasl.server.max.receive.size
    failure_delay_s: float  # connection.failed.authentication.delay.ms
    max_reauth_ms: int = 0  # connections.max.reauth.ms (KIP-368); 0: sessions never end


class Authenticator:
    """Shared by every connection of a server."""

    def __init__(
        self,
        settings: AuthSettings,
        lookup: Lookup,
        audit: Audit,
        limiter: FailureLimiter,
        oauth: JwksValidator | None = None,
    ) -> None:
        self.settings = settings
        self.lookup = lookup
        self.audit = audit
        self.limiter = limiter
        self.oauth = oauth

    def connection(self, session: Session) -> ConnectionAuth:
        return ConnectionAuth(self, session)


@dataclass(slots=True)
class Reply:
    body: dict | None = None  # a Kafka response body (None: `raw` instead)
    raw: bytes | None = None  # a raw SASL token (after a v0 handshake)
    close: bool = False  # close the connection after this answer


class ConnectionAuth:
    def __init__(self, auth: Authenticator, session: Session) -> None:
        self.auth = auth
        self.session = session
        self._exchange: SaslExchange | None = None
        self.raw_tokens = False  # a v0 handshake: the next frames are bare SASL tokens
        # KIP-368: when the session ends (monotonic seconds; None: never), and whether
        # the exchange under way re-authenticates an authenticated connection
        self.session_ends: float | None = None
        self._reauthenticating = False

    @property
    def pending(self) -> bool:
        """A SASL listener whose client has not authenticated yet."""
        return self.session.listener.sasl and not self.session.authenticated

    def allows(self, api_key: int) -> bool:
        return not self.pending or api_key in PRE_AUTH_APIS

    def expired(self, api_key: int) -> bool:
        """KIP-368: past its session lifetime without re-authenticating, a connection
        may only re-authenticate; any other request closes it."""
        return (
            self.session_ends is not None
            and api_key not in (ApiKey.SASL_HANDSHAKE, ApiKey.SASL_AUTHENTICATE)
            and time.monotonic() >= self.session_ends
        )

    @property
    def mechanisms(self) -> Iterable[str]:
        return self.auth.settings.mechanisms

    def handshake(self, request: Request) -> Reply:
        mechs = list(self.mechanisms)
        mechanism = request.body.mechanism
        # KIP-368: an authenticated connection whose session ends may authenticate again,
        # with the same mechanism (and, checked at the end, as the same principal)
        reauth = (
            self.session.authenticated
            and self.session_ends is not None
            and request.header.api_version >= 1
        )
        if reauth and mechanism != self.session.mechanism:
            self._audit(False, mechanism or "", self.session.principal, "re-authentication "
                        f"with {mechanism}, not {self.session.mechanism}")  # fmt: skip
            return Reply(
                {"error_code": ErrorCode.illegal_sasl_state, "mechanisms": mechs}, close=True
            )
        if (
            not self.session.listener.sasl
            or (self.session.authenticated and not reauth)
            or self._exchange
        ):
            return Reply({"error_code": ErrorCode.illegal_sasl_state, "mechanisms": mechs})
        self._reauthenticating = reauth
        if mechanism not in mechs:
            self._audit(False, mechanism or "", "", "unsupported mechanism")
            return Reply(
                {"error_code": ErrorCode.unsupported_sasl_mechanism, "mechanisms": mechs},
                close=True,
            )
        if not self.auth.limiter.may_try(self.session.host, time.monotonic()):
            self._audit(False, mechanism, "", "rate limited")
            return Reply({"error_code": ErrorCode.illegal_sasl_state, "mechanisms": []}, close=True)
        self._exchange = SaslExchange(mechanism, self.auth.lookup, self.auth.oauth)
        self.raw_tokens = request.header.api_version == 0
        return Reply({"error_code": ErrorCode.none, "mechanisms": mechs})

    async def authenticate(self, request: Request) -> Reply:
        ex = self._exchange
        if ex is None or self.raw_tokens:
            return Reply(
                _auth_body(
                    ErrorCode.illegal_sasl_state,
                    "SaslAuthenticate before a SaslHandshake",
                ),
                close=True,
            )
        try:
            token = await ex.step(bytes(request.body.auth_bytes))
        except AuthenticationFailed as e:
            await self._failed(ex.mechanism, e)
            return Reply(_auth_body(ErrorCode.sasl_authentication_failed, str(e)), close=True)
        if ex.done:
            if self._reauthenticating and ex.principal != self.session.principal:
                failed = AuthenticationFailed(
                    "Cannot change principals during re-authentication",
                    ex.principal,
                    f"re-authentication as {ex.principal}, not {self.session.principal}",
                )
                await self._failed(ex.mechanism, failed)
                body = _auth_body(ErrorCode.sasl_authentication_failed, str(failed))
                return Reply(body, close=True)
            lifetime_ms = self._succeeded(ex)
            return Reply(_auth_body(ErrorCode.none, None, token, lifetime_ms))
        return Reply(_auth_body(ErrorCode.none, None, token))

    async def raw(self, token: bytes) -> Reply:
        """A bare token after a v0 handshake (no Kafka header); a failure just closes."""
        ex = self._exchange
        assert ex is not None
        try:
            out = await ex.step(token)
        except AuthenticationFailed as e:
            await self._failed(ex.mechanism, e)
            return Reply(close=True)
        if ex.done:
            self.raw_tokens = False
            self._succeeded(ex)
        return Reply(raw=out)

    def _succeeded(self, ex: SaslExchange) -> int:
        """The session starts (or, re-authenticated, goes on); its lifetime in ms (0:
        no limit), as SaslAuthenticate v1 tells the client."""
        self.session.principal = ex.principal
        self.session.mechanism = ex.mechanism
        self.session.authenticated = True
        self._exchange = None
        lifetime_ms = session_lifetime_ms(
            self.auth.settings.max_reauth_ms, ex.expires_at, time.time()
        )
        self.session_ends = time.monotonic() + lifetime_ms / 1000 if lifetime_ms else None
        reason = "re-authenticated" if self._reauthenticating else ""
        self._reauthenticating = False
        self._audit(True, ex.mechanism, ex.principal, reason)
        return lifetime_ms

    async def _failed(self, mechanism: str, e: AuthenticationFailed) -> None:
        self.auth.limiter.failed(self.session.host, time.monotonic())
        self._audit(False, mechanism, e.principal, e.reason)
        # as Kafka's connection.failed.authentication.delay.ms: the answer waits, so a
        # client retrying at once cannot spin; this connection only, nobody else waits
        await asyncio.sleep(self.auth.settings.failure_delay_s)

    def _audit(self, ok: bool, mechanism: str, principal: str, reason: str) -> None:
        self.auth.audit.authenticated(
            ok=ok,
            mechanism=mechanism,
            principal=principal,
            client=self.session.client,
            listener=self.session.listener.name,
            reason=reason,
        )


def session_lifetime_ms(max_reauth_ms: int, token_expires_at: float | None, now: float) -> int:
    """KIP-368: connections.max.reauth.ms, or less if a token expires first (0: no
    limit; a token past its expiry still gets 1 ms, so the next request closes)."""
    limits = [max_reauth_ms] if max_reauth_ms > 0 else []
    if token_expires_at is not None and max_reauth_ms > 0:
        limits.append(max(1, int((token_expires_at - now) * 1000)))
    return min(limits) if limits else 0


def _auth_body(
    error: ErrorCode, message: str | None, token: bytes = b"", lifetime_ms: int = 0
) -> dict:
    return {
        "error_code": error,
        "error_message": message,
        "auth_bytes": token,
        "session_lifetime": lifetime_ms,
    }
