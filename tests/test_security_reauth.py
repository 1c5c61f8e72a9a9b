"""Re-authentication (KIP-368, issue 17): with `--connections-max-reauth-ms` the broker
tells each SASL client its session lifetime in SaslAuthenticate; a client that
re-authenticates on the same connection goes on (the Java client does so by itself), one
that lets its session run out is closed at its next request, and a re-authentication as
another principal is refused."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator

import pytest

from protocol.errors import ErrorCode
from protocol.versions import ApiKey
from tests.security_env import USERS, SecureBroker, start_secure_broker
from tests.wire import WireClient

REAUTH_MS = 1500
_METADATA = {
    "topics": [],
    "allow_auto_topic_creation": False,
    "include_topic_authorized_operations": False,
}


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    b = start_secure_broker(
        tmp_path_factory.mktemp("reauth"), "--connections-max-reauth-ms", str(REAUTH_MS)
    )
    yield b
    b.process.stop()


def _plain(w: WireClient, user: str, password: str):
    hs = w.call(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})
    assert hs.error_code == ErrorCode.none
    token = f"\0{user}\0{password}".encode()
    return w.call(ApiKey.SASL_AUTHENTICATE, 1, {"auth_bytes": token})


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_session_past_its_lifetime_is_closed_and_a_renewed_one_goes_on(secure) -> None:
    bootstrap = f"127.0.0.1:{secure.sasl_plaintext}"
    with WireClient(bootstrap) as renewing, WireClient(bootstrap) as lapsing:
        for w in (renewing, lapsing):
            r = _plain(w, "alice", USERS["alice"])
            assert r.error_code == ErrorCode.none
            assert 0 < r.session_lifetime.total_seconds() * 1000 <= REAUTH_MS
        started = time.monotonic()
        while time.monotonic() - started < 2 * REAUTH_MS / 1000:
            assert renewing.call(ApiKey.METADATA, 12, _METADATA).brokers
            again = _plain(renewing, "alice", USERS["alice"])  # well within the lifetime
            assert again.error_code == ErrorCode.none
            assert again.session_lifetime.total_seconds() > 0
            time.sleep(REAUTH_MS / 3000)
        # the lapsed one: its next request (not a re-authentication) closes it
        lapsing.send_raw(_metadata_frame())
        assert _closed(lapsing.sock)
        assert renewing.call(ApiKey.METADATA, 12, _METADATA).brokers
    lines = [e for e in secure.audit() if e.get("reason") == "re-authenticated"]
    assert len(lines) >= 3 and all(e["principal"] == "User:alice" for e in lines)


def _metadata_frame() -> bytes:
    from tests.wire import encode_request

    return encode_request(ApiKey.METADATA, 12, _METADATA, 99)


def test_re_authenticating_as_another_principal_is_refused_and_closes(secure) -> None:
    with WireClient(f"127.0.0.1:{secure.sasl_plaintext}") as w:
        assert _plain(w, "alice", USERS["alice"]).error_code == ErrorCode.none
        r = _plain(w, "bob", USERS["bob"])
        assert r.error_code == ErrorCode.sasl_authentication_failed
        assert _closed(w.sock)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="the Java client needs a JDK")
def test_the_java_client_re_authenticates_and_keeps_consuming(secure, tmp_path) -> None:
    """Kafka's console consumer (the Java client, SCRAM-SHA-512 over SASL_SSL) stays
    connected for several session lifetimes: it re-authenticates on its connections and
    keeps its group, rather than being closed."""
    from confluent_kafka import Producer

    from devkit.kafka_cli import CONSOLE_CONSUMER, KafkaCli

    p = Producer(secure.librdkafka("scram-sha-512"))
    for i in range(10):
        p.produce("reauth-java", f"v{i}".encode())
    assert p.flush(30) == 0
    seen = len(secure.audit())
    lapsed = secure.process.log(10**8).count("ended without re-authentication")
    props = secure.java_properties("scram-sha-512", tmp_path / "client.properties")
    tools = KafkaCli()
    r = tools.run(
        CONSOLE_CONSUMER,
        "--bootstrap-server", secure.bootstrap("scram-sha-512"),
        "--consumer.config", str(props),
        "--topic", "reauth-java", "--group", "reauth-g", "--from-beginning",
        "--timeout-ms", str(4 * REAUTH_MS),  # idle that long after the last record
        timeout=120,
    )  # fmt: skip
    records = [line for line in r.stdout.splitlines() if line.startswith("v")]
    assert records == [f"v{i}" for i in range(10)], r.describe()
    reauths = [
        e
        for e in secure.audit()[seen:]
        if e.get("reason") == "re-authenticated" and e["mechanism"] == "SCRAM-SHA-512"
    ]
    assert reauths and all(e["principal"] == "User:alice" for e in reauths)
    assert secure.process.log(10**8).count("ended without re-authentication") == lapsed
