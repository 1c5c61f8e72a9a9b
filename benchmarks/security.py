"""SASL_SSL (SCRAM-SHA-512) against plaintext, for Strata and for Apache Kafka configured the
same way (issue 17's performance figures): produce and tail-consume throughput as a ratio to
plaintext in the same run, and SCRAM connection set-up rate.

    python -m benchmarks.security [--messages 100000] [--size 1024] [--systems strata,kafka]
        [--out benchmarks/results/security.json]

Certificates come from devkit.certs; the SCRAM user is made from a users file (Strata) or
through AlterUserScramCredentials over the plaintext listener (Kafka). One system runs at a
time; both clients are librdkafka (confluent-kafka) with the same settings.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from devkit.broker import BrokerProcess
from devkit.certs import PASSWORD, make_certs
from devkit.procs import free_port

USER, SECRET = "bench", "bench-secret"


def _conf(port: int, secure: bool, ca: Path) -> dict:
    conf = {"bootstrap.servers": f"127.0.0.1:{port}"}
    if secure:
        conf |= {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": USER,
            "sasl.password": SECRET,
            "ssl.ca.location": str(ca),
        }
    return conf


def produce_and_tail(conf: dict, topic: str, messages: int, size: int) -> tuple[float, float]:
    """(produce MB/s, tail-consume MB/s): a consumer follows the producer's tail."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(30)
    value = b"x" * size
    consumed = {"n": 0, "end": 0.0}
    ready = threading.Event()

    def tail() -> None:
        from confluent_kafka import TopicPartition

        c = Consumer(conf | {"group.id": f"{topic}-g", "fetch.max.bytes": 16 << 20})
        c.assign([TopicPartition(topic, i, 0) for i in range(6)])  # no group join to wait for
        ready.set()
        deadline = time.monotonic() + 300
        while consumed["n"] < messages and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error() is None:
                    consumed["n"] += 1
        consumed["end"] = time.monotonic()
        c.close()

    t = threading.Thread(target=tail)
    t.start()
    ready.wait(30)
    p = Producer(conf | {"linger.ms": 5, "batch.size": 1 << 20, "acks": "all"})
    start = time.monotonic()
    for i in range(messages):
        while True:
            try:
                p.produce(topic, value, partition=i % 6)
                break
            except BufferError:
                p.poll(0.005)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    produced = time.monotonic() - start
    t.join(320)
    mb = messages * size / 1e6
    return mb / produced, mb / max(1e-9, consumed["end"] - start)


def scram_connections_per_s(port: int, ca: Path, seconds: float = 5.0) -> float:
    """Connections that finish TLS and a SCRAM-SHA-512 login, one after another."""
    import socket
    import ssl

    from broker.security.scram import ScramClient
    from protocol.versions import ApiKey
    from tests.wire import WireClient

    ctx = ssl.create_default_context(cafile=str(ca))
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        w = WireClient.__new__(WireClient)
        w.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 10),
                                 server_hostname="127.0.0.1")  # fmt: skip
        w._correlation = 0
        w.call(ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "SCRAM-SHA-512"})
        c = ScramClient("SCRAM-SHA-512", USER, SECRET)
        first = w.call(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": c.first()})
        final = w.call(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": c.final(first.auth_bytes)})
        assert final.error_code == 0 and c.check(final.auth_bytes)
        w.close()
        n += 1
    return n / seconds


def run_strata(root: Path, messages: int, size: int) -> dict:
    certs = make_certs(root / "certs")
    users = root / "users.toml"
    users.write_text(f'[users]\n{USER} = "{SECRET}"\n')
    plain, secure = free_port(), free_port()
    b = BrokerProcess(
        root / "strata", plain,
        "--listener", f"PLAINTEXT://127.0.0.1:{plain}",
        "--listener", f"SASL_SSL://127.0.0.1:{secure}",
        "--ssl-certfile", str(certs.server.cert), "--ssl-keyfile", str(certs.server.key),
        "--sasl-users-file", str(users),
    ).start()  # fmt: skip
    try:
        return _measure("strata", plain, secure, certs.ca, messages, size)
    finally:
        b.stop()


def run_kafka(root: Path, messages: int, size: int) -> dict:
    from benchmarks.kafka_reference import KafkaReference

    certs = make_certs(root / "certs")
    secure = free_port()
    k = KafkaReference(log_dir=root / "kafka")
    c = k.controller_port
    k.extra_properties = {
        "listeners": f"PLAINTEXT://127.0.0.1:{k.port},SASL_SSL://127.0.0.1:{secure},"
        f"CONTROLLER://127.0.0.1:{c}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{k.port},SASL_SSL://127.0.0.1:{secure}",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
        "SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "ssl.keystore.location": str(certs.server.p12),
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.password": PASSWORD,
        "ssl.key.password": PASSWORD,
    }
    k.start()
    try:
        from confluent_kafka.admin import (
            AdminClient,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
        admin = AdminClient({"bootstrap.servers": k.bootstrap})
        for f in admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(USER, info, SECRET.encode())]
        ).values():
            f.result(30)
        time.sleep(1)
        return _measure("kafka", k.port, secure, certs.ca, messages, size)
    finally:
        k.stop()


def _measure(system: str, plain: int, secure: int, ca: Path, messages: int, size: int) -> dict:
    """A warm-up of each (a JVM's JIT, the broker's first segments), then plaintext and
    SASL_SSL alternately in both orders; the best run of each counts, as the one least
    disturbed by whatever else the machine runs."""
    confs = {"plain": _conf(plain, False, ca), "secure": _conf(secure, True, ca)}
    for mode, conf in confs.items():
        produce_and_tail(conf, f"warm-{mode}", max(1000, messages // 5), size)
    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "secure": []}
    for i, mode in enumerate(("plain", "secure", "secure", "plain")):
        runs[mode].append(produce_and_tail(confs[mode], f"{mode}-{i}", messages, size))
    p_mb, t_mb = (max(r[k] for r in runs["plain"]) for k in (0, 1))
    s_mb, st_mb = (max(r[k] for r in runs["secure"]) for k in (0, 1))
    return {
        "system": system,
        "produce_plaintext_mb_s": round(p_mb, 1),
        "produce_sasl_ssl_mb_s": round(s_mb, 1),
        "produce_ratio": round(s_mb / p_mb, 3),
        "tail_consume_plaintext_mb_s": round(t_mb, 1),
        "tail_consume_sasl_ssl_mb_s": round(st_mb, 1),
        "tail_consume_ratio": round(st_mb / t_mb, 3),
        "scram_connections_per_s": round(scram_connections_per_s(secure, ca), 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--systems", default="strata,kafka")
    ap.add_argument("--out", help="also write the figures here (JSON)")
    args = ap.parse_args(argv)
    out = []
    with tempfile.TemporaryDirectory(prefix="strata-secbench-") as tmp:
        for system in args.systems.split(","):
            run = run_strata if system == "strata" else run_kafka
            out.append(run(Path(tmp) / system, args.messages, args.size))
            print(json.dumps(out[-1]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
