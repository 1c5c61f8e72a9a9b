"""OAUTHBEARER (issue 17): confluent-kafka's oauth_cb hands the broker JWTs signed by a
test identity provider (devkit.jwks); the broker validates them against its JWKS file.
A signed, unexpired token for the expected audience produces and consumes as its
subject; an expired token, one signed by another key and one for another audience are
refused with an authentication error, and each outcome is audited."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from devkit.jwks import Issuer
from tests.security_env import SecureBroker, start_secure_broker

ISSUER = Issuer()


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    d = tmp_path_factory.mktemp("oauth")
    jwks = ISSUER.write_jwks(d / "jwks.json")
    b = start_secure_broker(
        d,
        "--sasl-enabled-mechanisms", "SCRAM-SHA-512,OAUTHBEARER",
        "--sasl-oauthbearer-jwks-file", str(jwks),
        "--sasl-oauthbearer-expected-audience", "strata",
    )  # fmt: skip
    yield b
    b.process.stop()


def _conf(secure: SecureBroker, token: str) -> dict:
    return {
        "bootstrap.servers": secure.bootstrap("oauth"),
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": str(secure.certs.ca),
        "sasl.mechanism": "OAUTHBEARER",
        "oauth_cb": lambda _config: (token, time.time() + 3600),
    }


def _audited(secure: SecureBroker, outcome: str, principal: str | None = None) -> list[dict]:
    return [
        e
        for e in secure.audit()
        if e["event"] == "authentication"
        and e["mechanism"] == "OAUTHBEARER"
        and e["outcome"] == outcome
        and (principal is None or e["principal"] == principal)
    ]


def test_a_valid_jwt_produces_and_consumes_as_its_subject(secure) -> None:
    from confluent_kafka import Consumer, Producer

    conf = _conf(secure, ISSUER.token("carol", 600, aud="strata"))
    p = Producer(conf)
    for i in range(20):
        p.produce("oauth-topic", f"v{i}".encode())
    assert p.flush(30) == 0
    c = Consumer(conf | {"group.id": "oauth-g", "auto.offset.reset": "earliest"})
    c.subscribe(["oauth-topic"])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 20 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    assert got == [f"v{i}".encode() for i in range(20)]
    assert _audited(secure, "success", "User:carol")


@pytest.mark.parametrize(
    "why,token",
    [
        ("expired", ISSUER.token("mallory", -120, aud="strata")),
        ("signed by another key", Issuer().token("mallory", 600, aud="strata")),
        ("for another audience", ISSUER.token("mallory", 600, aud="elsewhere")),
    ],
)
def test_a_bad_jwt_is_refused_with_an_authentication_error(secure, why, token) -> None:
    from confluent_kafka import KafkaError, Producer

    before = len(_audited(secure, "failure"))
    errors: list[KafkaError] = []
    p = Producer(_conf(secure, token) | {"error_cb": errors.append})
    p.produce("never", b"x")
    p.flush(3)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), (why, errors)
    assert len(_audited(secure, "failure")) > before
