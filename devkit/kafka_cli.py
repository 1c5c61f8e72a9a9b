"""Run Apache Kafka's own command-line tools (the classes behind bin/kafka-*.sh) against Strata.

Why: operators reach for kafka-topics, kafka-console-producer, kafka-consumer-groups,
kafka-configs and kafka-get-offsets first; each exercises the Admin client and the consumer in
its own way, so these are a compatibility check of their own.

The jars come from Maven Central once, into <cache>/kafka-cli-<version>/libs (<cache> is
$STRATA_CACHE_DIR or ~/.cache/strata), through the same locked, digest-stamped fetch as the
benchmark's Kafka (devkit.maven.maven_libs). kafka-tools 4.4.0 is not on Maven
Central, so the tools are 4.3.1 (as in benchmarks/kafka/tools/pom.xml). In 4.3.1 kafka-configs is
still the Scala kafka.admin.ConfigCommand of the core jar (kafka_2.13), so that jar comes too.
The pom lives here rather than in a file of its own and is written beside the jars it fetches.

Logging: the tools log through slf4j into log4j2, WARN and up to stderr. Set
STRATA_KAFKA_CLI_DEBUG=1 (or pass debug=True) to log the Kafka client at DEBUG, which names
every request it sends and the error each response carries.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from devkit.maven import KafkaUnavailable, cache_root, maven_libs

KAFKA_CLI_VERSION = "4.3.1"

TOPIC_COMMAND = "org.apache.kafka.tools.TopicCommand"
CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
CONSUMER_GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
SHARE_GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ShareGroupCommand"
GET_OFFSET_SHELL = "org.apache.kafka.tools.GetOffsetShell"
TRANSACTIONS_COMMAND = "org.apache.kafka.tools.TransactionsCommand"
ACL_COMMAND = "org.apache.kafka.tools.AclCommand"
# kafka-configs: moved from core (Scala) to the tools module in later releases; config_command()
# picks whichever the fetched jars hold.
CONFIG_COMMAND_CANDIDATES = ("org.apache.kafka.tools.ConfigCommand", "kafka.admin.ConfigCommand")

# `./run kafka-cli TOOL ...` (python -m devkit.kafka_cli): the bin/TOOL.sh names, by class.
TOOLS = {
    "kafka-topics": TOPIC_COMMAND,
    "kafka-console-producer": CONSOLE_PRODUCER,
    "kafka-console-consumer": CONSOLE_CONSUMER,
    "kafka-consumer-groups": CONSUMER_GROUP_COMMAND,
    "kafka-share-groups": SHARE_GROUP_COMMAND,
    "kafka-get-offsets": GET_OFFSET_SHELL,
    "kafka-transactions": TRANSACTIONS_COMMAND,
    "kafka-configs": "",  # whichever ConfigCommand the jars hold
    "kafka-leader-election": "org.apache.kafka.tools.LeaderElectionCommand",
    "kafka-metadata-quorum": "org.apache.kafka.tools.MetadataQuorumCommand",
    "kafka-reassign-partitions": "org.apache.kafka.tools.reassign.ReassignPartitionsCommand",
    "kafka-log-dirs": "org.apache.kafka.tools.LogDirsCommand",
    "kafka-delete-records": "org.apache.kafka.tools.DeleteRecordsCommand",
    "kafka-broker-api-versions": "org.apache.kafka.tools.BrokerApiVersionsCommand",
    "kafka-cluster": "org.apache.kafka.tools.ClusterTool",
    "kafka-acls": ACL_COMMAND,
}

# Small, quick-starting JVMs: every tool run is a short-lived client.
JVM_OPTS = [
    "-Xms64m",
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-Djava.awt.headless=true",
]

POM = f"""\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by devkit/kafka_cli.py: Apache Kafka's CLI tools with their runtime dependencies.
     Nothing is built from this pom. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.strata.tests</groupId>
  <artifactId>kafka-cli</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>{KAFKA_CLI_VERSION}</version>
      <exclusions>
        <!-- Only for Connect's plugin-path tool; pulls in Jetty and Jersey. -->
        <exclusion>
          <groupId>org.apache.kafka</groupId>
          <artifactId>connect-runtime</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
    <!-- kafka.admin.ConfigCommand (kafka-configs) is still in the core jar in this version. -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_CLI_VERSION}</version>
    </dependency>
    <!-- slf4j 1.7 to log4j2, so that a debug run can show the client's requests. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>2.25.4</version>
    </dependency>
  </dependencies>
