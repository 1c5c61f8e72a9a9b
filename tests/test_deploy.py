"""compose.yaml and the Dockerfile, checked against the broker they deploy.

Docker does not run on the CI machines, so most of these read the files: every STRATA_*
variable a broker service sets must be a setting the broker knows and accepts (an
unknown one would be ignored silently), the brokers must not collide with each other
(ids, ports, volumes), each must find etcd and the bucket the other services provide,
and the image must contain every package the project installs. The last test then runs
the same topology as processes on loopback (a real etcd, moto for MinIO, the brokers
with the compose file's own settings) and produces and consumes through it.
"""

from __future__ import annotations

import argparse
import re
import time
import tomllib
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from broker.config import ENV_PREFIX, BrokerConfig, load
from devkit.broker import BrokerProcess
from devkit.etcd import etcd_binary
from devkit.procs import free_port
from tests.cluster import wait_for

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {ENV_PREFIX + name.upper() for name in BrokerConfig.__dataclass_fields__}
SCALE_OUT = "scale-out"


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text().replace("\\\n", " ")


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in _dockerfile().splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def _brokers() -> dict[str, dict]:
    """Every broker service: those named strata-*."""
    services = _compose()["services"]
    return {name: s for name, s in services.items() if name.startswith("strata-")}


BROKERS = sorted(_brokers())


def _broker_env(name: str) -> dict[str, str]:
    """What a broker container sees: the image's ENV, then compose's environment."""
    service = _brokers()[name]
    return {**_dockerfile_env(), **{k: str(v) for k, v in service["environment"].items()}}


def _config(name: str) -> BrokerConfig:
    return load(argparse.Namespace(), environ=_broker_env(name))


def _ports(service: dict) -> dict[int, int]:
    """Published ports, host -> container (short "[ip:]host:container[/tcp]" or long form)."""
    out: dict[int, int] = {}
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            out[int(entry["published"])] = int(entry["target"])
        else:
            parts = str(entry).split("/")[0].split(":")
            assert len(parts) >= 2, f"{entry!r}: a port without a fixed host port"
            out[int(parts[-2])] = int(parts[-1])
    return out


def _volumes(service: dict) -> dict[str, str]:
    """Mounts, source -> target."""
    out = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            out[entry["source"]] = entry["target"]
        else:
            source, target = str(entry).split(":")[:2]
            out[source] = target
    return out


def _flags(command: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in command if a.startswith("--"))


def _port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def test_three_brokers_run_by_default_and_a_fourth_only_with_the_scale_out_profile() -> None:
    brokers = _brokers()
    default = sorted(n for n, s in brokers.items() if not s.get("profiles"))
    assert default == ["strata-1", "strata-2", "strata-3"]
    extra = {n: s["profiles"] for n, s in brokers.items() if s.get("profiles")}
    assert extra == {"strata-4": [SCALE_OUT]}
    # the other services are what every broker needs, so they run in every profile
    others = {n: s for n, s in _compose()["services"].items() if n not in brokers}
    assert not [n for n, s in others.items() if s.get("profiles")]


@pytest.mark.parametrize("name", BROKERS)
def test_every_strata_variable_is_a_setting_the_broker_accepts(name: str) -> None:
    env = _broker_env(name)
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in SETTINGS)
    assert not unknown, f"{name}: not broker settings: {unknown}"
    config = _config(name)
    assert config.broker_id == int(name.removeprefix("strata-"))
    assert config.etcd, f"{name} would run as a lone broker, not in the cluster"
    assert config.object_store == "s3://strata/cluster-1"
    assert config.s3_endpoint == "http://minio:9000"
    assert config.listen_host == "0.0.0.0"
    # clients on the host reach each broker at the address Metadata gives them
    host, port = config.advertised
    assert host == "localhost"
    assert port == config.listen_port
    assert config.metrics_listen.startswith("0.0.0.0:")
    config.object_tier()  # durability and the upload settings are valid


