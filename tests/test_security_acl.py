"""ACLs with Kafka's own tools and real clients (issue 17, acceptance 3 and 6), SCRAM
users through `kafka-configs`, and KIP-430 authorized operations.

A broker with `--authorizer acl` and `User:admin` as super user; `kafka-acls` and
`kafka-configs` talk to it as admin over SASL_PLAINTEXT (SCRAM-SHA-512), the clients as
alice over SASL_SSL.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.kafka_cli import ACL_COMMAND, KafkaCli
from tests.security_env import USERS, SecureBroker, start_secure_broker

pytestmark = [
    pytest.mark.skipif(shutil.which("java") is None, reason="the Kafka CLI tools need a JVM"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def cli() -> KafkaCli:
    return KafkaCli()


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    b = start_secure_broker(tmp_path, "--authorizer", "acl", "--super-users", "User:admin")
    yield b
    b.process.stop()


def _admin_properties(b: SecureBroker, path: Path) -> Path:
    path.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="admin" password="{USERS["admin"]}";\n'
    )
    return path


def _tool(cli: KafkaCli, b: SecureBroker, props: Path, main: str, *args: str) -> str:
    r = cli.run(
        main,
        "--bootstrap-server",
        f"127.0.0.1:{b.sasl_plaintext}",
        "--command-config",
        str(props),
        *args,
    )
    assert r.returncode == 0, r.describe()
    return r.stdout


def _produce(b: SecureBroker, topic: str, user: str, n: int = 5) -> list:
    """Delivery errors (None for each success)."""
    from confluent_kafka import Producer

    results: list = []
    p = Producer(
        b.librdkafka("scram-sha-512", user)
        | {"message.timeout.ms": 10000, "retries": 0, "enable.idempotence": False}
    )
    for i in range(n):
        p.produce(topic, f"{user}-{i}".encode(), on_delivery=lambda err, _m: results.append(err))
    p.flush(20)
    return results


def _consume(b: SecureBroker, topic: str, group: str, user: str, n: int) -> tuple[list, list]:
    """(values, errors) reading `topic` in `group` until n values or an error."""
    from confluent_kafka import Consumer

    c = Consumer(
        b.librdkafka("scram-sha-512", user)
        | {"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": True}
    )
    c.subscribe([topic])
    values, errors = [], []
    deadline = time.monotonic() + 25
    while len(values) < n and not errors and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error() is not None:
            errors.append(m.error().code())
        else:
            values.append(m.value())
    c.close()
    return values, errors


def _topics_seen(b: SecureBroker, user: str) -> set[str]:
    from confluent_kafka.admin import AdminClient

    md = AdminClient(b.librdkafka("scram-sha-512", user)).list_topics(timeout=10)
    return set(md.topics)


def test_a_principal_allowed_to_read_a_topic_and_a_group_can_only_consume_it(
    acl_broker, cli, tmp_path
) -> None:
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient, NewTopic

    b = acl_broker
    props = _admin_properties(b, tmp_path / "admin.properties")
    admin = AdminClient(b.librdkafka("scram-sha-512", "admin"))
    for f in admin.create_topics(
        [NewTopic(t, 1, 1) for t in ("a", "b", "agent-events", "agent-secret")]
    ).values():
        f.result(20)
    assert _produce(b, "a", "admin") == [None] * 5

    # without any ACL alice may do nothing
    assert _topics_seen(b, "alice") == set()
    _tool(
        cli,
        b,
        props,
        ACL_COMMAND,
        "--add",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Read",
        "--topic",
        "a",
        "--group",
        "g",
    )
    listed = _tool(cli, b, props, ACL_COMMAND, "--list", "--topic", "a")
    assert "User:alice" in listed and "READ" in listed and "ALLOW" in listed

    values, errors = _consume(b, "a", "g", "alice", 5)
    assert errors == [] and len(values) == 5
    assert _topics_seen(b, "alice") == {"a"}  # Metadata is filtered
    assert [e.code() for e in _produce(b, "a", "alice", 1)] == [
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    ]
    _, errors = _consume(b, "a", "h", "alice", 1)
    assert errors == [KafkaError.GROUP_AUTHORIZATION_FAILED]

    # a prefixed ALLOW and a literal DENY: deny wins
    _tool(
        cli,
        b,
        props,
        ACL_COMMAND,
        "--add",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Write",
        "--topic",
        "agent-",
        "--resource-pattern-type",
        "prefixed",
    )
    _tool(
        cli,
        b,
        props,
        ACL_COMMAND,
        "--add",
        "--deny-principal",
        "User:alice",
        "--operation",
        "Write",
        "--topic",
        "agent-secret",
    )
    assert _produce(b, "agent-events", "alice", 2) == [None, None]
    assert [e.code() for e in _produce(b, "agent-secret", "alice", 1)] == [
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    ]
    assert [e.code() for e in _produce(b, "b", "alice", 1)] == [
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    ]

    # every denial above is in the audit trail with principal, resource and operation
    denials = {
        (e["principal"], e["resource_type"], e["resource"], e["operation"])
        for e in b.audit()
        if e["event"] == "authorization"
    }
    assert ("User:alice", "TOPIC", "a", "WRITE") in denials
    # group h: refused at FindCoordinator (DESCRIBE), as Kafka does, before any READ
    assert {("User:alice", "GROUP", "h", op) for op in ("DESCRIBE", "READ")} & denials
    assert ("User:alice", "TOPIC", "agent-secret", "WRITE") in denials

    # the ACLs survive a restart
    b.process.stop()
    b.process.start()
    listed = _tool(cli, b, props, ACL_COMMAND, "--list")
    assert "name=agent-secret, patternType=LITERAL" in listed
    assert "name=agent-, patternType=PREFIXED" in listed
    assert "resourceType=GROUP, name=g," in listed
    assert _produce(b, "a", "admin") == [None] * 5
    values, errors = _consume(b, "a", "g", "alice", 5)
    assert errors == [] and values == [f"admin-{i}".encode() for i in range(5)]

    # and kafka-acls removes them
    _tool(
        cli,
        b,
        props,
        ACL_COMMAND,
        "--remove",
        "--force",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Read",
        "--topic",
        "a",
        "--group",
        "g",
    )
    listed = _tool(cli, b, props, ACL_COMMAND, "--list", "--topic", "a")
    assert "User:alice" not in listed
    assert "a" not in _topics_seen(b, "alice")


def test_kafka_configs_adds_a_scram_user_that_can_then_authenticate(
    acl_broker, cli, tmp_path
) -> None:
    from confluent_kafka import Producer

    b = acl_broker
    props = _admin_properties(b, tmp_path / "admin.properties")
    _tool(
        cli,
        b,
        props,
        cli.config_command,
        "--alter",
        "--entity-type",
        "users",
        "--entity-name",
        "carol",
        "--add-config",
        "SCRAM-SHA-512=[iterations=8192,password=carol-pw]",
    )
    described = _tool(
        cli,
        b,
        props,
        cli.config_command,
        "--describe",
        "--entity-type",
        "users",
        "--entity-name",
        "carol",
    )
    assert "SCRAM-SHA-512=iterations=8192" in described
    errors: list = []
    conf = b.librdkafka("scram-sha-512", "alice") | {
        "sasl.username": "carol",
        "sasl.password": "carol-pw",
        "error_cb": errors.append,
    }
    from confluent_kafka.admin import AdminClient

    AdminClient(conf).list_topics(timeout=10)  # authenticates (sees no topic: no ACL)
    assert not errors
    assert any(
        e["event"] == "authentication"
        and e["principal"] == "User:carol"
        and e["outcome"] == "success"
        for e in b.audit()
    )
    _tool(
        cli,
        b,
        props,
        cli.config_command,
        "--alter",
        "--entity-type",
        "users",
        "--entity-name",
        "carol",
        "--delete-config",
        "SCRAM-SHA-512",
    )
    p = Producer(conf)
    p.produce("x", b"x")
    p.flush(3)
    assert errors  # carol can no longer authenticate


def test_authorized_operations_are_reported_for_the_caller(acl_broker, cli, tmp_path) -> None:
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AclOperation, AdminClient, NewTopic

    b = acl_broker
    props = _admin_properties(b, tmp_path / "admin.properties")
    admin = AdminClient(b.librdkafka("scram-sha-512", "admin"))
    admin.create_topics([NewTopic("ops", 1, 1)])["ops"].result(20)
    _tool(
        cli,
        b,
        props,
        ACL_COMMAND,
        "--add",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Read",
        "--topic",
        "ops",
    )
    alice = AdminClient(b.librdkafka("scram-sha-512", "alice"))
    desc = alice.describe_topics(TopicCollection(["ops"]), include_authorized_operations=True)[
        "ops"
    ].result(20)
    assert set(desc.authorized_operations) == {AclOperation.READ, AclOperation.DESCRIBE}
    cluster = admin.describe_cluster(include_authorized_operations=True).result(20)
    assert AclOperation.ALTER in set(cluster.authorized_operations)
