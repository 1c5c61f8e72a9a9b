"""The chaos run: etcd, moto's S3 server and three brokers on loopback, producers and
consumers recording their history, the seeded faults injected one after another, and the
final read of every partition once everything is healed.

Everything the checker needs is recorded against one clock (`time.monotonic()` since the
start): each acknowledgement (value, producer, send order, partition, offset), each read
of the consumer group, the group's committed offsets sampled every second from the
brokers, the faults' start and heal times, and the final log. Brokers reach the object
store and etcd through fault proxies (`proxy.py`); each broker's data directory is a small
tmpfs (when run as root) so its disk can be filled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.chaos.checker import Ack, CommitSample, History, Read
from benchmarks.chaos.proxy import FaultProxy
from benchmarks.chaos.schedule import LEASE_KINDS, Fault
from benchmarks.common import MIB, proc_memory
from devkit.broker import BrokerProcess

TOPIC = "chaos"
IDLE_TOPIC = "chaos-idle"  # never written until the end: empty partitions through the faults
GROUP = "chaos-group"
BUCKET = "strata-chaos"


@dataclass
class Options:
    durability: str = "object"
    brokers: int = 3
    partitions: int = 6
    producers: int = 2
    consumers: int = 2
    rate: float = 100.0  # messages/s per producer
    value_bytes: int = 100
    lease_ms: int = 3000
    upload_interval_ms: int = 1000
    backlog_bytes: int = 32 * MIB
    tail_cache_bytes: int = 32 * MIB
    disk_mib: int = 96
    settle_s: float = 8.0
    recovery_timeout_s: float = 45.0


@dataclass
class FaultEvent:
    fault: Fault
    start: float = 0.0
    healed: float = 0.0
    recovered_s: float | None = None  # until every partition was acknowledged again
    repair: str = ""  # what the harness did when it did not recover by itself
    note: str = ""


@dataclass
class Recorder:
    """What the load threads append to, against one clock. No lock: librdkafka runs
    delivery callbacks wherever it likes (a destroyed instance's on whatever thread drops
    it, a fatal error's inside produce()), and a lock taken there hung the run; each
    list or dict here is only appended to or assigned in single operations, which the
    GIL keeps whole, and read as a copy."""

    t0: float = field(default_factory=time.monotonic)
    acks: list[Ack] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)
    commits: list[CommitSample] = field(default_factory=list)
    error_log: list[str] = field(default_factory=list)
    label: str = "steady"  # the fault holding now, for the RSS samples
    rss_peak: dict[str, float] = field(default_factory=dict)  # label -> MiB
    rss_peak_broker: dict[int, float] = field(default_factory=dict)
    last_ack: dict[int, float] = field(default_factory=dict)  # partition -> newest ack time
    stuck: dict[int, float] = field(default_factory=dict)  # partitions given up on -> since

    def now(self) -> float:
        return time.monotonic() - self.t0

    def error(self, what: str) -> None:
        self.error_log.append(what)


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class ProducerLoop(threading.Thread):
    """An idempotent producer (acks=all) sending unique values round-robin over the
    partitions at `rate`; a fatal error (librdkafka gives up on the idempotent state)
    starts a new instance, which is another producer for the ordering check."""

    def __init__(self, name: str, bootstrap: str, opts: Options, rec: Recorder) -> None:
        super().__init__(name=name, daemon=True)
        self.bootstrap, self.opts, self.rec = bootstrap, opts, rec
        self.stop = threading.Event()
        self.sent = 0

    def _make(self, fatal: threading.Event) -> Any:
        from confluent_kafka import Producer

        def on_error(err: Any) -> None:
            self.rec.error(f"producer:{err.name()}")
            if err.fatal():
                fatal.set()

        return Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "log_level": 2,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 120_000,
                "request.timeout.ms": 15_000,
                "error_cb": on_error,
            }
        )

    def run(self) -> None:
        from confluent_kafka import KafkaException

        gen = 0
        fatal = threading.Event()
        producer = self._make(fatal)
        seq = 0
        interval = 1.0 / self.opts.rate
        next_at = time.monotonic()
        while not self.stop.is_set():
            if fatal.is_set():
                log(f"{self.name}: fatal producer error, a new instance")
                with contextlib.suppress(Exception):
                    producer.flush(5)
                gen += 1
                fatal = threading.Event()
                producer = self._make(fatal)
            pname = f"{self.name}.{gen}"
            value = f"{pname}-{seq}"
            payload = value.encode().ljust(self.opts.value_bytes, b" ")
            try:
                producer.produce(
                    TOPIC,
                    payload,
                    partition=seq % self.opts.partitions,
                    on_delivery=self._delivered(pname, seq, value),
                )
                seq += 1
                self.sent += 1
            except BufferError:
                self.rec.error("producer:queue_full")
            except KafkaException as e:  # the instance is unusable: the next one takes over
                self.rec.error(f"produce:{e.args[0].name()}")
                fatal.set()
                continue
            try:
                producer.poll(0)
            except KafkaException as e:  # fatal errors surface here too
                self.rec.error(f"poll:{e.args[0].name()}")
                fatal.set()
            next_at += interval
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                next_at = time.monotonic()
        try:
            left = producer.flush(150)
        except KafkaException:
            left = -1
        if left:
            log(f"{self.name}: {left} messages never answered")

    def _delivered(self, pname: str, seq: int, value: str) -> Any:
        def cb(err: Any, msg: Any) -> None:
            if err is not None:
                self.rec.error(f"delivery:{err.name()}")
                return
            ack = Ack(value, pname, seq, msg.partition(), msg.offset(), self.rec.now())
            self.rec.acks.append(ack)
            self.rec.last_ack[ack.partition] = ack.t

        return cb


class ConsumerLoop(threading.Thread):
    """A member of the group, auto-committing every second, recording every record read."""

    def __init__(self, name: str, bootstrap: str, rec: Recorder) -> None:
        super().__init__(name=name, daemon=True)
        self.bootstrap, self.rec = bootstrap, rec
        self.stop = threading.Event()

    def run(self) -> None:
        from confluent_kafka import Consumer

        c = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "log_level": 2,
                "group.id": GROUP,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
                "auto.commit.interval.ms": 1000,
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1000,
                "error_cb": lambda err: self.rec.error(f"consumer:{err.name()}"),
            }
        )
        c.subscribe([TOPIC])
        try:
            while not self.stop.is_set():
                for msg in c.consume(500, 0.5):
                    if msg.error():
                        self.rec.error(f"consume:{msg.error().name()}")
                        continue
                    r = Read(
                        msg.partition(), msg.offset(), msg.value().decode().rstrip(), self.rec.now()
                    )
                    self.rec.reads.append(r)
        finally:
            with contextlib.suppress(Exception):
                c.close()


class Monitor(threading.Thread):
    """Every second the group's committed offsets as the brokers answer them; every half
    second each broker's RSS (peak per fault kind and per broker)."""

    def __init__(
        self, bootstrap: str, brokers: dict[int, BrokerProcess], opts: Options, rec: Recorder
    ):
        super().__init__(name="monitor", daemon=True)
        self.bootstrap, self.brokers, self.opts, self.rec = bootstrap, brokers, opts, rec
        self.stop = threading.Event()

    def run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "log_level": 2,
                "group.id": GROUP,
                "enable.auto.commit": False,
            }
        )
        tps = [TopicPartition(TOPIC, p) for p in range(self.opts.partitions)]
        tick = 0
        try:
            while not self.stop.wait(0.5):
                self._rss()
                tick += 1
                if tick % 2:
                    continue
                with contextlib.suppress(Exception):
                    t = self.rec.now()
                    got = c.committed(tps, timeout=3)
                    self.rec.commits.extend(
                        [CommitSample(tp.partition, tp.offset, t) for tp in got if tp.error is None]
                    )
        finally:
            with contextlib.suppress(Exception):
                c.close()

    def _rss(self) -> None:
        for i, b in list(self.brokers.items()):
            if not b.alive():
                continue
            try:
                mib = proc_memory(b.pid)["VmRSS"] / MIB
            except (OSError, KeyError, AssertionError):
                continue
            label = self.rec.label  # only this thread writes the peaks
            self.rec.rss_peak[label] = max(self.rec.rss_peak.get(label, 0.0), mib)
            self.rec.rss_peak_broker[i] = max(self.rec.rss_peak_broker.get(i, 0.0), mib)


