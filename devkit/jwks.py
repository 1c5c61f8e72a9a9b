"""An RSA signing key, its JWKS file and JWTs signed with it, for the OAUTHBEARER tests
(what an identity provider would hand out)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


class Issuer:
    def __init__(self, kid: str = "key-1") -> None:
        self.kid = kid
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.private_key.public_key()))
        return jwk | {"kid": self.kid, "use": "sig", "alg": "RS256"}

    def write_jwks(self, path: Path, *others: Issuer) -> Path:
        path.write_text(json.dumps({"keys": [self.jwk(), *(o.jwk() for o in others)]}))
        return path

    def token(self, subject: str, lifetime_s: float = 3600, **claims) -> str:
        now = int(time.time())
        body = {"sub": subject, "iat": now, "exp": now + int(lifetime_s)} | claims
        return jwt.encode(body, self.private_key, algorithm="RS256", headers={"kid": self.kid})
