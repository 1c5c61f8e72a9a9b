"""Cluster mode (issue 17, acceptance 4): a SCRAM user and an ACL created through one
broker are enforced by the other two within 2 s, since credentials and ACLs live in the
cluster's metadata document in etcd, which every broker follows. Real etcd, moto's S3
and three broker processes, each with a PLAINTEXT listener (the brokers' own calls; its
`User:ANONYMOUS` is a super user, as README's Security section says) and a
SASL_PLAINTEXT one for clients. Every check talks to one broker with the wire client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.security.scram import ScramClient
from devkit.broker import BrokerProcess
from devkit.etcd import etcd_binary
from devkit.procs import free_port
from protocol.errors import ErrorCode
from protocol.versions import ApiKey
from tests.wire import WireClient

pytestmark = [
    pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed"),
    pytest.mark.slow,
]


def login(port: int, user: str, password: str) -> tuple[ErrorCode, WireClient | None]:
    """SCRAM-SHA-512 on one broker's SASL_PLAINTEXT port: (the outcome, the client)."""
    w = WireClient(f"127.0.0.1:{port}")
    w.call(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "SCRAM-SHA-512"})
    c = ScramClient("SCRAM-SHA-512", user, password)
    first = w.call(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": c.first()})
    if first.error_code != ErrorCode.none:
        w.close()
        return first.error_code, None
    final = w.call(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": c.final(first.auth_bytes)})
    if final.error_code != ErrorCode.none:
        w.close()
        return final.error_code, None
    return ErrorCode.none, w


def topic_error(w: WireClient, topic: str) -> ErrorCode:
    r = w.call(
        ApiKey.METADATA,
        12,
        {"topics": [{"name": topic, "topic_id": None}], "allow_auto_topic_creation": False,
         "include_topic_authorized_operations": False},
    )  # fmt: skip
    return r.topics[0].error_code


def start_cluster(
    tmp_path: Path,
    etcd_url: str,
    store: list[str],
    inter_broker_sasl: bool = False,
    *extra: str,
) -> list[tuple[BrokerProcess, int]]:
    """Three brokers; `inter_broker_sasl`: they call each other on SASL_PLAINTEXT as
    User:broker (a super user) instead of on PLAINTEXT."""
    users = tmp_path / "users.toml"
    users.write_text('[users]\nadmin = "admin-secret"\nbroker = "broker-secret"\n')
    supers = "User:admin;User:broker" if inter_broker_sasl else "User:admin;User:ANONYMOUS"
    inter = (
        ["--inter-broker-listener-name", "SASL_PLAINTEXT", "--inter-broker-user", "broker",
         "--inter-broker-password", "broker-secret"]
        if inter_broker_sasl
        else []
    )  # fmt: skip
    started = []
    for broker_id in (1, 2, 3):
        port, sasl = free_port(), free_port()
        b = BrokerProcess(
            tmp_path / f"b{broker_id}",
            port,
            "--broker-id", str(broker_id),
            "--etcd", etcd_url,
            *store,
            "--listener", f"PLAINTEXT://127.0.0.1:{port}",
            "--listener", f"SASL_PLAINTEXT://127.0.0.1:{sasl}",
            "--authorizer", "acl",
            "--super-users", supers,
            *inter,
            # only broker 1 reads the file unless the brokers need their own login
            *(["--sasl-users-file", str(users)] if broker_id == 1 or inter_broker_sasl else []),
            *extra,
        )  # fmt: skip
        started.append((b.start(), sasl))
    return started


@pytest.fixture
def secured_cluster(s3_bucket, etcd, tmp_path: Path) -> Iterator[list[tuple[BrokerProcess, int]]]:
    moto, bucket = s3_bucket
    started = start_cluster(
        tmp_path, etcd.url, ["--object-store", f"s3://{bucket}/sec", "--s3-endpoint", moto.endpoint]
    )
    yield started
    for b, _ in started:
        b.stop()


def test_a_scram_user_and_an_acl_made_on_one_broker_are_enforced_by_the_others_within_2s(
    secured_cluster,
) -> None:
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        AdminClient,
        NewTopic,
        ResourcePatternType,
        ResourceType,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    (_, sasl1), (_, sasl2), (_, sasl3) = secured_cluster
    admin = AdminClient(
        {
            "bootstrap.servers": f"127.0.0.1:{sasl1}",
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "admin",
            "sasl.password": "admin-secret",
        }
    )
    admin.create_topics([NewTopic("shared", 1, 1)])["shared"].result(30)
    # the admin user came from broker 1's file; the others know it through etcd
    for port in (sasl2, sasl3):
        error, w = login(port, "admin", "admin-secret")
        assert error == ErrorCode.none
        assert w is not None
        w.close()
    assert login(sasl2, "dave", "dave-pw")[0] == ErrorCode.sasl_authentication_failed

    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    created = time.monotonic()
    for f in admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion("dave", info, b"dave-pw")]
    ).values():
        f.result(20)
    for port in (sasl2, sasl3):
        while login(port, "dave", "dave-pw")[0] != ErrorCode.none:
            assert time.monotonic() - created < 2.0, f"dave unknown on :{port} after 2 s"
            time.sleep(0.05)
    user_lag = time.monotonic() - created

    sessions = [login(port, "dave", "dave-pw")[1] for port in (sasl2, sasl3)]
    assert all(s is not None for s in sessions)
    for w in sessions:
        assert topic_error(w, "shared") == ErrorCode.topic_authorization_failed
    acl = AclBinding(
        ResourceType.TOPIC, "shared", ResourcePatternType.LITERAL, "User:dave", "*",
        AclOperation.READ, AclPermissionType.ALLOW,
    )  # fmt: skip
    created = time.monotonic()
    admin.create_acls([acl])[acl].result(20)
    for w in sessions:
        while topic_error(w, "shared") != ErrorCode.none:
            assert time.monotonic() - created < 2.0, "the ACL is not enforced after 2 s"
            time.sleep(0.05)
        w.close()
    print(f"\nSCRAM user known everywhere after {user_lag:.2f}s, ACL after "
          f"{time.monotonic() - created:.2f}s")  # fmt: skip


