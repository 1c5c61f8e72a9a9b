"""Run the official Kafka Java client's checks in tests/java (ClientCheck, GroupCheck, TxnCheck,
and StreamsEosCheck on Kafka Streams).

Why: the Java client is the reference Kafka client; if it can produce (idempotent, compressed)
and consume through Strata with everything intact, most other clients will too. The jars come
from Maven Central once (tests/java/pom.xml) into <cache>/java-client/libs, where <cache> is
$STRATA_CACHE_DIR or ~/.cache/strata; Kafka Streams (tests/java/streams/pom.xml, with RocksDB)
into <cache>/java-streams/libs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from devkit.maven import cache_root, maven_libs

REPO_ROOT = Path(__file__).resolve().parent.parent
JAVA_DIR = REPO_ROOT / "tests" / "java"
POM = JAVA_DIR / "pom.xml"
SOURCE = JAVA_DIR / "ClientCheck.java"


class ClientCheckError(RuntimeError):
    """ClientCheck failed or mismatched; carries its JSON summary (if any) and stderr."""

    def __init__(
        self, message: str, result: dict[str, Any] | None = None, stderr: str = ""
    ) -> None:
        super().__init__(message)
        self.result = result
        self.stderr = stderr


def java_client_classpath() -> str:
    """Fetch kafka-clients and friends once; return a classpath ('<lib>/*') for `java -cp`."""
    libs = maven_libs(POM, cache_root() / "java-client", "kafka-clients-*.jar", "Kafka Java client")
    return f"{libs}/*"


def run_client_check(
    bootstrap: str,
    topic: str,
    messages: int = 10_000,
    compression: str = "none",
    partitions: int | None = None,
    timeout: float = 180.0,
    client_config: Path | None = None,
) -> dict[str, Any]:
    """Produce then consume `messages` records through `bootstrap`; return ClientCheck's summary.

    The Java side gives up after `timeout` seconds and still reports what it saw; the process
    gets 90 s more (a producer metadata wait can block 60 s) before it is killed.
    Raises ClientCheckError unless everything matched.
    """
    cmd = _java_command(SOURCE) + [
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--messages",
        str(messages),
        "--compression",
        compression,
        "--timeout-ms",
        str(int(timeout * 1000)),
    ]
    if partitions:
        cmd += ["--partitions", str(partitions)]
    if client_config is not None:  # a properties file: security.protocol, sasl.*, ssl.*
        cmd += ["--client-config", str(client_config)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout + 90, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise ClientCheckError(
            f"ClientCheck hung past {timeout + 90:.0f}s; stderr:\n{err[-4000:]}", None, err
        ) from e
    return _summary("ClientCheck", proc.returncode, proc.stdout, proc.stderr)


GROUP_SOURCE = JAVA_DIR / "GroupCheck.java"


def run_group_check(
    bootstrap: str,
    scenario: str,
    *,
    messages: int = 30_000,
    session_timeout_ms: int = 6000,
    timeout: float = 80.0,
    partitions: int = 6,
    group_protocol: str = "classic",
) -> dict[str, Any]:
    """Run one tests/java/GroupCheck.java scenario (failover, cooperative or static), with
    the classic or the consumer (KIP-848) group protocol.

    GroupCheck runs its consumers as threads of one JVM and, for failover, one child JVM that
    it SIGKILLs itself. It runs in its own process group here, and the whole group is killed
    afterwards, so no JVM outlives the call even if GroupCheck hangs (it gets `timeout` seconds
    internally and 60 s more here: stopping its consumers and clients can take that long).
    Raises ClientCheckError unless every check passed.
    """
    cmd = _java_command(GROUP_SOURCE, "-XX:TieredStopAtLevel=1") + [
        "--bootstrap",
        bootstrap,
        "--scenario",
        scenario,
        "--messages",
        str(messages),
        "--session-timeout-ms",
        str(session_timeout_ms),
        "--timeout-ms",
        str(int(timeout * 1000)),
        "--partitions",
        str(partitions),
        "--group-protocol",
        group_protocol,
    ]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        try:
            out, err = proc.communicate(timeout=timeout + 60)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            out, err = proc.communicate()
            raise ClientCheckError(
                f"GroupCheck {scenario} hung past {timeout + 60:.0f}s; stderr:\n{err[-4000:]}",
                None,
                err,
            ) from None
    finally:
        _kill_group(proc.pid)  # the failover scenario's child JVM, should it have survived
    return _summary(f"GroupCheck {scenario}", proc.returncode, out, err)


def _java_command(source: Path, *jvm_flags: str, classpath: str | None = None) -> list[str]:
    """`java` running a single-file check program against the cached client jars."""
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("`java` is not on PATH")
    cp = classpath or java_client_classpath()
    return [java, "-Xmx512m", "-XX:+UseSerialGC", *jvm_flags, "-cp", cp, str(source)]


def _summary(name: str, returncode: int, out: str, err: str) -> dict[str, Any]:
    """The JSON summary a check prints last; ClientCheckError unless it passed. A state
    listener's thread may still print a line after the summary (Streams: NOT_RUNNING), so
    the summary is the last line that is a JSON object."""
    result: dict[str, Any] | None = None
    for line in reversed(out.splitlines()):
        if line.lstrip().startswith("{"):
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                result = None
            break
    if returncode != 0 or result is None or not result.get("ok"):
        summary = json.dumps(result) if result is not None else out[-2000:]
        raise ClientCheckError(
            f"{name} failed (rc={returncode}): {summary}\nstderr:\n{err[-4000:]}", result, err
        )
    return result


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


TXN_SOURCE = JAVA_DIR / "TxnCheck.java"
STREAMS_SOURCE = JAVA_DIR / "StreamsEosCheck.java"
STREAMS_POM = JAVA_DIR / "streams" / "pom.xml"


def streams_classpath() -> str:
    """Fetch kafka-streams (with RocksDB) once, apart from the plain client jars."""
    libs = maven_libs(
        STREAMS_POM, cache_root() / "java-streams", "kafka-streams-*.jar", "Kafka Streams"
    )
    return f"{libs}/*"


def run_txn_check(bootstrap: str, *args: str, timeout: float = 120.0) -> dict[str, Any]:
    """Run tests/java/TxnCheck.java to completion (`args`: its --mode and options)."""
    app = JavaApp(
        TXN_SOURCE, "--bootstrap", bootstrap, *args, "--timeout-ms", str(int(timeout * 1000))
    )
    return app.result(timeout + 60)


class JavaApp:
    """A Java check program running in its own process group, its stdout read as it goes.

    Why: the exactly-once tests kill the broker or the application itself mid-stream, so they
    need the program running in the background, its progress lines ("committed N") as it
    prints them, and a SIGKILL of its whole process group (the JVM and anything it started).
    """

    def __init__(self, source: Path, *args: str, classpath: str | None = None) -> None:
        cmd = _java_command(source, "-XX:TieredStopAtLevel=1", classpath=classpath) + list(args)
        self.name = source.stem
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for t in self._readers:
            t.start()

    @staticmethod
    def _pump(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self._err)

    def progress(self) -> int:
        """The last count the program reported with a 'committed N' line (0 before any)."""
        for line in reversed(self.lines):
            if line.startswith("committed "):
                return int(line.split()[1])
        return 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crash would."""
        _kill_group(self.proc.pid)
        self.proc.wait(10)

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait for the program to exit; its JSON summary, or ClientCheckError."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ClientCheckError(
                f"{self.name} hung past {timeout:.0f}s; stderr:\n{self.stderr[-4000:]}",
                None,
                self.stderr,
            ) from None
        finally:
            _kill_group(self.proc.pid)
        for t in self._readers:
            t.join(5)
        return _summary(self.name, self.proc.returncode, "\n".join(self.lines), self.stderr)
