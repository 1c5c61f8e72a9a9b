"""A Kafka Connect distributed worker (Apache Kafka's own, from Maven Central) against Strata.

Why: Connect keeps all its state in Kafka (connector configs, source offsets and statuses in
three compacted topics, sink offsets in a consumer group), so a worker that survives its own
and the broker's restarts shows those topics work as on Kafka. The jars (connect-runtime,
connect-file, connect-json; tests/java/connect/pom.xml) are fetched once into
<cache>/java-connect/libs; the worker is `ConnectDistributed` with a properties file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from devkit.maven import cache_root, maven_libs
from devkit.procs import NO_PROXY, ServerProcess, free_port, wait_for

REPO_ROOT = Path(__file__).resolve().parent.parent
POM = REPO_ROOT / "tests" / "java" / "connect" / "pom.xml"
MAIN = "org.apache.kafka.connect.cli.ConnectDistributed"


def connect_classpath() -> str:
    libs = maven_libs(POM, cache_root() / "java-connect", "connect-runtime-*.jar", "Kafka Connect")
    return f"{libs}/*"


class ConnectWorker(ServerProcess):
    """One distributed worker; its REST API on a loopback port. Restartable: stop() then
    start() runs a new JVM with the same worker properties (same group, same topics)."""

    def __init__(self, bootstrap: str, work_dir: Path, group: str = "strata-connect") -> None:
        super().__init__()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        work_dir.mkdir(parents=True, exist_ok=True)
        self.properties = work_dir / "worker.properties"
        settings = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "listeners": self.url,
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.storage.StringConverter",
            "config.storage.topic": f"{group}-configs",
            "offset.storage.topic": f"{group}-offsets",
            "status.storage.topic": f"{group}-status",
            "config.storage.replication.factor": "1",
            "offset.storage.replication.factor": "1",
            "status.storage.replication.factor": "1",
            "offset.storage.partitions": "5",
            "status.storage.partitions": "2",
            "offset.flush.interval.ms": "1000",
            "plugin.discovery": "only_scan",
        }
        self.properties.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))

    def start(self, timeout: float = 90.0) -> ConnectWorker:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("`java` is not on PATH")
        argv = [
            java,
            "-Xmx512m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
            "-cp",
            connect_classpath(),
            MAIN,
            str(self.properties),
        ]
        self._spawn(argv)
        if not wait_for(self._ready, timeout, interval=0.5):
            log = self.log()
            self.stop()
            raise RuntimeError(f"Connect worker not ready in {timeout:.0f}s:\n{log[-6000:]}")
        return self

    def _ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"Connect worker exited:\n{self.log()[-6000:]}")
        try:
            # answers 200 only once the worker has joined its group and read the configs
            self.request("GET", "/connectors")
            return True
        except (OSError, urllib.error.HTTPError):
            return False

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with NO_PROXY.open(req, timeout=30) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def stop(self, timeout: float = 60.0) -> None:  # type: ignore[override]
        """SIGTERM and wait: the worker commits offsets and leaves its group on the way out."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        super().stop()
