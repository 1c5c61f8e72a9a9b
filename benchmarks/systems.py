"""The systems under test, behind one small interface, so a new one is one class and one entry.

Each system is started by the harness in its own directory under the run's work dir, on free
loopback ports, and stopped by it (also on errors and Ctrl-C). `restart()` keeps the data, for
the cold catch-up read. `SYSTEMS` maps the names `--systems` accepts to factories.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import BrokerProcess, proc_memory
from benchmarks.kafka_reference import (
    KafkaReference,
    KafkaUnavailable,
    api_versions_answers,
    kafka_libs,
)


class Unavailable(RuntimeError):
    """This system cannot run here; the message says why, and the harness goes on without it."""


class System:
    name = "?"
    description = "?"
    is_strata = False

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir / self.name
        self.startup_seconds: list[float] = []

    def prepare(self) -> None:
        """Check or fetch what the system needs; raise Unavailable if it cannot run."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        self.stop()
        self.start()

    def alive(self) -> bool:
        raise NotImplementedError

    @property
    def bootstrap(self) -> str:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        raise NotImplementedError

    @property
    def data_dir(self) -> Path:
        """Where the broker keeps its log (its page cache is evicted before a cold read)."""
        raise NotImplementedError

    def version(self) -> str:
        return ""

    def config(self) -> dict[str, Any]:
        """What this system was run with, for the report."""
        return {}

    def log_tail(self) -> str:
        return ""

    def logs(self) -> list[Path]:
        """The system's log files (copied to the output dir at the end of its run)."""
        return []

    def save_logs(self, out: Path) -> list[str]:
        saved = []
        for path in self.logs():
            if path.is_file():
                dest = out / f"{self.name}-{path.name}"
                shutil.copyfile(path, dest)
                saved.append(dest.name)
        return saved

    def memory(self) -> dict[str, int]:
        return proc_memory(self.pid)

    def _wait_ready(self, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if api_versions_answers(port):
                return
            if not self.alive():
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} does not answer ApiVersions:\n{self.log_tail()}")


class StrataSystem(System):
    """Strata with its embedded default: the local WAL, fdatasync before every ack."""

    name = "strata"
    description = "Strata, embedded default (local WAL, group commit, fdatasync before acks)"
    is_strata = True
    # Kafka's reference config sets group.initial.rebalance.delay.ms=0; the same here, so a
    # group's first join is compared like for like.
    args = ("--group-initial-rebalance-delay-ms", "0", "--log-level", "WARNING")

    def __init__(self, workdir: Path, extra_args: Sequence[str] = ()) -> None:
        super().__init__(workdir)
        self.extra_args = list(extra_args)
        self.broker = BrokerProcess(
            self.workdir / "data", self.workdir / "broker.log", [*self.args, *self.extra_args]
        )

    def start(self) -> None:
        t0 = time.monotonic()
        self.broker.start(timeout=120)
        self._wait_ready(self.broker.port, 120)
        self.startup_seconds.append(time.monotonic() - t0)

    def stop(self) -> None:
        self.broker.stop()

    def alive(self) -> bool:
        return self.broker.alive()

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def pid(self) -> int:
        return self.broker.pid

    @property
    def data_dir(self) -> Path:
        return self.broker.data_dir

    def version(self) -> str:
        from importlib.metadata import version

        try:
            return version("strata")
        except Exception:
            return "?"

    def config(self) -> dict[str, Any]:
        return {"args": [*self.args, *self.extra_args], "extra_args": self.extra_args}

    def log_tail(self) -> str:
        return self.broker.log_tail()

    def logs(self) -> list[Path]:
        return [self.broker.log_path]


class StrataS3System(System):
    """Strata with the S3 storage backend against moto's server: not built yet."""

    name = "strata-s3"
    description = "Strata with the S3 backend (moto server)"
    is_strata = True

    def prepare(self) -> None:
        raise Unavailable(
            "strata-s3 is not available yet: the S3 storage backend does not exist yet "
            "(s3stream/ is a later issue); add it here when it does"
        )


class KafkaSystem(System):
    """Apache Kafka 4.x from Maven Central, KRaft single node (broker+controller) on loopback.

    Stock settings apart from single-node replication factors: in particular no fsync per
    write (log.flush.interval.messages is unbounded by default), so acks=all with one replica
    means "in the page cache", where Strata's means "fdatasync'd".
    """

    name = "kafka"
    description = "Apache Kafka, KRaft single node, stock flush settings (no fsync per write)"
    extra_properties: dict[str, str] = {}

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.ref: KafkaReference | None = None

    def prepare(self) -> None:
        if shutil.which("java") is None:
            raise Unavailable("Apache Kafka cannot run: `java` is not on PATH")
        try:
            kafka_libs()
        except KafkaUnavailable as e:
            raise Unavailable(f"Apache Kafka could not be obtained from Maven Central: {e}") from e
        self.workdir.mkdir(parents=True, exist_ok=True)
        # log_dir is ours, so KafkaReference.stop() keeps the data for restart()
        self.ref = KafkaReference(log_dir=self.workdir, extra_properties=self.extra_properties)

    def start(self) -> None:
        assert self.ref is not None
        t0 = time.monotonic()
        self.ref.start(timeout=180)
        self.startup_seconds.append(time.monotonic() - t0)

    def stop(self) -> None:
        if self.ref is not None:
            self.ref.stop()

    def alive(self) -> bool:
        return self.ref is not None and self.ref.alive()

    @property
    def bootstrap(self) -> str:
        assert self.ref is not None
        return self.ref.bootstrap

    @property
    def pid(self) -> int:
        assert self.ref is not None and self.ref.proc is not None
        return self.ref.proc.pid

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def version(self) -> str:
        return self.ref.version if self.ref is not None else ""

    def config(self) -> dict[str, Any]:
        java = ""
        try:
            out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
            java = (out.stderr or out.stdout).splitlines()[0]
        except Exception:
            pass
        heap = self.ref.heap if self.ref is not None else ""
        return {"heap": heap, "java": java, "extra_properties": dict(self.extra_properties)}

    def log_tail(self) -> str:
        return self.ref.tail() if self.ref is not None else ""

    def logs(self) -> list[Path]:
        return [self.ref.server_log, self.ref.stdout_log] if self.ref is not None else []


class KafkaFsyncSystem(KafkaSystem):
    """Kafka made to fsync every append (log.flush.interval.messages=1): Strata's durability."""

    name = "kafka-fsync"
    description = "Apache Kafka, KRaft single node, fsync on every append"
    extra_properties = {"log.flush.interval.messages": "1"}


SYSTEMS: dict[str, Callable[[Path], System]] = {
    "strata": StrataSystem,
    "strata-s3": StrataS3System,
    "kafka": KafkaSystem,
    "kafka-fsync": KafkaFsyncSystem,
}
DEFAULT_SYSTEMS = ("strata", "strata-s3", "kafka")
REFERENCE = "kafka"  # Strata's figures are given as ratios to this system's
