"""The audit trail as a topic (issue 17): with `--audit-topic` every audit event is also
a record of the internal topic `__audit` (key: the principal, value: the JSON event), so
an investigator proves who was refused what with an ordinary consumer. A wrong password,
a successful login and an authorization denial each show up there."""

from __future__ import annotations

import json
import time

from confluent_kafka import Consumer, KafkaError, Producer

from protocol.errors import ErrorCode
from protocol.versions import ApiKey
from tests.security_env import start_secure_broker
from tests.wire import WireClient


def test_authentications_and_denials_are_records_of_the_audit_topic(tmp_path) -> None:
    secure = start_secure_broker(
        tmp_path, "--audit-topic", "true", "--authorizer", "acl", "--super-users", "User:admin"
    )
    try:
        with WireClient(f"127.0.0.1:{secure.sasl_plaintext}") as w:
            assert w.call(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"}).error_code == 0
            r = w.call(ApiKey.SASL_AUTHENTICATE, 1, {"auth_bytes": b"\0alice\0wrong"})
            assert r.error_code == ErrorCode.sasl_authentication_failed
        errors: list = []
        p = Producer(
            secure.librdkafka("scram-sha-512")  # alice: no ACL lets her write
            | {"delivery.timeout.ms": 5000, "error_cb": errors.append}
        )
        outcomes: list = []
        p.produce("secret", b"x", on_delivery=lambda err, _msg: outcomes.append(err))
        p.flush(10)
        assert outcomes and outcomes[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

        c = Consumer(
            secure.librdkafka("scram-sha-512", "admin")
            | {"group.id": "investigators", "auto.offset.reset": "earliest"}
        )
        c.subscribe(["__audit"])
        events: list[tuple[bytes, dict]] = []

        def seen() -> tuple[bool, bool, bool]:
            return (
                any(e["event"] == "authentication" and e["outcome"] == "failure"
                    and e["principal"] == "User:alice" and e["mechanism"] == "PLAIN"
                    for _, e in events),
                any(e["event"] == "authentication" and e["outcome"] == "success"
                    and e["principal"] == "User:admin" for _, e in events),
                any(e["event"] == "authorization" and e["principal"] == "User:alice"
                    and e["resource"] == "secret" and e["operation"]
                    for _, e in events),
            )  # fmt: skip

        deadline = time.monotonic() + 30
        try:
            while not all(seen()) and time.monotonic() < deadline:
                m = c.poll(0.5)
                if m is not None and m.error() is None:
                    events.append((m.key(), json.loads(m.value())))
        finally:
            c.close()
        assert all(seen()), (seen(), [e for _, e in events if e["event"] == "authorization"])
        assert all(key == e.get("principal", "").encode() for key, e in events)
    finally:
        secure.process.stop()
