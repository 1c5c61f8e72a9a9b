"""The systems under test, behind one small interface, so a new one is one class and one entry.

Each system is started by the harness in its own directory under the run's work dir, on free
loopback ports, and stopped by it (also on errors and Ctrl-C). `restart()` keeps the data, for
the cold catch-up read. `SYSTEMS` maps the names `--systems` accepts to factories.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import proc_memory
from benchmarks.kafka_reference import (
    KafkaReference,
    api_versions_answers,
    kafka_libs,
)
from benchmarks.objectstore import StoreLocation, delete_prefix
from devkit.broker import BrokerProcess, scrape
from devkit.maven import KafkaUnavailable


class Unavailable(RuntimeError):
    """This system cannot run here; the message says why, and the harness goes on without it."""


class System:
    name = "?"
    description = "?"
    is_strata = False

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir / self.name
        self.startup_seconds: list[float] = []
        self.peak_rss = 0

    def prepare(self) -> None:
        """Check or fetch what the system needs; raise Unavailable if it cannot run."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        self._note_peak()
        self.stop_broker()
        self.start()

    def stop_broker(self) -> None:
        """Stop the broker but not what it depends on (an object store server)."""
        self.stop()

    def _note_peak(self) -> None:
        """Remember the broker's peak RSS before it stops, so the run's peak survives restarts."""
        with contextlib.suppress(Exception):
            if self.alive():
                self.peak_rss = max(self.peak_rss, proc_memory(self.pid).get("VmHWM", 0))

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
        """VmRSS and VmHWM (the peak over every process of this system's run so far)."""
        mem = proc_memory(self.pid) if self.alive() else {}
        return {**mem, "VmHWM": max(mem.get("VmHWM", 0), self.peak_rss)}

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
    """Strata with its embedded default: the local WAL, fdatasync before every ack, the log
    uploaded to a local-directory object store (DATA_DIR/objects).

    /metrics is served on a free loopback port (`scrape()`), for the object-store counters.
    `variant()` makes a second broker of the same kind with its own data dir and its own
    object store, for the object-store measurements that need other settings.
    """

    name = "strata"
    description = (
        "Strata, embedded default (local WAL, group commit, fdatasync before acks; the log "
        "uploaded to a local-directory object store)"
    )
    is_strata = True
    # Kafka's reference config sets group.initial.rebalance.delay.ms=0; the same here, so a
    # group's first join is compared like for like.
    args = ("--group-initial-rebalance-delay-ms", "0", "--log-level", "WARNING")

    def __init__(self, workdir: Path, extra_args: Sequence[str] = (), tag: str = "") -> None:
        super().__init__(workdir)
        self.root = workdir
        self.tag = tag
        if tag:
            self.workdir = workdir / f"{self.name}-{tag}"
        self.extra_args = list(extra_args)
        self.broker = BrokerProcess(
            self.workdir / "data",
            log_path=self.workdir / "broker.log",
            metrics=True,
            own_session=True,
            port_attempts=3,
        )

    def store_args(self) -> list[str]:
        """How the broker is pointed at its object store (the default: none needed)."""
        return []

    def start(self) -> None:
        t0 = time.monotonic()
        self.broker.extra_args = [*self.args, *self.store_args(), *self.extra_args]
        self.broker.start(timeout=120)
        self._wait_ready(self.broker.port, 120)
        self.startup_seconds.append(time.monotonic() - t0)

    def stop(self) -> None:
        self.stop_broker()

    def stop_broker(self) -> None:
        self._note_peak()
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

    @property
    def store(self) -> StoreLocation | None:
        """Where this broker's objects are, unless --strata-arg moved them somewhere unknown."""
        url = _arg_value([*self.store_args(), *self.extra_args], "--object-store")
        if url is None:
            return StoreLocation("file", path=self.data_dir / "objects")
        if url.startswith("file://"):
            return StoreLocation("file", path=Path(url[len("file://") :]))
        if "://" not in url:
            return StoreLocation("file", path=Path(url))
        return None

    def scrape(self) -> dict[str, float]:
        """The broker's /metrics, parsed."""
        return scrape(self.broker.metrics_url)

    def variant(self, tag: str, extra_args: Sequence[str]) -> StrataSystem:
        """Another broker like this one, with `extra_args` added, its own data dir and store."""
        return type(self)(self.root, [*self.extra_args, *extra_args], tag=tag)

    def discard(self) -> None:
        """Stop a variant and delete its data (its objects too)."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def version(self) -> str:
        from importlib.metadata import version

        try:
            return version("strata")
        except Exception:
            return "?"

    def config(self) -> dict[str, Any]:
        store = self.store
        return {
            "args": [*self.args, *self.store_args(), *self.extra_args],
            "extra_args": self.extra_args,
            "object_store": store.describe() if store else "set by --strata-arg",
        }

    def log_tail(self) -> str:
        return self.broker.log_tail()

    def logs(self) -> list[Path]:
        return [self.broker.log_path]


def _arg_value(args: Sequence[str], flag: str) -> str | None:
    """The last value given for `flag` (as `--flag value` or `--flag=value`), if any."""
    value = None
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    return value


class StrataS3System(StrataSystem):
    """Strata with its log in S3: a moto server on loopback that this system starts and stops
    (path-style requests, test credentials). The WAL stays local as the write buffer.

    The moto server outlives broker restarts (it holds the data); variants share it, each
    under its own prefix. moto keeps everything in one Python process and answers a ranged
    GET by reading the whole object, so it is a slow S3: the catch-up figure is therefore
    given as a ratio to reading the same objects from the same server.
    """

    name = "strata-s3"
    description = "Strata, log in S3 (moto server on loopback; local WAL, fdatasync before acks)"
    bucket = "strata-bench"

    def __init__(
        self,
        workdir: Path,
        extra_args: Sequence[str] = (),
        tag: str = "",
        moto: Any = None,
    ) -> None:
        super().__init__(workdir, extra_args, tag)
        self.moto = moto
        self.owns_moto = moto is None
        self.prefix = f"strata-{tag}" if tag else "strata"

    def prepare(self) -> None:
        try:
            import aiobotocore  # noqa: F401  (the broker's S3 client)
            import moto  # noqa: F401

            from devkit.moto import MotoServer  # noqa: F401
        except ImportError as e:
            raise Unavailable(f"strata-s3 needs moto[server] and aiobotocore: {e}") from e

    def new_server(self) -> Any:
        """The S3 server this system starts (and owns) when none was handed to it."""
        from devkit.moto import MotoServer

        return MotoServer().start()

    def start(self) -> None:
        if self.moto is None or self.moto.proc is None:
            self.moto = self.new_server()
            self.moto.create_bucket(self.bucket)
        env = {**self.moto.env(), "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1"}
        self.broker.env = env
        super().start()

    def store_args(self) -> list[str]:
        endpoint = self.moto.endpoint if self.moto is not None else ""
        return [
            "--object-store",
            f"s3://{self.bucket}/{self.prefix}",
            "--s3-endpoint",
            endpoint,
        ]

    def stop(self) -> None:
        self.stop_broker()
        if self.owns_moto and self.moto is not None:
            self.moto.stop()

    @property
    def store(self) -> StoreLocation | None:
        if self.moto is None:
            return None
        return StoreLocation(
            "s3",
            bucket=self.bucket,
            prefix=self.prefix,
            endpoint=self.moto.endpoint,
            env=self.moto.env(),
        )

    def variant(self, tag: str, extra_args: Sequence[str]) -> StrataSystem:
        return type(self)(self.root, [*self.extra_args, *extra_args], tag=tag, moto=self.moto)

    def discard(self) -> None:
        super().discard()
        store = self.store
        if store is not None and self.moto is not None and self.moto.proc is not None:
            delete_prefix(store)

    def logs(self) -> list[Path]:
        return [self.broker.log_path]


class StrataSeaweedSystem(StrataS3System):
    """Strata with its log in SeaweedFS, a real S3 server (Go) on loopback, built once into
    ~/.cache/strata/bin by devkit.seaweedfs: S3 figures that moto's Python server, which
    reads a whole object for every ranged GET, does not cap."""

    name = "strata-seaweedfs"
    description = (
        "Strata, log in S3 (SeaweedFS `weed server` on loopback; local WAL, fdatasync before acks)"
    )

    def prepare(self) -> None:
        super().prepare()
        from devkit.seaweedfs import WeedUnavailable, weed_binary

        try:
            weed_binary()
        except WeedUnavailable as e:
            raise Unavailable(f"strata-seaweedfs: SeaweedFS could not be built: {e}") from e

    def new_server(self) -> Any:
        from devkit.seaweedfs import WeedServer

        return WeedServer(self.root / f"{self.name}-weed").start()

    def logs(self) -> list[Path]:
        logs = [self.broker.log_path]
        if self.moto is not None:
            logs.append(self.moto.data_dir / "weed.log")
        return logs


class TansuSystem(System):
    """Tansu (Rust), a Kafka-compatible broker whose log is in pluggable storage: the
    shared-storage peer. `tansu` keeps it in memory (its fastest engine, no durability),
    `tansu-s3` in S3 on a SeaweedFS server on loopback that this system starts."""

    name = "tansu"
    description = "Tansu 0.6, memory storage engine (no durability), single node"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.binary: Path | None = None
        self._log: Any = None

    def prepare(self) -> None:
        from devkit.tansu import TansuUnavailable, tansu_binary

        try:
            self.binary = tansu_binary()
        except TansuUnavailable as e:
            raise Unavailable(f"tansu could not be built: {e}") from e
        self.workdir.mkdir(parents=True, exist_ok=True)

    def storage(self) -> tuple[str, dict[str, str]]:
        """The storage engine URL and the environment it needs."""
        return "memory://tansu/", {}

    def start(self) -> None:
        from devkit.procs import free_port

        assert self.binary is not None
        t0 = time.monotonic()
        url, env = self.storage()
        self.port = free_port()
        listener = f"tcp://127.0.0.1:{self.port}"
        self._log = open(self.workdir / "tansu.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                str(self.binary),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                url,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "warn", **env},
            start_new_session=True,
        )
        self._wait_ready(self.port, 60)
        self.startup_seconds.append(time.monotonic() - t0)

    def stop(self) -> None:
        self._note_peak()
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            proc.wait()
        if self._log is not None:
            self._log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def data_dir(self) -> Path:
        return self.workdir

    def version(self) -> str:
        from devkit.tansu import TANSU_VERSION

        return TANSU_VERSION

    def config(self) -> dict[str, Any]:
        return {"storage_engine": self.storage()[0]}

    def log_tail(self) -> str:
        path = self.workdir / "tansu.log"
        return path.read_text(errors="replace")[-3000:] if path.is_file() else ""

    def logs(self) -> list[Path]:
        return [self.workdir / "tansu.log"]


class TansuS3System(TansuSystem):
    """Tansu with its log in S3 (SeaweedFS on loopback, kept across broker restarts)."""

    name = "tansu-s3"
    description = "Tansu 0.6, S3 storage engine (SeaweedFS on loopback), single node"
    bucket = "tansu-bench"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.s3: Any = None

    def prepare(self) -> None:
        super().prepare()
        from devkit.seaweedfs import WeedUnavailable, weed_binary

        try:
            weed_binary()
        except WeedUnavailable as e:
            raise Unavailable(f"tansu-s3: SeaweedFS could not be built: {e}") from e

    def storage(self) -> tuple[str, dict[str, str]]:
        if self.s3 is None or self.s3.proc is None:
            from devkit.seaweedfs import WeedServer

            self.s3 = WeedServer(self.workdir / "weed").start()
            self.s3.create_bucket(self.bucket)
        env = {**self.s3.env(), "AWS_ENDPOINT": self.s3.endpoint, "AWS_ALLOW_HTTP": "true"}
        return f"s3://{self.bucket}/", env

    def stop_broker(self) -> None:
        super().stop()

    def stop(self) -> None:
        super().stop()
        if self.s3 is not None:
            self.s3.stop()

    def config(self) -> dict[str, Any]:
        return {"storage_engine": f"s3://{self.bucket}/"}


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
    "strata-seaweedfs": StrataSeaweedSystem,
    "kafka": KafkaSystem,
    "kafka-fsync": KafkaFsyncSystem,
    "tansu": TansuSystem,
    "tansu-s3": TansuS3System,
}
DEFAULT_SYSTEMS = ("strata", "strata-s3", "kafka")
REFERENCE = "kafka"  # Strata's figures are given as ratios to this system's
