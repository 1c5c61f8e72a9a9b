"""The Helm chart (deploy/helm/strata), checked against the broker it deploys.

No cluster runs here, so the chart is rendered with the pinned helm (devkit/helm.py) and
read: kubectl's client-side dry run must accept it, every STRATA_* variable a pod gets
must be a broker setting, and the probes, ports, advertised listeners, data directory
and etcd address must agree with what the broker does with those settings. Then the
rendered pods run as processes on loopback, each with its rendered command and the
environment Kubernetes would give it (image ENV, then the pod's env with field and
Secret references resolved and $(VAR) expanded), only the addresses moved to loopback:
the embedded default, and three pods in cluster mode against a real etcd and moto, to
which a fourth pod, rendered with replicas=4, is added and then removed again, and
which then rolls one pod at a time as a rolling update would.
"""

from __future__ import annotations

import argparse
import base64
import copy
import functools
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlsplit

import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from broker.config import ENV_PREFIX, BrokerConfig, load
from devkit.etcd import etcd_binary
from devkit.helm import (
    HelmUnavailable,
    helm,
    helm_binary,
    knows_kind,
    kubectl_binary,
    kubectl_dry_run,
    schema_errors,
)
from devkit.procs import NO_PROXY, ServerProcess, free_port
from tests.cluster import wait_for
from tests.test_deploy import _dockerfile_env

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "strata"
CLUSTER_VALUES = CHART / "examples" / "cluster-trial.yaml"
RELEASE, NAMESPACE = "strata", "streaming"
SETTINGS = {ENV_PREFIX + name.upper() for name in BrokerConfig.__dataclass_fields__}

# the two value sets: the chart's defaults (one embedded broker), and the example of three
# brokers with the trial etcd and a bucket
VALUE_SETS = {"embedded": (), "cluster": ("-f", str(CLUSTER_VALUES))}
# everything optional on: the HPA, the ServiceMonitor, an existing etcd
AUTOSCALED = (
    *("-f", str(CLUSTER_VALUES)),
    *("--set", "metrics.serviceMonitor.enabled=true,autoscaling.enabled=true"),
    *("--set", "etcd.trial.enabled=false,etcd.endpoints=http://etcd.infra:2379"),
)


@pytest.fixture(scope="module", autouse=True)
def _helm() -> None:
    try:
        helm_binary()
    except HelmUnavailable as e:
        pytest.skip(f"helm: {e}")


@functools.cache
def _rendered_text(*args: str) -> str:
    """`helm template` of the chart as release strata in namespace streaming."""
    proc = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _render(*args: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(_rendered_text(*args)) if d]


def _one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def _brokers(docs: list[dict]) -> dict:
    """The brokers' StatefulSet: the one whose pods run a container named broker."""
    (sts,) = [
        d
        for d in docs
        if d["kind"] == "StatefulSet"
        and any(c["name"] == "broker" for c in d["spec"]["template"]["spec"]["containers"])
    ]
    return sts


def _container(sts: dict, name: str = "broker") -> dict:
    return next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ is a literal $, and
    anything else is left as written."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, text)


def _secret_value(docs: list[dict], ref: dict) -> str:
    secret = _one(docs, "Secret", ref["name"])
    if ref["key"] in secret.get("stringData", {}):
        return secret["stringData"][ref["key"]]
    return base64.b64decode(secret["data"][ref["key"]]).decode()


def _pod_env(docs: list[dict], container: dict, pod: str) -> dict[str, str]:
    """What the container's process sees: the image's ENV, then the container's env in
    order (field and Secret references resolved; $(VAR) expanded, which names only the
    variables defined earlier in that list)."""
    defined: dict[str, str] = {}
    fields = {"metadata.name": pod, "metadata.namespace": NAMESPACE}
    for entry in container.get("env", []):
        if "value" in entry:
            defined[entry["name"]] = _expand(str(entry["value"]), defined)
        elif "fieldRef" in entry["valueFrom"]:
            defined[entry["name"]] = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            defined[entry["name"]] = _secret_value(docs, entry["valueFrom"]["secretKeyRef"])
    return {**_dockerfile_env(), **defined}