class Cluster:
    """etcd, moto, their proxies and the brokers; `inject` runs one fault and heals it."""

    def __init__(self, root: Path, opts: Options) -> None:
        self.root, self.opts = root, opts
        self.etcd: Any = None
        self.moto: Any = None
        self.s3_proxy: FaultProxy | None = None
        self.etcd_proxy: FaultProxy | None = None
        self.brokers: dict[int, BrokerProcess] = {}
        self.mounts: list[Path] = []
        self.crashes: list[dict[str, Any]] = []
        self.can_fill_disk = False

    def start(self) -> None:
        from devkit.etcd import EtcdServer
        from devkit.moto import MotoServer

        self.etcd = EtcdServer(self.root / "etcd").start()
        self.moto = MotoServer().start()
        os.environ.update(self.moto.env())
        self.moto.create_bucket(BUCKET)
        self.s3_proxy = FaultProxy(self.moto.port, "s3-proxy").start()
        self.etcd_proxy = FaultProxy(self.etcd.client_port, "etcd-proxy").start()
        for i in range(1, self.opts.brokers + 1):
            self.brokers[i] = self._broker(i)
        for b in self.brokers.values():
            b.start(timeout=60)

    def _broker(self, i: int) -> BrokerProcess:
        data = self.root / f"b{i}"
        data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0 and self.opts.disk_mib:
            r = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={self.opts.disk_mib}m", "tmpfs", str(data)],
                capture_output=True,
            )
            if r.returncode == 0:
                self.mounts.append(data)
                self.can_fill_disk = True
        o = self.opts
        assert self.s3_proxy is not None and self.etcd_proxy is not None
        return BrokerProcess(
            data / "data",
            None,
            "--broker-id",
            str(i),
            "--etcd",
            self.etcd_proxy.url,
            "--object-store",
            f"s3://{BUCKET}/chaos",
            "--s3-endpoint",
            self.s3_proxy.url,
            "--durability",
            o.durability,
            "--lease-ttl-ms",
            str(o.lease_ms),
            "--upload-interval-ms",
            str(o.upload_interval_ms),
            "--max-upload-backlog-bytes",
            str(o.backlog_bytes),
            "--tail-cache-bytes",
            str(o.tail_cache_bytes),
            "--wal-segment-bytes",
            str(4 * MIB),
            "--group-initial-rebalance-delay-ms",
            "0",
            "--offsets-topic-num-partitions",
            "3",
            "--auto-create-topics",
            "false",
            log_path=self.root / f"broker-{i}.log",
            metrics=True,
            env={**self.moto.env(), "NO_PROXY": "127.0.0.1,localhost"},
            own_session=True,
        )

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers.values())

    def check_alive(self, rec: Recorder) -> None:
        """A broker that exited without being told to is a finding: note it, start it again."""
        for i, b in self.brokers.items():
            if b.proc is not None and not b.alive():
                code = b.proc.returncode
                log(f"broker {i} exited by itself with {code}")
                self.crashes.append({"broker": i, "t": rec.now(), "code": code, "log": b.log(3000)})
                self._start(b)

    def _start(self, b: BrokerProcess) -> None:
        for attempt in range(3):
            try:
                b.start(timeout=60)
                return
            except (RuntimeError, TimeoutError) as e:
                log(f"broker start failed (attempt {attempt + 1}): {str(e)[-300:]}")
                time.sleep(2)
        raise RuntimeError("a broker did not start three times in a row")

    def inject(self, f: Fault, rec: Recorder) -> str:
        """Apply `f`, hold it `f.seconds`, heal it; returns a note."""
        assert self.s3_proxy is not None and self.etcd_proxy is not None
        b = self.brokers.get(f.target or 0)
        note = ""
        if f.kind == "kill9":
            assert b is not None
            b.kill()
            time.sleep(f.seconds)
            self._start(b)
        elif f.kind == "sigstop":
            assert b is not None
            os.kill(b.pid, signal.SIGSTOP)
            time.sleep(f.seconds)
            os.kill(b.pid, signal.SIGCONT)
        elif f.kind == "restart":
            assert b is not None
            code = b.stop(timeout=90)
            note = f"exit code {code}"
            time.sleep(f.seconds)
            self._start(b)
        elif f.kind == "etcd_kill":
            self.etcd.kill()
            time.sleep(f.seconds)
            self.etcd.restart()
        elif f.kind == "etcd_cut":
            self.etcd_proxy.set_mode("blackhole")
            time.sleep(f.seconds)
            self.etcd_proxy.set_mode("pass")
        elif f.kind == "s3_slow":
            self.s3_proxy.set_mode("slow", delay=float(f.detail))
            time.sleep(f.seconds)
            self.s3_proxy.set_mode("pass")
        elif f.kind == "s3_error":
            before = self.s3_proxy.requests_faulted
            self.s3_proxy.set_mode("http_error", status=int(f.detail))
            time.sleep(f.seconds)
            self.s3_proxy.set_mode("pass")
            note = f"{self.s3_proxy.requests_faulted - before} requests answered {f.detail}"
        elif f.kind == "s3_down":
            self.s3_proxy.set_mode("blackhole")
            time.sleep(f.seconds)
            self.s3_proxy.set_mode("pass")
        elif f.kind == "disk_full":
            assert b is not None
            if not self.can_fill_disk:
                return "skipped: no tmpfs (not root)"
            note = self._fill(b, f.seconds)
        return note

    def _fill(self, b: BrokerProcess, seconds: float) -> str:
        mount = b.data_dir.parent
        filler = mount / "filler"
        st = os.statvfs(mount)
        free = st.f_bavail * st.f_frsize
        try:
            # ENOSPC once it is full is the point
            with open(filler, "wb") as fh, contextlib.suppress(OSError):
                os.posix_fallocate(fh.fileno(), 0, free)
            st = os.statvfs(mount)
            left = st.f_bavail * st.f_frsize
            time.sleep(seconds)
        finally:
            with contextlib.suppress(FileNotFoundError):
                filler.unlink()
        return f"filled {free // 1024} KiB, {left // 1024} KiB left"

    def repair(self, f: Fault) -> str:
        """After a fault the cluster did not recover from: restart its target broker."""
        b = self.brokers.get(f.target or 0)
        if b is None:
            return ""
        code = b.stop(timeout=90)
        self._start(b)
        return f"repaired: restarted broker {f.target} (exit code {code})"

    def heal(self) -> None:
        assert self.s3_proxy is not None and self.etcd_proxy is not None
        self.s3_proxy.set_mode("pass")
        self.etcd_proxy.set_mode("pass")
        if self.etcd.proc is None:
            self.etcd.restart()
        for b in self.brokers.values():
            if not b.alive():
                self._start(b)

    def close(self) -> None:
        for b in self.brokers.values():
            with contextlib.suppress(Exception):
                if b.alive():
                    os.kill(b.pid, signal.SIGCONT)
                b.stop(timeout=60)
        for p in (self.s3_proxy, self.etcd_proxy):
            if p is not None:
                p.stop()
        if self.etcd is not None:
            self.etcd.close()
        if self.moto is not None:
            self.moto.stop()
        for m in self.mounts:
            subprocess.run(["umount", "-l", str(m)], capture_output=True)