</project>
"""

LOG4J2 = """\
status = error
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d{{HH:mm:ss.SSS}}] %p %m (%c{{1}})%n
rootLogger.level = {root}
rootLogger.appenderRef.err.ref = err
logger.clients.name = org.apache.kafka.clients
logger.clients.level = {clients}
"""


def home() -> Path:
    return cache_root() / f"kafka-cli-{KAFKA_CLI_VERSION}"


def _write_if_changed(path: Path, text: str) -> None:
    """Atomically (re)write a small file, so concurrent set-ups never read half of one."""
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def libs() -> Path:
    """Fetch the CLI jars once (mvn, Maven Central) and return their dir.

    Raises KafkaUnavailable when mvn is missing or cannot resolve them.
    """
    h = home()
    pom = h / "pom.xml"
    _write_if_changed(pom, POM)
    return maven_libs(pom, h, "kafka-tools-*.jar", f"Kafka CLI tools {KAFKA_CLI_VERSION}")


def log_config(debug: bool) -> Path:
    name = "log4j2-debug.properties" if debug else "log4j2.properties"
    path = home() / name
    root, clients = ("INFO", "DEBUG") if debug else ("WARN", "WARN")
    _write_if_changed(path, LOG4J2.format(root=root, clients=clients))
    return path


def config_command(lib_dir: Path) -> str:
    """The kafka-configs main class present in the fetched jars."""
    wanted = {c.replace(".", "/") + ".class": c for c in CONFIG_COMMAND_CANDIDATES}
    for jar in sorted(lib_dir.glob("kafka*.jar")):
        with contextlib.suppress(zipfile.BadZipFile), zipfile.ZipFile(jar) as z:
            names = set(z.namelist())
            for entry, cls in wanted.items():
                if entry in names:
                    return cls
    raise KafkaUnavailable(
        f"no ConfigCommand ({', '.join(CONFIG_COMMAND_CANDIDATES)}) in {lib_dir}"
    )


@dataclass
class ToolResult:
    main: str
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"{self.main.rsplit('.', 1)[1]} {' '.join(self.args)}\n  rc={self.returncode}\n"
            f"  stdout:\n{_indent(self.stdout[-4000:])}\n  stderr:\n{_indent(self.stderr[-6000:])}"
        )


def _indent(text: str) -> str:
    return "\n".join("    " + ln for ln in text.splitlines()) or "    (empty)"


class KafkaCli:
    """Runs one CLI class per call, in its own JVM, bounded by a timeout."""

    def __init__(self, debug: bool | None = None) -> None:
        java = shutil.which("java")
        if java is None:
            raise KafkaUnavailable("`java` is not on PATH")
        self.java = java
        self.lib_dir = libs()
        self.classpath = f"{self.lib_dir}/*"
        self.config_command = config_command(self.lib_dir)
        if debug is None:
            debug = os.environ.get("STRATA_KAFKA_CLI_DEBUG", "") not in ("", "0")
        self.debug = debug

    def run(
        self,
        main: str,
        *args: str,
        input: str | None = None,
        timeout: float = 60.0,
        debug: bool | None = None,
    ) -> ToolResult:
        log_cfg = log_config(self.debug if debug is None else debug)
        cmd = [
            self.java,
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={log_cfg}",
            "-cp",
            self.classpath,
            main,
            *args,
        ]
        # Own session, so a hung tool (and nothing else) can be killed with everything it started.
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, 9)
            out, err = proc.communicate()
            result = ToolResult(main, list(args), -9, out, err)
            raise AssertionError(
                f"Kafka CLI tool hung past {timeout:.0f}s and was killed:\n{result.describe()}"
            ) from None
        return ToolResult(main, list(args), proc.returncode, out, err)


USAGE = """usage: ./run kafka-cli TOOL [ARGS...]   (python -m devkit.kafka_cli)

Runs one of Apache Kafka {version}'s command-line tools, the class behind bin/TOOL.sh, with
the jars fetched once from Maven Central (mvn and java needed). TOOL is one of:
  {tools}
e.g. ./run kafka-cli kafka-topics --bootstrap-server 127.0.0.1:9092 --list
"""


def main(argv: list[str] | None = None) -> int:
    """Replace this process with the tool's JVM: stdin, stdout and the exit code are its own."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    tool = args[0].removesuffix(".sh") if args else ""
    if tool not in TOOLS:
        print(USAGE.format(version=KAFKA_CLI_VERSION, tools="\n  ".join(TOOLS)), file=sys.stderr)
        return 0 if tool in ("-h", "--help") else 2
    try:
        cli = KafkaCli()
    except KafkaUnavailable as e:
        print(f"kafka-cli: {e}", file=sys.stderr)
        return 3
    main_class = TOOLS[tool] or cli.config_command
    jvm = [*JVM_OPTS, f"-Dlog4j2.configurationFile={log_config(cli.debug)}"]
    os.execv(cli.java, [cli.java, *jvm, "-cp", cli.classpath, main_class, *args[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