def _pod(docs: list[dict], ordinal: int) -> tuple[str, dict[str, str]]:
    """Pod `ordinal` of the brokers' StatefulSet: its name and its broker's environment,
    with STRATA_BROKER_ID as the command derives it."""
    sts = _brokers(docs)
    name = f"{sts['metadata']['name']}-{ordinal}"
    env = _pod_env(docs, _container(sts), name)
    return name, env


def _broker_config(docs: list[dict], ordinal: int) -> BrokerConfig:
    name, env = _pod(docs, ordinal)
    # what the command exports before it execs the broker (run for real in the slow tests)
    env["STRATA_BROKER_ID"] = name.rsplit("-", 1)[1]
    return load(argparse.Namespace(), environ=env)


def _port_number(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def _service_target(container: dict, service: dict, name: str) -> int:
    """The container port that the Service's port `name` leads to."""
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == name]
    return _port_number(container, port["targetPort"])


def _port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


# -- the chart as Kubernetes reads it --------------------------------------------------


@pytest.mark.skipif(kubectl_binary() is None, reason="kubectl is not installed")
@pytest.mark.parametrize(
    "args, statefulsets",
    [
        ((), 1),
        (("-f", str(CLUSTER_VALUES)), 2),  # the brokers' and the trial etcd's
        (AUTOSCALED, 1),
    ],
    ids=["embedded", "cluster", "autoscaled-existing-etcd"],
)
def test_the_chart_lints_and_kubectl_accepts_every_object_it_renders(args, statefulsets) -> None:
    lint = helm("lint", "--strict", str(CHART), *args)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    docs = _render(*args)
    result = kubectl_dry_run(_rendered_text(*args), NAMESPACE)
    assert result.returncode == 0, result.stderr
    accepted = result.stdout.splitlines()
    assert len(accepted) == len(docs), result.stdout
    assert all(line.endswith("created (dry run)") for line in accepted), result.stdout
    kinds = Counter(d["kind"] for d in docs)
    assert kinds["StatefulSet"] == statefulsets
    if "autoscaling.enabled=true" in str(args):
        assert {"HorizontalPodAutoscaler", "ServiceMonitor"} <= set(kinds)
        # the HPA owns the replica count, and takes pods away one at a time
        assert "replicas" not in _brokers(docs)["spec"]
        # the ServiceMonitor scrapes the headless Service's metrics port
        monitor = _one(docs, "ServiceMonitor", RELEASE)
        headless = _one(docs, "Service", _brokers(docs)["spec"]["serviceName"])
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= headless["metadata"]["labels"].items()
        # and not the bootstrap Service too, which would scrape every pod twice
        assert not selector.items() <= _one(docs, "Service", RELEASE)["metadata"]["labels"].items()
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in headless["spec"]["ports"]}
        assert endpoint["path"] == "/metrics"
        hpa = _one(docs, "HorizontalPodAutoscaler", RELEASE)
        assert hpa["spec"]["scaleTargetRef"]["name"] == _brokers(docs)["metadata"]["name"]
        assert hpa["spec"]["behavior"]["scaleDown"]["policies"] == [
            {"type": "Pods", "value": 1, "periodSeconds": 300}
        ]


@pytest.mark.parametrize(
    "args",
    [(), ("-f", str(CLUSTER_VALUES)), AUTOSCALED],
    ids=["embedded", "cluster", "autoscaled-existing-etcd"],
)
def test_every_rendered_object_fits_the_kubernetes_api_schema(args) -> None:
    docs = _render(*args)
    try:
        custom = [d["kind"] for d in docs if not knows_kind(d)]
    except HelmUnavailable as e:
        pytest.skip(f"the API schema: {e}")
    assert custom == (["ServiceMonitor"] if args == AUTOSCALED else [])
    for doc in docs:
        if knows_kind(doc):
            assert schema_errors(doc) == [], doc["metadata"]["name"]
    # and the check finds what it is for: a misplaced field, a number as a string
    sts = copy.deepcopy(_brokers(docs))
    broker = _container(sts)
    broker["readinessprobe"] = broker.pop("readinessProbe")
    sts["spec"]["replicas"] = "3"
    assert sorted(schema_errors(sts)) == [
        "StatefulSet.spec.replicas: '3' is not a numeric",
        "StatefulSet.spec.template.spec.containers[0]: unknown field 'readinessprobe'",
    ]