def test_no_two_brokers_share_an_id_a_port_or_a_volume() -> None:
    configs = {name: _config(name) for name in BROKERS}
    services = _compose()["services"]

    def unique(what: str, values: list) -> None:
        dup = sorted(v for v, n in Counter(values).items() if n > 1)
        assert not dup, f"{what} used twice: {dup}"

    unique("broker id", [c.broker_id for c in configs.values()])
    unique("listen port", [c.listen_port for c in configs.values()])
    unique("advertised listener", [c.advertised for c in configs.values()])
    unique("metrics port", [_port(c.metrics_listen) for c in configs.values()])
    unique("host port", [p for s in services.values() for p in _ports(s)])
    unique("volume", [v for s in services.values() for v in _volumes(s)])
    # all the same cluster, in the same bucket prefix
    assert len({(c.cluster_name, c.etcd, c.object_store) for c in configs.values()}) == 1


@pytest.mark.parametrize("name", BROKERS)
def test_each_broker_publishes_its_ports_and_keeps_its_wal_in_its_own_volume(name: str) -> None:
    service = _brokers()[name]
    config = _config(name)
    ports = _ports(service)
    # the advertised host port leads to the port the broker listens on, and metrics too
    assert ports.get(config.advertised[1]) == config.listen_port, ports
    metrics = _port(config.metrics_listen)
    assert ports.get(metrics) == metrics, ports
    # the container's healthcheck probes that broker's own /readyz (the image's probes 9100)
    probe = " ".join(service.get("healthcheck", {}).get("test", [])) or next(
        line for line in _dockerfile().splitlines() if line.startswith("HEALTHCHECK")
    )
    assert f"127.0.0.1:{metrics}/readyz" in probe, probe
    # its WAL (the data directory) is a named volume of its own
    volumes = _volumes(service)
    wal = [src for src, target in volumes.items() if target == str(config.data_dir)]
    assert wal == [f"{name}-wal"], volumes
    assert wal[0] in _compose()["volumes"]
    # a clean stop uploads the WAL and hands partitions over: more than docker's 10 s
    assert service["stop_grace_period"] == "60s"


def test_every_broker_reaches_etcd_at_its_advertised_client_url() -> None:
    services = _compose()["services"]
    etcd = services["etcd"]
    assert re.search(r"etcd:v3\.5\.\d+$", etcd["image"])
    flags = _flags(etcd["command"])
    assert flags["listen-client-urls"] == "http://0.0.0.0:2379"
    advertised = flags["advertise-client-urls"]
    assert urlsplit(advertised).hostname == "etcd"  # the service name, on compose's network
    assert _port(advertised) == _port(flags["listen-client-urls"])
    assert flags["initial-cluster"].count("=") == 1, "a single member"
    # leases are renewed constantly: history must be compacted and the database capped
    assert flags["auto-compaction-mode"] == "revision"
    assert int(flags["auto-compaction-retention"]) > 0
    assert int(flags["quota-backend-bytes"]) > 0
    assert "endpoint health" in " ".join(etcd["healthcheck"]["test"])
    assert flags["data-dir"] in _volumes(etcd).values(), "etcd's data is not in a volume"
    for name in BROKERS:
        assert _broker_env(name)["STRATA_ETCD"] == advertised, name
        depends = _brokers()[name]["depends_on"]
        assert depends["etcd"]["condition"] == "service_healthy", name
        assert depends["create-bucket"]["condition"] == "service_completed_successfully", name


def test_minio_and_the_brokers_agree_on_bucket_and_credentials() -> None:
    services = _compose()["services"]
    minio = services["minio"]["environment"]
    create = " ".join(services["create-bucket"]["entrypoint"])
    assert f"{minio['MINIO_ROOT_USER']} {minio['MINIO_ROOT_PASSWORD']}" in create
    for name in BROKERS:
        env = _broker_env(name)
        assert env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"], name
        assert env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"], name
        bucket = env["STRATA_OBJECT_STORE"].removeprefix("s3://").split("/")[0]
        assert f"local/{bucket}" in create, name
        endpoint = urlsplit(env["STRATA_S3_ENDPOINT"])
        assert endpoint.hostname == "minio", name
        assert f"http://minio:{endpoint.port} " in create  # where the bucket was created
        assert endpoint.port in _ports(services["minio"]).values(), name


def test_the_image_holds_every_package_the_project_installs() -> None:
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]
    copied = set(re.findall(r"^COPY (\S+) ", (ROOT / "Dockerfile").read_text(), re.M))
    missing = sorted({p.split(".")[0] for p in packages} - copied)
    assert not missing, f"the Dockerfile does not copy {missing}"
    for name in BROKERS:
        assert _brokers()[name]["build"] == ".", f"{name} does not run the image built here"


# -- the same topology on loopback ------------------------------------------------------