def end_offsets(bootstrap: str, partitions: int) -> list[int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-offsets", "log_level": 2})
    out = []
    try:
        for p in range(partitions):
            try:
                tp = TopicPartition(TOPIC, p)
                out.append(c.get_watermark_offsets(tp, timeout=10, cached=False)[1])
            except Exception:
                out.append(-1)  # unavailable: -1 never equals a real end
        return out
    finally:
        c.close()


def final_read(
    bootstrap: str, partitions: int, timeout: float = 180.0
) -> tuple[dict[int, list[tuple[int, str]]], list[int]]:
    """Every partition from its start to the high watermark, outside any group; and the
    partitions that could not be read to the end (their records count as lost)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    ends = end_offsets(bootstrap, partitions)
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "chaos-final", "enable.auto.commit": False}
    )
    out: dict[int, list[tuple[int, str]]] = {p: [] for p in range(partitions)}
    try:
        c.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(partitions)])
        pending = {p for p in range(partitions) if ends[p] > 0}
        unreadable = {p for p in range(partitions) if ends[p] < 0}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for msg in c.consume(1000, 1.0):
                if msg.error():
                    continue
                p = msg.partition()
                out[p].append((msg.offset(), msg.value().decode().rstrip()))
                if msg.offset() + 1 >= ends[p]:
                    pending.discard(p)
        if pending or unreadable:
            log(f"final read incomplete for partitions {sorted(pending | unreadable)}")
    finally:
        c.close()
    return out, sorted(pending | unreadable)


def wait_stable(bootstrap: str, partitions: int, quiet_s: float, timeout: float) -> list[int]:
    """Until the end offsets stay put for `quiet_s` (wal mode: orphans appended again)."""
    deadline = time.monotonic() + timeout
    last: list[int] = []
    since = time.monotonic()
    while time.monotonic() < deadline:
        try:
            ends = end_offsets(bootstrap, partitions)
        except Exception:
            time.sleep(1)
            continue
        if ends != last:
            last, since = ends, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return ends
        time.sleep(1)
    return last


def write_idle(bootstrap: str, partitions: int, timeout: float = 60.0) -> dict[str, str]:
    """One record to each partition of the idle topic, after the faults: an empty
    partition must be as writable as a busy one. Returns partition -> error, if any."""
    from confluent_kafka import Producer

    errors: dict[str, str] = {str(p): "no answer" for p in range(partitions)}

    def cb(err: Any, msg: Any) -> None:
        if err is None:
            errors.pop(str(msg.partition()), None)
        else:
            errors[str(msg.partition())] = err.name()

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "log_level": 2,
            "enable.idempotence": True,
            "message.timeout.ms": int(timeout * 1000),
        }
    )
    for p in range(partitions):
        producer.produce(IDLE_TOPIC, b"idle", partition=p, on_delivery=cb)
    producer.flush(timeout + 10)
    if errors:
        log(f"idle topic: partitions not writable after the faults: {errors}")
    return errors


def wait_recovered(rec: Recorder, partitions: int, since: float, timeout: float) -> float | None:
    """Seconds from `since` until every partition (but those given up on, `rec.stuck`) had
    an acknowledgement after it; None if some had none within `timeout` (a fault the
    cluster did not recover from)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        times = [rec.last_ack.get(p, -1.0) for p in range(partitions) if p not in rec.stuck]
        if not times:
            return None
        if min(times) > since:
            return round(max(times) - since, 2)
        time.sleep(0.2)
    return None


def wait_group_caught_up(rec: Recorder, ends: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen: dict[int, int] = {}
        for r in list(rec.reads):
            seen[r.partition] = max(seen.get(r.partition, -1), r.offset)
        if all(seen.get(p, -1) + 1 >= end for p, end in enumerate(ends) if end > 0):
            return True
        time.sleep(1)
    return False


def run(root: Path, opts: Options, schedule: list[Fault]) -> tuple[History, dict[str, Any]]:
    """The whole run; returns the history for the checker and the run's own figures."""
    from benchmarks.loadgen import create_topic

    root.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(root, opts)
    rec = Recorder()
    events: list[FaultEvent] = []
    windows: list[tuple[float, float]] = []
    producers: list[ProducerLoop] = []
    consumers: list[ConsumerLoop] = []
    monitor: Monitor | None = None
    figures: dict[str, Any] = {}
    try:
        log("starting etcd, moto, proxies and brokers")
        cluster.start()
        create_topic(cluster.bootstrap, TOPIC, opts.partitions)
        create_topic(cluster.bootstrap, IDLE_TOPIC, opts.partitions)
        rec.t0 = time.monotonic()
        monitor = Monitor(cluster.bootstrap, cluster.brokers, opts, rec)
        producers = [
            ProducerLoop(f"p{i}", cluster.bootstrap, opts, rec) for i in range(opts.producers)
        ]
        consumers = [ConsumerLoop(f"c{i}", cluster.bootstrap, rec) for i in range(opts.consumers)]
        for t in (monitor, *producers, *consumers):
            t.start()
        produce_start = rec.now()
        time.sleep(opts.settle_s)
        lease_s = opts.lease_ms / 1000
        for f in schedule:
            time.sleep(f.gap)
            cluster.check_alive(rec)
            ev = FaultEvent(f, start=rec.now())
            rec.label = f.kind
            log(
                f"fault {f.index + 1}/{len(schedule)}: {f.kind} target={f.target} "
                f"{f.seconds}s {f.detail}"
            )
            try:
                ev.note = cluster.inject(f, rec)
            except Exception as e:  # a fault that could not be healed is a finding too
                ev.note = f"inject failed: {type(e).__name__}: {e}"
                log(ev.note)
                cluster.heal()
            ev.healed = rec.now()
            ev.recovered_s = wait_recovered(
                rec, opts.partitions, ev.healed, opts.recovery_timeout_s
            )
            rec.label = "steady"
            if ev.recovered_s is None:
                log(f"not recovered within {opts.recovery_timeout_s}s after {f.kind}")
                cluster.check_alive(rec)
                ev.repair = cluster.repair(f)
                if ev.repair:
                    t = rec.now()
                    again = wait_recovered(rec, opts.partitions, t, opts.recovery_timeout_s)
                    ev.repair += f"; recovered {again}s after it" if again is not None else "; no"
                    log(ev.repair)
                # partitions still without an ack are given up on: reported, and not
                # waited for after later faults
                for p in range(opts.partitions):
                    if p not in rec.stuck and rec.last_ack.get(p, -1.0) < ev.healed:
                        rec.stuck[p] = round(ev.healed, 2)
                        log(f"partition {p} unavailable since {f.kind} at {ev.start:.1f}s")
            events.append(ev)
            if f.kind in LEASE_KINDS:
                windows.append(
                    (ev.start - opts.upload_interval_ms / 1000 - 2.0, ev.healed + lease_s + 2.0)
                )
        log("faults done: healing, then the last records")
        cluster.heal()
        time.sleep(opts.settle_s)
        cluster.check_alive(rec)
        for p in producers:
            p.stop.set()
        produce_end = rec.now()
        for p in producers:
            p.join(200)
        ends = wait_stable(cluster.bootstrap, opts.partitions, quiet_s=6.0, timeout=120)
        caught_up = wait_group_caught_up(rec, ends, timeout=90)
        for c in consumers:
            c.stop.set()
        for c in consumers:
            c.join(30)
        time.sleep(2)  # the monitor's last committed-offset sample after the final commits
        monitor.stop.set()
        monitor.join(10)
        idle = write_idle(cluster.bootstrap, opts.partitions)
        log("final read")
        final, unread = final_read(cluster.bootstrap, opts.partitions)
        cluster.check_alive(rec)
        figures = {
            "group_caught_up": caught_up,
            "idle_partitions_unwritable": idle,
            "partitions_given_up": {str(p): t for p, t in rec.stuck.items()},
            "final_read_incomplete": unread,
            "end_offsets": ends,
            "sent": sum(p.sent for p in producers),
            "errors": dict(Counter(rec.error_log).most_common()),
            "rss_peak_mib_by_fault": {k: round(v, 1) for k, v in rec.rss_peak.items()},
            "rss_peak_mib_by_broker": {str(k): round(v, 1) for k, v in rec.rss_peak_broker.items()},
            "broker_crashes": cluster.crashes,
            "fault_events": [
                {
                    **e.fault.as_dict(),
                    "start": round(e.start, 2),
                    "healed": round(e.healed, 2),
                    "recovered_s": e.recovered_s,
                    "repair": e.repair,
                    "note": e.note,
                }
                for e in events
            ],
            "disk_full_available": cluster.can_fill_disk,
        }
        history = History(
            durability=opts.durability,
            acks=list(rec.acks),
            reads=list(rec.reads),
            commits=list(rec.commits),
            final=final,
            windows=windows,
            unreadable=unread,
            produce_span=(produce_start, produce_end),
        )
        return history, figures
    finally:
        for t in (*producers, *consumers):
            t.stop.set()
        if monitor is not None:
            monitor.stop.set()
        cluster.close()
        if not os.environ.get("CHAOS_KEEP"):
            for m in cluster.mounts:
                shutil.rmtree(m, ignore_errors=True)
