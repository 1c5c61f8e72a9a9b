"""SCRAM (RFC 5802, RFC 7677) for SCRAM-SHA-256 and SCRAM-SHA-512: credentials as Kafka
stores them (salt, iterations, StoredKey, ServerKey; never the password) and the
server side of one exchange as a small state machine. Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass

MECHANISMS = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
# Kafka's mechanism type codes (DescribeUserScramCredentials, AlterUserScramCredentials)
MECHANISM_TYPES = {1: "SCRAM-SHA-256", 2: "SCRAM-SHA-512"}
TYPE_OF = {v: k for k, v in MECHANISM_TYPES.items()}
DEFAULT_ITERATIONS = 4096
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 16384


class ScramError(Exception):
    """The exchange failed: bad syntax, unknown user or wrong proof."""


@dataclass(frozen=True, slots=True)
class ScramCredential:
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def to_dict(self) -> dict:
        return {
            "salt": self.salt,
            "iterations": self.iterations,
            "stored_key": self.stored_key,
            "server_key": self.server_key,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ScramCredential:
        return cls(d["salt"], int(d["iterations"]), d["stored_key"], d["server_key"])


def _h(algo: str, data: bytes) -> bytes:
    return hashlib.new(algo, data).digest()


def _hmac(algo: str, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, algo).digest()


def salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    """Hi(password, salt, i): PBKDF2 with the mechanism's HMAC (CPU-heavy: run off the loop)."""
    return hashlib.pbkdf2_hmac(MECHANISMS[mechanism], password.encode(), salt, iterations)


def from_salted(mechanism: str, salted: bytes, salt: bytes, iterations: int) -> ScramCredential:
    algo = MECHANISMS[mechanism]
    client_key = _hmac(algo, salted, b"Client Key")
    return ScramCredential(
        salt, iterations, _h(algo, client_key), _hmac(algo, salted, b"Server Key")
    )


def new_credential(
    mechanism: str, password: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> ScramCredential:
    salt = salt if salt is not None else os.urandom(32)
    return from_salted(
        mechanism, salted_password(mechanism, password, salt, iterations), salt, iterations
    )


def verify_password(mechanism: str, credential: ScramCredential, password: str) -> bool:
    """Whether `password` yields `credential` (SASL/PLAIN checks against SCRAM credentials)."""
    salted = salted_password(mechanism, password, credential.salt, credential.iterations)
    expected = from_salted(mechanism, salted, credential.salt, credential.iterations)
    return hmac.compare_digest(expected.stored_key, credential.stored_key)


def _attributes(message: str) -> dict[str, str]:
    out = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise ScramError(f"malformed SCRAM attribute {part!r}")
        out[key] = value
    return out


def _unescape_name(name: str) -> str:
    return name.replace("=2C", ",").replace("=3D", "=")


class ScramServer:
    """One SCRAM exchange: `first(client_first)` -> server-first, then
    `final(client_final)` -> server-final; `username` once the first message is read.
    `lookup(username)` gives the user's credential or None."""

    def __init__(self, mechanism: str, lookup, nonce: str | None = None) -> None:
        self.mechanism = mechanism
        self.algo = MECHANISMS[mechanism]
        self._lookup = lookup
        # alphanumeric, as Kafka's: some clients (older librdkafka) mangle '+' and '/'
        self._nonce = nonce or secrets.token_hex(16)
        self.username: str | None = None
        self.done = False
        self._state = "first"
        self._credential: ScramCredential | None = None
        self._client_first_bare = ""
        self._server_first = ""
        self._gs2 = ""

    def first(self, message: bytes) -> bytes:
        if self._state != "first":
            raise ScramError("unexpected client-first message")
        self._state = "final"
        text = message.decode("utf-8", errors="strict")
        parts = text.split(",", 2)
        if len(parts) != 3 or parts[0] not in ("n", "y") or parts[0] == "p":
            raise ScramError("channel binding is not supported")
        authzid = parts[1]
        self._gs2 = f"{parts[0]},{authzid},"
        self._client_first_bare = parts[2]
        attrs = _attributes(parts[2])
        if "m" in attrs:
            raise ScramError("mandatory SCRAM extensions are not supported")
        if "n" not in attrs or "r" not in attrs or not attrs["r"]:
            raise ScramError("client-first message lacks the user name or nonce")
        self.username = _unescape_name(attrs["n"])
        if authzid and _unescape_name(authzid.removeprefix("a=")) != self.username:
            raise ScramError("authorization id differs from the user name")
        self._credential = self._lookup(self.username)
        if self._credential is None:
            raise ScramError(f"unknown user {self.username!r}")
        c = self._credential
        self._server_first = (
            f"r={attrs['r']}{self._nonce},s={base64.b64encode(c.salt).decode()},i={c.iterations}"
        )
        self._combined_nonce = attrs["r"] + self._nonce
        return self._server_first.encode()

    def final(self, message: bytes) -> bytes:
        if self._state != "final" or self._credential is None:
            raise ScramError("unexpected client-final message")
        self._state = "over"
        text = message.decode("utf-8", errors="strict")
        without_proof, sep, proof_part = text.rpartition(",p=")
        if not sep:
            raise ScramError("client-final message lacks the proof")
        attrs = _attributes(without_proof)
        # as Kafka checks it (endsWith): older librdkafka sends its own nonce again in front
        if not attrs.get("r", "").endswith(self._combined_nonce):
            raise ScramError("nonce mismatch")
        if base64.b64decode(attrs.get("c", "")) != self._gs2.encode():
            raise ScramError("channel binding mismatch")
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except ValueError as e:
            raise ScramError("malformed proof") from e
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        c = self._credential
        signature = _hmac(self.algo, c.stored_key, auth_message)
        if len(proof) != len(signature):
            raise ScramError("malformed proof")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(_h(self.algo, client_key), c.stored_key):
            raise ScramError("invalid credentials")
        self.done = True
        return b"v=" + base64.b64encode(_hmac(self.algo, c.server_key, auth_message))


class ScramClient:
    """The client side, for the broker's own calls and the unit tests."""

    def __init__(self, mechanism: str, username: str, password: str) -> None:
        self.mechanism = mechanism
        self.algo = MECHANISMS[mechanism]
        self.username = username
        self.password = password
        self._nonce = base64.b64encode(os.urandom(18)).decode()
        name = username.replace("=", "=3D").replace(",", "=2C")
        self._first_bare = f"n={name},r={self._nonce}"
        self._server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self._first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = _attributes(text)
        if not attrs["r"].startswith(self._nonce):
            raise ScramError("server nonce does not extend ours")
        salt = base64.b64decode(attrs["s"])
        salted = salted_password(self.mechanism, self.password, salt, int(attrs["i"]))
        client_key = _hmac(self.algo, salted, b"Client Key")
        stored = _h(self.algo, client_key)
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={attrs['r']}"
        auth_message = f"{self._first_bare},{text},{without_proof}".encode()
        signature = _hmac(self.algo, stored, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = _hmac(self.algo, salted, b"Server Key")
        self._server_signature = _hmac(self.algo, server_key, auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def check(self, server_final: bytes) -> bool:
        return server_final == b"v=" + base64.b64encode(self._server_signature)
