"""Run a real Apache Kafka 4.x broker locally, as the reference Strata is measured against.

Why: compatibility checks and benchmarks mean little without the real thing beside them, so this
fetches the broker jars from Maven Central once (benchmarks/kafka/pom.xml) into a cache dir and
runs a single-node KRaft broker+controller on loopback, started and stopped like any subprocess.

    with KafkaReference() as kafka:
        print(kafka.bootstrap)

    python -m benchmarks.kafka_reference --smoke         # start, print the bootstrap, stop
    python -m benchmarks.kafka_reference --client-check  # also run tests/java/ClientCheck per codec

Only one JVM broker at a time on a 2-core machine: callers should not start several.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

from devkit.maven import KafkaUnavailable, cache_root, maven_libs
from devkit.procs import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_POM = REPO_ROOT / "benchmarks" / "kafka" / "pom.xml"
DEFAULT_HEAP = "1g"


def kafka_version(pom: Path = KAFKA_POM) -> str:
    """The Kafka version pinned in the pom, so the pom stays the single source of truth."""
    m = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if not m:
        raise KafkaUnavailable(f"no <kafka.version> in {pom}")
    return m.group(1).strip()


def kafka_libs(pom: Path = KAFKA_POM) -> Path:
    """Fetch Kafka's runtime jars once into <cache>/kafka-<version>/libs and return that dir."""
    version = kafka_version(pom)
    return maven_libs(
        pom, cache_root() / f"kafka-{version}", "kafka_2.13-*.jar", f"Kafka {version}"
    )


def random_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, like Kafka's Uuid."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def api_versions_answers(port: int, timeout: float = 1.0) -> bool:
    """True once the broker answers an ApiVersions v0 request.

    A bare TCP connect is not enough: Kafka binds its listener before the broker is unfenced and
    only then starts serving requests, so we wait for a real response.
    """
    client_id = b"strata-ref-probe"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(body)) + body)
            head = b""
            while len(head) < 10:
                chunk = s.recv(10 - len(head))
                if not chunk:
                    return False
                head += chunk
            _size, corr, error = struct.unpack(">iih", head)
            return corr == 7 and error == 0
    except OSError:
        return False


SERVER_PROPERTIES = """\
# Single-node KRaft: one process is both broker and controller, loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data_dir}
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
"""

LOG4J2_PROPERTIES = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka_request.name = kafka.request.logger
logger.kafka_request.level = warn
"""


class KafkaReference:
    """One Apache Kafka KRaft broker+controller on 127.0.0.1, as a managed subprocess.

    log_dir holds server.properties, the formatted data dir and the broker's logs; when it is
    not given a temp dir is used and removed on stop(). Use as a context manager, or call
    start()/stop(); an atexit hook stops it too, so a crashed caller leaves no JVM behind.
    """

    def __init__(
        self,
        port: int | None = None,
        log_dir: Path | str | None = None,
        heap: str = DEFAULT_HEAP,
        extra_properties: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.controller_port = free_port()
        self._own_dir = log_dir is None
        self.log_dir = (
            Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="kafka-ref-"))
        )
        self.heap = heap
        self.extra_properties = dict(extra_properties or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.version = kafka_version()
        self.startup_seconds: float | None = None
        # one id for the life of this object, so a restart on the same log dir finds its own
        # cluster in meta.properties (format --ignore-formatted refuses a different one)
        self.cluster_id = random_cluster_id()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def server_log(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def stdout_log(self) -> Path:
        return self.log_dir / "kafka.out"

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise KafkaUnavailable("cannot run Apache Kafka: `java` is not on PATH")
        return java

    def _jvm_args(self, libs: Path) -> list[str]:
        return [
            self._java(),
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-cp",
            f"{libs}/*",
        ]

    def _write_config(self) -> Path:
        data_dir = self.log_dir / "data"
        props = SERVER_PROPERTIES.format(
            port=self.port, controller_port=self.controller_port, data_dir=data_dir
        )
        props += "".join(f"{k}={v}\n" for k, v in self.extra_properties.items())
        cfg = self.log_dir / "server.properties"
        cfg.write_text(props)
        (self.log_dir / "log4j2.properties").write_text(
            LOG4J2_PROPERTIES.format(log_file=self.server_log)
        )
        return cfg

    def tail(self, chars: int = 6000) -> str:
        """The end of the broker's stdout and server.log, for error messages."""
        parts = []
        for p in (self.stdout_log, self.server_log):
            if p.exists():
                parts.append(f"--- {p.name} ---\n{p.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def start(self, timeout: float = 90.0) -> KafkaReference:
        """Format KRaft storage and start the broker; returns once it answers ApiVersions."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        libs = kafka_libs()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cfg = self._write_config()
        t0 = time.monotonic()
        fmt = subprocess.run(
            [
                *self._jvm_args(libs),
                "kafka.tools.StorageTool",
                "format",
                "-t",
                self.cluster_id,
                "-c",
                str(cfg),
                "--standalone",
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if fmt.returncode != 0:
            raise RuntimeError(
                f"kafka StorageTool format failed (rc={fmt.returncode}):\n{fmt.stdout}{fmt.stderr}"
            )
        with open(self.stdout_log, "ab") as out:
            self.proc = subprocess.Popen(
                [*self._jvm_args(libs), "kafka.Kafka", str(cfg)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"kafka exited with {rc} during startup:\n{self.tail()}")
            if api_versions_answers(self.port):
                self.startup_seconds = time.monotonic() - t0
                return self
            time.sleep(0.2)
        log = self.tail()
        self.stop()
        raise TimeoutError(f"kafka did not answer on {self.bootstrap} within {timeout}s:\n{log}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (controlled shutdown), then SIGKILL if it lingers; always waits for exit."""
        rc = None
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            rc = proc.returncode
        atexit.unregister(self.stop)
        if self._own_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        return rc

    def __enter__(self) -> KafkaReference:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _client_check(kafka: KafkaReference, messages: int, partitions: int) -> bool:
    """Run tests/java/ClientCheck here for every codec: validates the check against real Kafka."""
    from devkit.javaclient import ClientCheckError, run_client_check

    all_ok = True
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        t0 = time.monotonic()
        try:
            res = run_client_check(
                kafka.bootstrap, f"ref-check-{codec}", messages, codec, partitions
            )
            print(
                f"{codec}: ok produced={res['produced']} consumed={res['consumed']} "
                f"produce_ms={res['produce_ms']} consume_ms={res['consume_ms']} "
                f"wall={time.monotonic() - t0:.1f}s",
                flush=True,
            )
        except ClientCheckError as e:
            all_ok = False
            print(f"{codec}: FAILED {e}", flush=True)
    return all_ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--smoke", action="store_true", help="start Kafka, print the bootstrap, stop it"
    )
    ap.add_argument(
        "--client-check", action="store_true", help="also run the Java ClientCheck per codec"
    )
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--port", type=int, default=None)
    args = ap.parse_args(argv)
    if not (args.smoke or args.client_check):
        ap.print_help()
        return 2
    try:
        t0 = time.monotonic()
        libs = kafka_libs()
        print(f"kafka {kafka_version()} jars in {libs} ({time.monotonic() - t0:.1f}s)", flush=True)
        with KafkaReference(port=args.port) as kafka:
            print(f"bootstrap {kafka.bootstrap} (up in {kafka.startup_seconds:.1f}s)", flush=True)
            ok = _client_check(kafka, args.messages, args.partitions) if args.client_check else True
        print("stopped", flush=True)
    except KafkaUnavailable as e:
        print(f"kafka unavailable: {e}", file=sys.stderr)
        return 3
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
