"""SASL/OAUTHBEARER (RFC 7628, KIP-255) with JWT validation against a JWKS file, as
Kafka's OAuthBearerValidatorCallbackHandler does with `sasl.oauthbearer.jwks.endpoint.url`
pointing at a file: the token's signature must verify with the JWKS key its `kid` names
(asymmetric algorithms only, never `none` or a shared secret), it must carry `exp` (and
not be past it) and the subject claim, and, where configured, the expected audience and
issuer. The principal is `User:<subject>`; the token's expiry bounds the session
(KIP-368). The JWKS file is read again when it changes, so keys rotate without a
restart. Pure apart from reading that file."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")


class InvalidToken(Exception):
    """The token was refused; the message says why (logged and audited, not sent)."""


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    jwks_file: str
    expected_audience: tuple[str, ...] = ()  # sasl.oauthbearer.expected.audience
    expected_issuer: str = ""  # sasl.oauthbearer.expected.issuer
    sub_claim: str = "sub"  # sasl.oauthbearer.sub.claim.name
    clock_skew_s: int = 30  # sasl.oauthbearer.clock.skew.seconds


@dataclass(frozen=True, slots=True)
class Validated:
    principal: str  # "User:<subject>"
    expires_at: float  # the token's exp, seconds since the epoch


def parse_client_first(message: bytes) -> tuple[str, str]:
    """The (authorization id, token) of a client's first message:
    `n,[a=authzid],\\x01auth=Bearer <token>\\x01[key=value\\x01]*\\x01`."""
    try:
        text = message.decode()
    except UnicodeDecodeError:
        raise InvalidToken("client message is not UTF-8") from None
    gs2, sep, rest = text.partition("\x01")
    parts = gs2.split(",")
    if not sep or len(parts) != 3 or parts[0] != "n" or parts[2] != "":
        raise InvalidToken("malformed GS2 header")
    authzid = parts[1][2:] if parts[1].startswith("a=") else ""
    if parts[1] and not authzid:
        raise InvalidToken("malformed authorization id")
    if not rest.endswith("\x01\x01"):
        raise InvalidToken("client message does not end with two separators")
    pairs = dict(kv.partition("=")[::2] for kv in rest[:-2].split("\x01") if kv)
    scheme, _, token = pairs.get("auth", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("no bearer token")
    return authzid, token.strip()


class JwksValidator:
    def __init__(self, settings: OAuthSettings) -> None:
        self.settings = settings
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._unnamed: list[jwt.PyJWK] = []
        self._load()  # a missing or broken file fails the start, not the first client

    def _load(self) -> None:
        path = Path(self.settings.jwks_file)
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        keys, unnamed = {}, []
        for k in json.loads(path.read_text())["keys"]:
            if k.get("use", "sig") != "sig":
                continue
            key = jwt.PyJWK(k)
            if k.get("kid"):
                keys[k["kid"]] = key
            else:
                unnamed.append(key)
        self._keys, self._unnamed, self._stamp = keys, unnamed, stamp

    def _key(self, token: str) -> jwt.PyJWK:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise InvalidToken(f"not a JWT: {e}") from None
        if header.get("alg") not in ALGORITHMS:
            raise InvalidToken(f"algorithm {header.get('alg')!r} is not allowed")
        # a file being rewritten: keep the keys read before
        with contextlib.suppress(OSError, ValueError, KeyError, jwt.PyJWTError):
            self._load()
        kid = header.get("kid")
        if kid:
            key = self._keys.get(kid)
            if key is None:
                raise InvalidToken(f"no key {kid!r} in the JWKS")
            return key
        if len(self._unnamed) == 1 and not self._keys:
            return self._unnamed[0]
        raise InvalidToken("the token names no key (kid)")

    def validate(self, token: str, now: float | None = None) -> Validated:
        s = self.settings
        key = self._key(token)
        options = {"require": ["exp", s.sub_claim], "verify_aud": bool(s.expected_audience)}
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=list(ALGORITHMS),
                audience=list(s.expected_audience) or None,
                issuer=s.expected_issuer or None,
                leeway=s.clock_skew_s,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.PyJWTError as e:
            raise InvalidToken(f"{type(e).__name__}: {e}") from None
        subject = claims.get(s.sub_claim)
        if not isinstance(subject, str) or not subject:
            raise InvalidToken(f"claim {s.sub_claim!r} is not a name")
        expires = float(claims["exp"])
        if expires <= (time.time() if now is None else now):
            raise InvalidToken("the token has expired")
        return Validated(f"User:{subject}", expires)


# what the server sends back on an invalid token (RFC 7628 section 3.2.2); the client
# answers a bare separator and the exchange then fails
ERROR_CHALLENGE = json.dumps({"status": "invalid_token"}).encode()