def test_brokers_call_each_other_over_the_secured_listener(s3_bucket, etcd, tmp_path) -> None:
    """A transaction over partitions led by three brokers: the coordinator writes the
    markers of the others' partitions through WriteTxnMarkers on their SASL_PLAINTEXT
    listener, logged in as User:broker."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    moto, bucket = s3_bucket
    started = start_cluster(
        tmp_path,
        etcd.url,
        ["--object-store", f"s3://{bucket}/ib", "--s3-endpoint", moto.endpoint],
        inter_broker_sasl=True,
    )
    try:
        conf = {
            "bootstrap.servers": ",".join(f"127.0.0.1:{s}" for _, s in started),
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "admin",
            "sasl.password": "admin-secret",
        }
        admin = AdminClient(conf)
        admin.create_topics([NewTopic("txn", 6, 1)])["txn"].result(30)
        deadline = time.monotonic() + 30
        while True:  # wait for the controller to spread the leaders
            md = admin.list_topics("txn", timeout=10)
            leaders = {p.leader for p in md.topics["txn"].partitions.values()}
            if len(leaders) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(leaders) == 3
        p = Producer(conf | {"transactional.id": "ib-txn"})
        p.init_transactions(30)
        p.begin_transaction()
        for i in range(6):
            p.produce("txn", f"v{i}".encode(), partition=i)
        p.commit_transaction(30)
        c = Consumer(
            conf
            | {
                "group.id": "ib",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )
        c.subscribe(["txn"])
        got = set()
        end = time.monotonic() + 30
        while len(got) < 6 and time.monotonic() < end:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.add(m.value())
        c.close()
        assert got == {f"v{i}".encode() for i in range(6)}
        logs = "".join(b.log(10**7) for b, _ in started)
        assert '"principal": "User:broker"' in logs and '"outcome": "success"' in logs
        assert '"operation": "CLUSTER_ACTION"' not in logs  # no denied marker write
    finally:
        for b, _ in started:
            b.stop()


def test_audit_events_of_every_broker_land_in_audit_partitions_each_leads(
    s3_bucket, etcd, tmp_path: Path
) -> None:
    """Cluster mode with --audit-topic: a failed and a successful SCRAM login on each of
    the three brokers are records of __audit, which has the configured partitions with
    leaders spread over the brokers; each broker's events are in a partition it leads, and
    the admin (a super user) reads them all."""
    import json

    moto, bucket = s3_bucket
    store = ["--object-store", f"s3://{bucket}/audit", "--s3-endpoint", moto.endpoint]
    started = start_cluster(
        tmp_path, etcd.url, store, False, "--audit-topic", "true",
        "--audit-topic-num-partitions", "6",
    )  # fmt: skip
    try:
        sasl = {i + 1: port for i, (_, port) in enumerate(started)}
        for broker_id, port in sasl.items():  # creates __audit on the first event
            error, _ = login(port, f"intruder-{broker_id}", "wrong")
            assert error == ErrorCode.sasl_authentication_failed
        md_body = {
            "topics": [{"name": "__audit", "topic_id": None}],
            "allow_auto_topic_creation": False,
            "include_topic_authorized_operations": False,
        }
        deadline = time.monotonic() + 30
        while True:  # the controller spreads the leaders of the new topic
            error, w = login(sasl[1], "admin", "admin-secret")
            assert error == ErrorCode.none and w is not None
            with w:
                md = w.call(ApiKey.METADATA, 12, md_body)
            parts = md.topics[0].partitions
            leaders = {p.partition_index: p.leader_id for p in parts}
            if set(leaders.values()) == {1, 2, 3} or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert md.topics[0].error_code == ErrorCode.none
        assert len(leaders) == 6 and set(leaders.values()) == {1, 2, 3}, leaders
        for broker_id, port in sasl.items():  # now every broker leads a partition
            error, _ = login(port, f"intruder-{broker_id}-again", "wrong")
            assert error == ErrorCode.sasl_authentication_failed
            error, w = login(port, "admin", "admin-secret")
            assert error == ErrorCode.none and w is not None
            w.close()

        def read_all() -> dict[int, list[dict]]:
            events: dict[int, list[dict]] = {}
            for index, leader in leaders.items():
                error, w = login(sasl[leader], "admin", "admin-secret")
                assert error == ErrorCode.none and w is not None
                with w:
                    part = w.fetch("__audit", index, 0)
                assert part.error_code == ErrorCode.none
                events[index] = [json.loads(v) for v in _values(part.records or b"")]
            return events

        wanted = {f"User:intruder-{i}-again" for i in (1, 2, 3)}
        deadline = time.monotonic() + 20
        while True:
            events = read_all()
            seen = {e["principal"] for evs in events.values() for e in evs}
            if wanted <= seen or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert wanted <= seen, seen
        for index, evs in events.items():
            for e in evs:
                if e["principal"] in wanted:  # written by the broker that refused it
                    assert e["principal"] == f"User:intruder-{leaders[index]}-again", (index, e)
        successes = [
            e for evs in events.values() for e in evs
            if e["outcome"] == "success" and e["principal"] == "User:admin"
        ]  # fmt: skip
        assert len({e["client"] for e in successes}) >= 3
    finally:
        for b, _ in started:
            b.stop()


def _values(data: bytes) -> list[bytes]:
    """The values of the records in a fetch answer's batches."""
    from protocol.record_codec import decode_records
    from protocol.records import split_batches

    return [r.value for b in split_batches(bytes(data)) for r in decode_records(b)]