def _loopback_args(
    env: dict[str, str], *, etcd: str, s3_endpoint: str, bucket: str, port: int
) -> list[str]:
    """A compose broker's STRATA_* settings as flags for a broker on loopback: etcd,
    MinIO and the bucket replaced by the test's, localhost:909x by the broker's port.
    (BrokerProcess sets --listen and --data-dir itself.)"""
    args: list[str] = []
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key.removeprefix(ENV_PREFIX).lower()
        if name in ("listen", "data_dir"):
            continue
        if name == "etcd":
            value = etcd
        elif name == "s3_endpoint":
            value = s3_endpoint
        elif name == "object_store":
            prefix = value.removeprefix("s3://").partition("/")[2]
            value = f"s3://{bucket}/{prefix}"
        elif name == "advertised_listener":
            value = f"127.0.0.1:{port}"
        elif name == "metrics_listen":
            value = f"127.0.0.1:{free_port()}"
        args += ["--" + name.replace("_", "-"), value]
    return args


@pytest.mark.slow
@pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed")
def test_the_compose_cluster_on_loopback_serves_through_any_broker(
    etcd, s3_bucket, tmp_path: Path
) -> None:
    moto, bucket = s3_bucket
    names = [n for n in BROKERS if not _brokers()[n].get("profiles")]
    brokers: dict[int, BrokerProcess] = {}
    try:
        for name in names:
            port = free_port()
            args = _loopback_args(
                _broker_env(name),
                etcd=etcd.url,
                s3_endpoint=moto.endpoint,
                bucket=bucket,
                port=port,
            )
            b = BrokerProcess(tmp_path / name, port, *args)
            brokers[_config(name).broker_id] = b
            b.start()
        ids = set(brokers)
        assert ids == {1, 2, 3}
        first, second = brokers[1], brokers[2]
        bootstrap = ",".join(b.bootstrap for b in brokers.values())
        admin = AdminClient({"bootstrap.servers": bootstrap})
        assert wait_for(lambda: set(admin.list_topics(timeout=5).brokers) == ids, timeout=15)

        topic, partitions = "compose", 6
        admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(15)

        def leaders() -> dict[int, int]:
            md = admin.list_topics(topic, timeout=5)
            return {p.id: p.leader for p in md.topics[topic].partitions.values()}

        assert wait_for(lambda: len(leaders()) == partitions and -1 not in leaders().values())
        # every broker is in Metadata, with the address it advertises, and leads its share
        md = admin.list_topics(timeout=5)
        assert {i: (m.host, m.port) for i, m in md.brokers.items()} == {
            i: ("127.0.0.1", b.port) for i, b in brokers.items()
        }
        assert wait_for(lambda: sorted(Counter(leaders().values()).values()) == [2, 2, 2]), (
            leaders()
        )

        # produce through broker 1 alone, read everything back through broker 2 alone
        producer = Producer({"bootstrap.servers": first.bootstrap, "enable.idempotence": True})
        acked: dict[bytes, tuple[int, int]] = {}
        errors: list = []

        def delivered(err, msg) -> None:
            if err is not None:
                errors.append(err)
            else:
                acked[msg.value()] = (msg.partition(), msg.offset())

        for i in range(300):
            producer.produce(topic, key=b"%d" % i, value=b"record-%03d" % i, on_delivery=delivered)
        assert producer.flush(30) == 0
        assert not errors, errors[:5]
        assert len(acked) == 300
        assert len({p for p, _ in acked.values()}) > 1

        consumer = Consumer(
            {
                "bootstrap.servers": second.bootstrap,
                "group.id": "compose",
                "enable.auto.commit": False,
            }
        )
        try:
            ends = {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                for p in range(partitions)
            }
            assert all(low == 0 for low, _ in ends.values()), ends
            assert sum(high for _, high in ends.values()) == 300, ends
            consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
            got: dict[tuple[int, int], bytes] = {}
            deadline = time.monotonic() + 20
            while len(got) < 300 and time.monotonic() < deadline:
                for m in consumer.consume(500, 1.0):
                    assert m.error() is None, m.error()
                    key = (m.partition(), m.offset())
                    assert key not in got, f"{key} read twice"
                    got[key] = m.value()
        finally:
            consumer.close()
        assert {v: k for k, v in got.items()} == acked
    finally:
        for b in brokers.values():
            b.stop()
