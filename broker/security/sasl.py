"""The SASL exchange of one connection: SaslHandshake picks a mechanism, then
SaslAuthenticate (KIP-152) or, after a v0 handshake, raw tokens carry it.

PLAIN is checked against the user's SCRAM credential (the password is hashed with the
stored salt and iterations, off the event loop), so the broker keeps no passwords.
OAUTHBEARER validates a JWT (broker.security.oauth); a refused token gets RFC 7628's
error challenge, the client's bare separator after it ends the exchange as a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from broker.security import scram
from broker.security.oauth import ERROR_CHALLENGE, InvalidToken, JwksValidator, parse_client_first

SUPPORTED = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")

Lookup = Callable[[str, str], scram.ScramCredential | None]  # (user, mechanism)


class AuthenticationFailed(Exception):
    """The client's credentials were refused; the message is safe to send back."""

    def __init__(self, message: str, principal: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.principal = principal
        self.reason = reason or message


def parse_mechanisms(value: str) -> list[str]:
    mechs = [m.strip().upper() for m in value.split(",") if m.strip()]
    for m in mechs:
        if m not in SUPPORTED:
            raise ValueError(f"SASL mechanism {m} is not supported (choose from {SUPPORTED})")
    return mechs


class SaslExchange:
    """One mechanism's exchange: feed client tokens, get server tokens; `principal`
    once `done`."""

    def __init__(self, mechanism: str, lookup: Lookup, oauth: JwksValidator | None = None) -> None:
        self.mechanism = mechanism
        self._lookup = lookup
        self._oauth = oauth
        self._refused: str | None = None  # OAUTHBEARER: why the token was refused
        self.done = False
        self.principal = ""
        self.expires_at: float | None = None  # a token's expiry (seconds since the epoch)
        self._scram: scram.ScramServer | None = None
        if mechanism in scram.MECHANISMS:
            self._scram = scram.ScramServer(mechanism, lambda user: lookup(user, mechanism))

    def _fail(self, user: str | None, reason: str) -> AuthenticationFailed:
        return AuthenticationFailed(
            "Authentication failed during authentication due to invalid credentials with "
            f"SASL mechanism {self.mechanism}",
            f"User:{user}" if user else "",
            reason,
        )

    async def step(self, token: bytes) -> bytes:
        if self.done:
            raise self._fail(None, "token after the exchange finished")
        if self.mechanism == "OAUTHBEARER":
            return self._bearer(token)
        if self._scram is None:
            return await self._plain(token)
        s = self._scram
        try:
            if s.username is None:
                return s.first(token)
            out = s.final(token)
        except (scram.ScramError, UnicodeDecodeError, ValueError, KeyError) as e:
            raise self._fail(s.username, str(e)) from None
        self.done = True
        self.principal = f"User:{s.username}"
        return out

    async def _plain(self, token: bytes) -> bytes:
        parts = token.split(b"\0")
        if len(parts) != 3:
            raise self._fail(None, "malformed PLAIN message")
        try:
            authzid, user, password = (p.decode() for p in parts)
        except UnicodeDecodeError:
            raise self._fail(None, "PLAIN message is not UTF-8") from None
        if not user or (authzid and authzid != user):
            raise self._fail(user, "authorization id differs from the user name")
        for mech in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
            cred = self._lookup(user, mech)
            if cred is not None:
                ok = await asyncio.to_thread(scram.verify_password, mech, cred, password)
                if not ok:
                    raise self._fail(user, "invalid password")
                self.done = True
                self.principal = f"User:{user}"
                return b""
        raise self._fail(user, "unknown user")

    def _bearer(self, message: bytes) -> bytes:
        if self._refused is not None:  # the client's answer to the error challenge
            raise self._fail(None, self._refused)
        try:
            if self._oauth is None:
                raise InvalidToken("no JWKS is configured")
            authzid, token = parse_client_first(message)
            valid = self._oauth.validate(token)
            if authzid and f"User:{authzid}" != valid.principal:
                raise InvalidToken("authorization id differs from the token's subject")
        except InvalidToken as e:
            self._refused = str(e)
            return ERROR_CHALLENGE
        self.done = True
        self.principal = valid.principal
        self.expires_at = valid.expires_at
        return b""