@pytest.mark.parametrize(
    "sets, message",
    [
        ("replicas=2", "more than one broker needs cluster mode"),
        ("etcd.endpoints=http://etcd:2379", "cluster mode needs a shared bucket"),
        ("durability=fast", "durability must be wal or object"),
        ("config.listen=0.0.0.0:1", "config.listen: the chart sets it"),
    ],
)
def test_values_that_cannot_work_are_refused_when_rendering(sets: str, message: str) -> None:
    proc = helm("template", RELEASE, str(CHART), "--set", sets)
    assert proc.returncode != 0
    assert message in proc.stderr


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_every_strata_variable_a_pod_gets_is_a_setting_the_broker_accepts(values: str) -> None:
    docs = _render(*VALUE_SETS[values])
    sts = _brokers(docs)
    for ordinal in range(sts["spec"]["replicas"]):
        _, env = _pod(docs, ordinal)
        unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in SETTINGS)
        assert not unknown, f"not broker settings: {unknown}"
        config = _broker_config(docs, ordinal)
        assert config.broker_id == ordinal
        config.object_tier()  # durability and the upload settings are valid
        assert config.listen_host == "0.0.0.0"
    if values == "embedded":
        assert sts["spec"]["replicas"] == 1
        assert not config.etcd and not config.object_store
        # the embedded default keeps its log on the pod's volume
        assert Path(config.object_store_url.removeprefix("file://")).is_relative_to(config.data_dir)
    else:
        assert sts["spec"]["replicas"] == 3
        assert config.object_store.startswith("s3://") and config.etcd
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]


def test_settings_in_values_reach_the_broker_as_written(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        "config:\n  upload_bytes: 67108864\n  auto_create_topics: false\n  rack: eu-1a\n"
    )
    _, env = _pod(_render("-f", str(values)), 0)
    assert env["STRATA_UPLOAD_BYTES"] == "67108864"  # not 6.7108864e+07
    config = _broker_config(_render("-f", str(values)), 0)
    assert (config.upload_bytes, config.auto_create_topics, config.rack) == (
        64 * 1024 * 1024,
        False,
        "eu-1a",
    )


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_probes_ports_listeners_and_volume_agree_with_the_broker_settings(values: str) -> None:
    docs = _render(*VALUE_SETS[values])
    sts = _brokers(docs)
    pod = sts["spec"]["template"]
    broker = _container(sts)
    headless = _one(docs, "Service", sts["spec"]["serviceName"])
    bootstrap = _one(docs, "Service", RELEASE)
    config = _broker_config(docs, 2 if values == "cluster" else 0)
    kafka, metrics = config.listen_port, _port(config.metrics_listen)
    assert {p["containerPort"] for p in broker["ports"]} == {kafka, metrics}

    # each broker advertises its own pod's name under the headless Service
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    pod_name = f"{sts['metadata']['name']}-{config.broker_id}"
    service = headless["metadata"]["name"]
    assert config.advertised == (f"{pod_name}.{service}.{NAMESPACE}.svc.cluster.local", kafka)
    # both Services select exactly these pods and lead to the port the broker listens on
    for svc in (headless, bootstrap):
        assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        assert _service_target(broker, svc, "kafka") == kafka
    assert bootstrap["spec"].get("clusterIP") != "None"
    assert _service_target(broker, headless, "metrics") == metrics

    # the probes ask the broker's own metrics listener
    probes = {k: broker[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/healthz"
    assert {_port_number(broker, p["port"]) for p in probes.values()} == {metrics}

    # the data directory (the WAL) is the pod's own volume from the claim template
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in broker["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == str(config.data_dir)

    # a stop hands over after the preStop pause, within the grace period
    pre_stop = broker["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["spec"]["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + 60
    # scale-in and rolling updates: one pod at a time; drains likewise
    assert sts["spec"]["podManagementPolicy"] == "OrderedReady"
    pdb = _one(docs, "PodDisruptionBudget", RELEASE)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()

    if values == "cluster":
        # the brokers reach the trial etcd at its Service, on the port it serves clients
        etcd_sts = _one(docs, "StatefulSet", f"{RELEASE}-etcd")
        etcd_svc = _one(docs, "Service", etcd_sts["spec"]["serviceName"])
        url = urlsplit(config.etcd)
        assert url.hostname == f"{etcd_svc['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
        (client_port,) = etcd_svc["spec"]["ports"]
        assert client_port["port"] == url.port
        etcd = _container(etcd_sts, "etcd")
        assert _port_number(etcd, client_port["targetPort"]) == url.port
        flags = dict(a.removeprefix("--").split("=", 1) for a in etcd["command"][1:])
        assert _port(flags["listen-client-urls"]) == url.port
        assert flags["advertise-client-urls"] == config.etcd
        assert int(flags["auto-compaction-retention"]) > 0
        assert int(flags["quota-backend-bytes"]) > 0
        assert (
            etcd_svc["spec"]["selector"].items()
            <= etcd_sts["spec"]["template"]["metadata"]["labels"].items()
        )
        # a broker waits for that same etcd before it starts
        (init,) = pod["spec"]["initContainers"]
        assert {e["name"]: e["value"] for e in init["env"]}["STRATA_ETCD"] == config.etcd


def test_scaling_changes_only_the_replica_count_so_running_pods_are_left_alone() -> None:
    three, four = (
        _render("-f", str(CLUSTER_VALUES)),
        _render("-f", str(CLUSTER_VALUES), "--set", "replicas=4"),
    )
    sts3, sts4 = _brokers(three), _brokers(four)
    assert (sts3["spec"]["replicas"], sts4["spec"]["replicas"]) == (3, 4)
    assert sts3["spec"]["template"] == sts4["spec"]["template"]
    assert [d for d in three if d is not sts3] == [d for d in four if d is not sts4]


def test_the_dashboard_config_map_is_the_grafana_dashboard_in_deploy() -> None:
    cm = _one(_render(), "ConfigMap", f"{RELEASE}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = (ROOT / "deploy" / "grafana" / "strata.json").read_text()
    assert cm["data"]["strata.json"].strip() == dashboard.strip()


def test_durability_in_values_reaches_the_broker_and_values_explain_the_trade_off() -> None:
    docs = _render("-f", str(CLUSTER_VALUES), "--set", "durability=object")
    assert _broker_config(docs, 0).durability == "object"
    values = (CHART / "values.yaml").read_text()
    comment = values[: values.index("\ndurability:")].rsplit("\n\n", 1)[1]
    assert "wal (default)" in comment and "object:" in comment, comment


# -- the rendered pods as processes on loopback ------------------------------------------


class PodProcess(ServerProcess):
    """One rendered broker pod as a process: its init containers, then its container's
    command and args, in its environment with only the addresses moved to loopback."""

    def __init__(self, docs: list[dict], ordinal: int, root: Path, place: dict[str, str]) -> None:
        super().__init__()
        self.sts = _brokers(docs)
        self.container = _container(self.sts)
        self.name, env = _pod(docs, ordinal)
        self.port, self.metrics_port = free_port(), free_port()
        self.pod_env = env
        self.env = self._on_loopback(env, root / self.name, place)

    def _on_loopback(self, env: dict[str, str], data_dir: Path, place: dict[str, str]) -> dict:
        """The pod's environment with its addresses on this machine: the listeners on
        loopback ports of their own, the volume a directory, etcd, the S3 endpoint and
        the bucket the test's. Every other variable is passed as rendered."""
        out = dict(env)
        moved = {
            "STRATA_DATA_DIR": str(data_dir),
            "STRATA_LISTEN": f"127.0.0.1:{self.port}",
            "STRATA_ADVERTISED_LISTENER": f"127.0.0.1:{self.port}",
            "STRATA_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}",
        }
        if "STRATA_ETCD" in env:
            moved["STRATA_ETCD"] = place["etcd"]
        if "STRATA_S3_ENDPOINT" in env:
            moved["STRATA_S3_ENDPOINT"] = place["s3_endpoint"]
        if env.get("STRATA_OBJECT_STORE", "").startswith("s3://"):
            prefix = env["STRATA_OBJECT_STORE"].removeprefix("s3://").partition("/")[2]
            moved["STRATA_OBJECT_STORE"] = f"s3://{place['bucket']}/{prefix}"
        out.update(moved)
        # a container's environment, not this test's: the venv's `strata` and `python`
        # stand in for the image's
        out["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"
        out["HOME"] = str(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        return out

    def _argv(self, container: dict) -> list[str]:
        """command + args, $(VAR) expanded with the container's own variables."""
        defined = {e["name"]: self.env[e["name"]] for e in container.get("env", [])}
        return [
            _expand(a, defined) for a in container.get("command", []) + container.get("args", [])
        ]

    def start(self, timeout: float = 60.0) -> PodProcess:
        for init in self.sts["spec"]["template"]["spec"].get("initContainers", []):
            env = {**self.env, **{e["name"]: e["value"] for e in init.get("env", [])}}
            if "STRATA_ETCD" in env:
                env["STRATA_ETCD"] = self.env["STRATA_ETCD"]  # the same move as the broker's
            done = subprocess.run(self._argv(init), env=env, capture_output=True, timeout=timeout)
            assert done.returncode == 0, f"{init['name']}: {done.stdout!r} {done.stderr!r}"
        self._spawn(self._argv(self.container), env=self.env)
        if not wait_for(self.ready, timeout):
            raise AssertionError(f"{self.name} not ready within {timeout}s:\n{self.log()}")
        return self

    def probe(self, kind: str) -> int:
        """The status the rendered probe (readinessProbe, livenessProbe) would see."""
        get = self.container[kind]["httpGet"]
        assert _port_number(self.container, get["port"]) == _port(
            self.pod_env["STRATA_METRICS_LISTEN"]
        )
        try:
            with NO_PROXY.open(
                f"http://127.0.0.1:{self.metrics_port}{get['path']}", timeout=2
            ) as r:
                return r.status
        except HTTPError as e:
            return e.code
        except OSError:
            return 0

    def ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log()
        return self.probe("readinessProbe") == 200

    def terminate(self) -> float:
        """What the kubelet does (after preStop): SIGTERM, then wait for the exit; the
        seconds the broker took."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        grace = self.sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert self.proc.wait(grace) == 0, self.log()
        self.proc = None
        return time.monotonic() - started

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def _produce(bootstrap: str, topic: str, count: int, start: int = 0) -> dict[bytes, tuple]:
    """Produce `count` records through `bootstrap`; {value: (partition, offset)}."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    acked: dict[bytes, tuple[int, int]] = {}
    errors: list = []

    def delivered(err, msg) -> None:
        if err is not None:
            errors.append(err)
        else:
            acked[msg.value()] = (msg.partition(), msg.offset())

    for i in range(start, start + count):
        producer.produce(topic, key=b"%d" % i, value=b"record-%04d" % i, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert not errors, errors[:5]
    assert len(acked) == count
    return acked


def _read_all(bootstrap: str, topic: str, partitions: int, expected: int) -> dict[tuple, bytes]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"{topic}-check", "enable.auto.commit": False}
    )
    got: dict[tuple[int, int], bytes] = {}
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + 30
        while len(got) < expected and time.monotonic() < deadline:
            for m in consumer.consume(500, 1.0):
                if m.error() is not None:
                    continue  # a leader moving: the consumer follows Metadata
                key = (m.partition(), m.offset())
                assert key not in got, f"{key} read twice"
                got[key] = m.value()
    finally:
        consumer.close()
    return got


@pytest.mark.slow
def test_the_embedded_default_pod_serves_a_round_trip(tmp_path: Path) -> None:
    docs = _render()
    pod = PodProcess(docs, 0, tmp_path, {})
    try:
        pod.start()
        assert pod.probe("livenessProbe") == pod.probe("startupProbe") == 200
        admin = AdminClient({"bootstrap.servers": pod.bootstrap})
        md = admin.list_topics(timeout=10)
        assert {i: (b.host, b.port) for i, b in md.brokers.items()} == {0: ("127.0.0.1", pod.port)}
        admin.create_topics([NewTopic("embedded", 3, 1)])["embedded"].result(15)
        acked = _produce(pod.bootstrap, "embedded", 200)
        got = _read_all(pod.bootstrap, "embedded", 3, 200)
        assert {v: k for k, v in got.items()} == acked
        # the log is on the pod's volume (the embedded default)
        assert list((Path(pod.env["STRATA_DATA_DIR"]) / "objects").iterdir())
    finally:
        pod.stop()


@pytest.mark.slow
@pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed")
def test_three_pods_form_a_cluster_a_fourth_takes_its_share_and_hands_it_back_then_all_roll(
    etcd, s3_bucket, tmp_path: Path
) -> None:
    moto, bucket = s3_bucket
    place = {"etcd": etcd.url, "s3_endpoint": moto.endpoint, "bucket": bucket}
    docs = _render("-f", str(CLUSTER_VALUES))
    pods: dict[int, PodProcess] = {}
    try:
        # OrderedReady: each pod starts once the one before it is ready
        for ordinal in range(_brokers(docs)["spec"]["replicas"]):
            pods[ordinal] = PodProcess(docs, ordinal, tmp_path, place).start()
        bootstrap = ",".join(p.bootstrap for p in pods.values())
        admin = AdminClient({"bootstrap.servers": bootstrap})
        assert wait_for(lambda: set(admin.list_topics(timeout=5).brokers) == {0, 1, 2})
        md = admin.list_topics(timeout=5)
        assert {i: (b.host, b.port) for i, b in md.brokers.items()} == {
            i: ("127.0.0.1", p.port) for i, p in pods.items()
        }

        topic, partitions = "pods", 8
        admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(15)

        def leaders() -> dict[int, int]:
            md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=5)
            return {p.id: p.leader for p in md.topics[topic].partitions.values()}

        assert wait_for(lambda: len(leaders()) == partitions and -1 not in leaders().values())
        assert wait_for(lambda: set(leaders().values()) == {0, 1, 2}), leaders()
        acked = _produce(pods[0].bootstrap, topic, 400)

        # scale out: the fourth pod as `--set replicas=4` renders it
        four = _render("-f", str(CLUSTER_VALUES), "--set", "replicas=4")
        assert _brokers(four)["spec"]["replicas"] == 4
        started = time.monotonic()
        pods[3] = PodProcess(four, 3, tmp_path, place).start()
        bootstrap = ",".join(p.bootstrap for p in pods.values())
        assert wait_for(lambda: list(leaders().values()).count(3) >= 2, timeout=30), leaders()
        took_share = time.monotonic() - started
        got = _read_all(pods[3].bootstrap, topic, partitions, len(acked))
        assert {v: k for k, v in got.items()} == acked
        # and takes writes for them
        acked |= _produce(pods[3].bootstrap, topic, 200, start=400)
        led_by_3 = {p for p, leader in leaders().items() if leader == 3}
        assert led_by_3 & {acked[b"record-%04d" % i][0] for i in range(400, 600)}

        # scale in: the highest ordinal stops (SIGTERM after preStop) and hands over first
        handed_over = pods[3].terminate()
        bootstrap = ",".join(p.bootstrap for i, p in pods.items() if i != 3)
        assert wait_for(lambda: set(leaders().values()) <= {0, 1, 2}, timeout=5), leaders()
        got = _read_all(pods[1].bootstrap, topic, partitions, len(acked))
        assert {v: k for k, v in got.items()} == acked

        # a rolling update: from the highest ordinal down, each pod stops (handing over),
        # starts again on its own volume, is ready and takes a share again before the next
        for ordinal in (2, 1, 0):
            pods[ordinal].terminate()
            pods[ordinal].start()
            assert wait_for(lambda o=ordinal: list(leaders().values()).count(o) >= 2), leaders()
        got = _read_all(pods[0].bootstrap, topic, partitions, len(acked))
        assert {v: k for k, v in got.items()} == acked
        # the log went to the bucket, written with the credentials from the chart's Secret
        prefix = pods[0].pod_env["STRATA_OBJECT_STORE"].removeprefix("s3://").partition("/")[2]
        assert moto.list_keys(bucket, f"{prefix}/data/"), moto.list_keys(bucket)
        print(
            f"pod 3 led its share {took_share:.1f}s after start; "
            f"its stop (hand-off included) took {handed_over:.1f}s"
        )
    finally:
        for p in pods.values():
            p.stop()


class EtcdPodProcess(ServerProcess):
    """The trial etcd pod as a process: its rendered command, with this machine's etcd
    binary, its data directory a temp one, and its URLs on loopback ports of their own."""

    def __init__(self, docs: list[dict], root: Path) -> None:
        super().__init__()
        self.container = _container(_one(docs, "StatefulSet", f"{RELEASE}-etcd"), "etcd")
        self.client_port, self.peer_port = free_port(), free_port()
        argv = [etcd_binary() or "etcd"]
        self.flags = dict(a.removeprefix("--").split("=", 1) for a in self.container["command"][1:])
        for arg in self.container["command"][1:]:
            name, _, value = arg.removeprefix("--").partition("=")
            if name == "data-dir":
                value = str(root / "etcd")
            elif name.endswith("client-urls"):
                value = f"http://127.0.0.1:{self.client_port}"
            elif "peer" in name or name == "initial-cluster":
                assert "127.0.0.1:2380" in value, arg  # the peer URL never leaves the pod
                value = value.replace("127.0.0.1:2380", f"127.0.0.1:{self.peer_port}")
            argv.append(f"--{name}={value}")
        self.argv = argv

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> EtcdPodProcess:
        self._spawn(self.argv)
        probe = self.container["readinessProbe"]["httpGet"]
        listen = self.flags["listen-client-urls"]
        assert _port_number(self.container, probe["port"]) == _port(listen)

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            with NO_PROXY.open(f"{self.url}{probe['path']}", timeout=1) as r:
                return r.status == 200

        if not wait_for(ready, 30):
            raise AssertionError(f"the etcd pod is not ready:\n{self.log()}")
        return self


@pytest.mark.slow
@pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed")
def test_a_broker_pod_joins_the_trial_etcd_pod_started_with_its_rendered_flags(
    s3_bucket, tmp_path: Path
) -> None:
    moto, bucket = s3_bucket
    docs = _render("-f", str(CLUSTER_VALUES))
    etcd = EtcdPodProcess(docs, tmp_path).start()
    pod = None
    try:
        place = {"etcd": etcd.url, "s3_endpoint": moto.endpoint, "bucket": bucket}
        pod = PodProcess(docs, 0, tmp_path, place).start()
        md = AdminClient({"bootstrap.servers": pod.bootstrap}).list_topics(timeout=10)
        assert set(md.brokers) == {0}
        assert md.controller_id == 0
    finally:
        if pod is not None:
            pod.stop()
        etcd.stop()
