"""Bad input at the port: the acceptance fuzz test.

Requirement: a fuzz test (hypothesis) throws truncated frames, random bytes, unknown api
keys and versions, oversized sizes, corrupted batch CRCs and negative lengths at the port.
Each gets the proper error code or a clean close; the broker keeps serving a concurrent
well-behaved client, and nothing acknowledged is lost.

What "proper" means follows Apache Kafka:

* a size prefix that is negative or above socket.request.max.bytes: the connection is closed;
* an unknown api key or an unsupported version: closed, except ApiVersions, which is answered
  in v0 with UNSUPPORTED_VERSION (35) and the supported ranges (KIP-511), the connection
  staying open;
* a frame that does not decode (truncated, random, negative lengths inside): closed;
* Produce with a corrupted batch CRC: partition error CORRUPT_MESSAGE (2), the connection
  stays usable; bad batch length fields, wrong magic, malformed records: CORRUPT_MESSAGE or
  INVALID_RECORD (87); a batch above max.message.bytes: MESSAGE_TOO_LARGE (10); with acks=0
  an erroneous produce closes the connection (the client has no other way to learn of it).

A clean close is EOF or a reset within CLOSE_WITHIN seconds, never a connection left hanging.
One broker serves the whole module (with --max-request-bytes lowered to 1 MiB so oversized
frames are cheap), while a background thread produces with acks=-1 and records every
acknowledged (offset, value). Every bad connection is a fresh socket with a timeout. After
each example the broker log must hold no traceback or ERROR line. At the end the broker must
still be alive, the well-behaved client must never have seen an error, and every acknowledged
record must be read back at its offset, both from the running broker and after a SIGKILL and
restart.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import crc32c
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kio.index import load_response_schema
from kio.serial import entity_reader

from devkit.broker import BrokerProcess
from protocol.record_codec import encode_varint, read_varint
from protocol.records import CRC_START, HEADER_SIZE, parse_header
from protocol.versions import SUPPORTED, ApiKey
from tests import wire
from tests.wire import WireClient, encode_request, make_batch

MAX_REQUEST = 1 << 20  # --max-request-bytes for this module's broker
MAX_MESSAGE = 16 * 1024  # max.message.bytes of the fuzz topics
CLOSE_WITHIN = 3.0  # seconds a bad connection may take to be closed or answered

UNKNOWN_SERVER_ERROR = -1
NONE = 0
CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10
UNSUPPORTED_VERSION = 35
INVALID_RECORD = 87
REJECTED = {CORRUPT_MESSAGE, INVALID_RECORD}

STEADY = "steady"  # the well-behaved client's topic
T_GOOD = "fuzz-good"  # valid batches the fuzz tests send alongside bad ones; all must survive
T_CRC = "fuzz-crc"  # corrupted CRCs only: must stay empty
T_BATCH = "fuzz-batch"  # bad length fields / magic: must stay empty
T_RECORDS = "fuzz-records"  # CRC-valid batches whose record framing is broken: must stay empty
T_OPAQUE = "fuzz-opaque"  # CRC-valid batches malformed inside a record: may be stored as sent
T_BIG = "fuzz-big"  # oversized batches: must stay empty
T_LENGTHS = "fuzz-lengths"  # requests with tampered length fields (some may be appended)
T_MUTATE = "fuzz-mutate"  # byte-flipped requests (some may be appended)
MUST_STAY_EMPTY = (T_CRC, T_BATCH, T_RECORDS, T_BIG)
FUZZ_TOPICS = (T_GOOD, *MUST_STAY_EMPTY, T_OPAQUE, T_LENGTHS, T_MUTATE)

PROBE_CORRELATION = 0x5EC0DE  # correlation id of the ApiVersions probe that checks a socket

# Substrings of broker log lines that mean something went wrong inside the broker.
LOG_PROBLEMS = (
    "Traceback",
    " ERROR ",
    " CRITICAL ",
    "request failed",
    "connection failed",
    "exception was never retrieved",
    "Exception in callback",
)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _supported(api_key: int, version: int) -> bool:
    rng = SUPPORTED.get(api_key)
    return rng is not None and rng[0] <= version <= rng[1]


# --- the module's broker, the well-behaved client and the log watch ----------------------------


class SteadyProducer(threading.Thread):
    """A well-behaved client: acks=-1 produces on one connection, every ack recorded."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True, name="steady-producer")
        self.bootstrap = bootstrap
        self.acked: list[tuple[int, bytes]] = []
        self.errors: list[str] = []
        self.max_latency = 0.0
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        seq = 0
        client: WireClient | None = None
        while not self._halt.is_set():
            values = [
                f"steady-{seq + i:08d}-".encode() * (1 + (seq + i) % 7) for i in range(1 + seq % 3)
            ]
            try:
                if client is None:
                    client = WireClient(self.bootstrap, timeout=15.0)
                t0 = time.monotonic()
                r = client.produce(STEADY, 0, make_batch(values), acks=-1)
                latency = time.monotonic() - t0
                with self._lock:
                    self.max_latency = max(self.max_latency, latency)
                    if int(r.error_code) != NONE:
                        self.errors.append(f"produce #{seq}: error code {int(r.error_code)}")
                    else:
                        self.acked.extend((r.base_offset + i, v) for i, v in enumerate(values))
            except Exception as e:  # the well-behaved client must never see one
                with self._lock:
                    self.errors.append(f"produce #{seq}: {type(e).__name__}: {e}")
                if client is not None:
                    client.close()
                client = None
                time.sleep(0.1)
            seq += len(values)
            self._halt.wait(0.01)
        if client is not None:
            client.close()

    def snapshot(self) -> tuple[int, list[str]]:
        with self._lock:
            return len(self.acked), list(self.errors)

    def halt(self) -> None:
        self._halt.set()
        self.join(30)
        assert not self.is_alive(), "the well-behaved producer did not stop within 30 s"


class LogWatch:
    """Reads the broker log from where it last looked, failing on lines that mean trouble."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = path.stat().st_size if path.exists() else 0

    def new_problems(self) -> list[str]:
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        self.pos += len(data)
        text = data.decode(errors="replace")
        lines = [ln for ln in text.splitlines() if any(p in ln for p in LOG_PROBLEMS)]
        if "Traceback" in text:  # the first traceback in full, in place of its first line
            lines = [ln for ln in lines if "Traceback" not in ln]
            lines.append(text[text.index("Traceback") :][:3000])
        return lines


@dataclass
class Harness:
    broker: BrokerProcess
    steady: SteadyProducer
    logwatch: LogWatch
    good_acks: list[tuple[str, int, bytes]] = field(default_factory=list)  # (topic, offset, value)
    extra: list[BrokerProcess] = field(default_factory=list)

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.broker.port)

    def check(self, what: str) -> None:
        """After every example: the broker lives, logged nothing bad, the good client is fine."""
        assert self.broker.alive(), (
            f"BROKER BUG: broker died after {what}\n{self.broker.log()[-5000:]}"
        )
        problems = self.logwatch.new_problems()
        assert not problems, (
            f"BROKER BUG: broker logged an error/traceback after {what}:\n" + "\n".join(problems)
        )
        _, errors = self.steady.snapshot()
        assert not errors, (
            f"BROKER BUG: the well-behaved client saw errors (after {what}): {errors[:5]}"
        )


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    base = tmp_path_factory.mktemp("fuzz")
    broker = BrokerProcess(base / "data", None, "--max-request-bytes", str(MAX_REQUEST)).start()
    steady: SteadyProducer | None = None
    h: Harness | None = None
    try:
        with WireClient(broker.bootstrap) as c:
            assert int(c.create_topic(STEADY).error_code) == NONE
            for topic in FUZZ_TOPICS:
                r = c.create_topic(topic, configs={"max.message.bytes": str(MAX_MESSAGE)})
                assert int(r.error_code) == NONE, (topic, r)
        steady = SteadyProducer(broker.bootstrap)
        steady.start()
        h = Harness(broker, steady, LogWatch(broker.log_path))
        yield h
    finally:
        if steady is not None and steady.is_alive():
            steady.halt()
        for b in [broker, *(h.extra if h else [])]:
            b.stop()


# --- raw sockets ---------------------------------------------------------------------------


@dataclass
class Outcome:
    frames: list[bytes]  # complete response frames (size prefix removed), in order
    closed: bool  # EOF or reset seen; False: still open when the wait ran out
    how: str
    leftover: int = 0  # bytes of an incomplete trailing frame

    def __str__(self) -> str:
        return f"{len(self.frames)} frame(s), {self.how}, {self.leftover} leftover byte(s)"


def _split_frames(buf: bytes) -> tuple[list[bytes], int]:
    frames, pos = [], 0
    while len(buf) - pos >= 4:
        (size,) = struct.unpack_from(">i", buf, pos)
        if size < 0 or len(buf) - pos - 4 < size:
            break
        frames.append(bytes(buf[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    return frames, len(buf) - pos


def connect(h: Harness) -> socket.socket:
    return socket.create_connection(h.addr, timeout=CLOSE_WITHIN)


def send(sock: socket.socket, data: bytes) -> bool:
    """False when the broker had already closed (it may close before reading everything)."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def read_until(
    sock: socket.socket, within: float = CLOSE_WITHIN, stop_at_correlation: int | None = None
) -> Outcome:
    """Collect response frames until the broker closes, `within` runs out, or (if given) a
    frame with correlation id `stop_at_correlation` arrives."""
    buf = bytearray()
    deadline = time.monotonic() + within
    how, closed = f"still open after {within} s", False
    while True:
        frames, _ = _split_frames(bytes(buf))
        if stop_at_correlation is not None and any(
            len(f) >= 4 and struct.unpack_from(">i", f)[0] == stop_at_correlation for f in frames
        ):
            how = "answered the probe"
            break
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            continue
        except ConnectionResetError:
            how, closed = "closed (reset)", True
            break
        if not chunk:
            how, closed = "closed (EOF)", True
            break
        buf += chunk
    frames, leftover = _split_frames(bytes(buf))
    return Outcome(frames, closed, how, leftover)


def expect_close(h: Harness, data: bytes, what: str, half_close: bool = False) -> Outcome:
    """Send `data` on a fresh socket; the broker must close it without answering."""
    with connect(h) as s:
        send(s, data)
        if half_close:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_WR)
        out = read_until(s)
    assert out.closed, (
        f"BROKER BUG: connection not closed within {CLOSE_WITHIN} s after {what} ({out}); "
        f"input {data[:200].hex()}"
    )
    assert not out.frames, (
        f"BROKER BUG: {what} was answered instead of closed ({out}): {data[:200].hex()}"
    )
    return out


def correlation_of(frame: bytes) -> int:
    return struct.unpack_from(">i", frame)[0]


def decode_response(api_key: int, version: int, frame: bytes) -> tuple[int, Any]:
    cls = load_response_schema(api_key, version)
    header, used = entity_reader(cls.__header_schema__)(frame, 0)
    return header.correlation_id, entity_reader(cls)(frame, used)[0]


def probe_frame() -> bytes:
    """A valid ApiVersions v0 request, to check that a connection is still usable."""
    return encode_request(ApiKey.API_VERSIONS, 0, {}, PROBE_CORRELATION)


def assert_probe_answered(out: Outcome, what: str) -> None:
    assert out.frames and correlation_of(out.frames[-1]) == PROBE_CORRELATION, (
        f"BROKER BUG: connection not usable after {what}: {out}"
    )
    corr, body = decode_response(ApiKey.API_VERSIONS, 0, out.frames[-1])
    assert corr == PROBE_CORRELATION and int(body.error_code) == NONE


def produce_frame(
    parts: list[tuple[str, bytes | None]], correlation: int, acks: int = -1, version: int = 9
) -> bytes:
    topics: dict[str, list[dict]] = {}
    for topic, recs in parts:
        topics.setdefault(topic, []).append({"index": 0, "records": recs})
    return encode_request(
        ApiKey.PRODUCE,
        version,
        {
            "transactional_id": None,
            "acks": acks,
            "timeout": 10000,
            "topic_data": [
                {"name": t, "partition_data": [{"index": 0, "records": p["records"]} for p in ps]}
                for t, ps in topics.items()
            ],
        },
        correlation,
    )


def produce_errors(frame: bytes, version: int = 9) -> dict[str, tuple[int, int]]:
    """topic -> (error code, base offset) of partition 0 in a Produce response."""
    _, body = decode_response(ApiKey.PRODUCE, version, frame)
    return {
        t.name: (int(p.error_code), p.base_offset)
        for t in body.responses
        for p in t.partition_responses
    }


def produce_and_probe(
    h: Harness, frame: bytes, what: str, correlation: int
) -> dict[str, tuple[int, int]]:
    """Send a Produce and an ApiVersions probe behind it; both must be answered, in order."""
    with connect(h) as s:
        assert send(s, frame + probe_frame()), f"BROKER BUG: broker closed before reading {what}"
        out = read_until(s, stop_at_correlation=PROBE_CORRELATION)
    assert len(out.frames) == 2, (
        f"BROKER BUG: expected a Produce response and the probe's for {what}: {out}"
    )
    assert correlation_of(out.frames[0]) == correlation
    assert_probe_answered(out, what)
    return produce_errors(out.frames[0])


# --- batch crafting ------------------------------------------------------------------------


def reseal(batch: bytes | bytearray) -> bytes:
    """Fix batchLength to the actual size and recompute the CRC-32C."""
    out = bytearray(batch)
    struct.pack_into(">i", out, 8, len(out) - 12)
    struct.pack_into(">I", out, 17, crc32c.crc32c(bytes(out[CRC_START:])))
    return bytes(out)


def record(
    value: bytes | None,
    offset_delta: int,
    *,
    length_adjust: int = 0,
    value_len: int | None = None,
    headers: int = 0,
) -> bytes:
    vlen = (-1 if value is None else len(value)) if value_len is None else value_len
    body = (
        b"\x00"
        + encode_varint(0)
        + encode_varint(offset_delta)
        + encode_varint(-1)
        + encode_varint(vlen)
        + (value or b"")
    )
    body += encode_varint(headers)
    return encode_varint(len(body) + length_adjust) + body


def batch_with_records(
    recs: bytes, count: int, last_offset_delta: int, attributes: int = 0
) -> bytes:
    now = int(time.time() * 1000)
    after_crc = (
        struct.pack(">hiqqqhii", attributes, last_offset_delta, now, now, -1, -1, -1, count) + recs
    )
    head = struct.pack(">qiibI", 0, 0, -1, 2, 0)
    return reseal(head + after_crc)


def decode_batches(data: bytes) -> dict[int, bytes | None]:
    """offset -> value of every record in `data` (uncompressed v2 batches, CRCs checked)."""
    out: dict[int, bytes | None] = {}
    pos = 0
    while len(data) - pos >= HEADER_SIZE:
        hd = parse_header(data, pos)
        if pos + hd.size > len(data):
            break
        batch = data[pos : pos + hd.size]
        assert crc32c.crc32c(batch[CRC_START:]) == hd.crc, f"batch at {hd.base_offset}: bad CRC"
        assert hd.compression == 0
        rpos = HEADER_SIZE
        for _ in range(hd.record_count):
            length, rpos = read_varint(batch, rpos)
            end = rpos + length
            rpos += 1  # attributes
            _, rpos = read_varint(batch, rpos)  # timestamp delta
            delta, rpos = read_varint(batch, rpos)
            klen, rpos = read_varint(batch, rpos)
            rpos += max(klen, 0)
            vlen, rpos = read_varint(batch, rpos)
            out[hd.base_offset + delta] = None if vlen < 0 else bytes(batch[rpos : rpos + vlen])
            rpos = end
        pos += hd.size
    return out


def fetch_all(bootstrap: str, topic: str) -> tuple[dict[int, bytes | None], int]:
    got: dict[int, bytes | None] = {}
    with WireClient(bootstrap, timeout=30.0) as c:
        hw = c.list_offset(topic, 0, -1).offset
        offset = 0
        while offset < hw:
            p = c.fetch(topic, 0, offset)
            assert int(p.error_code) == NONE, f"fetch {topic}@{offset}: error {int(p.error_code)}"
            batch = decode_batches(p.records or b"")
            assert batch, f"fetch {topic}@{offset} below high watermark {hw} returned nothing"
            got.update(batch)
            offset = max(batch) + 1
    return got, hw


# --- request catalogue (valid requests of every supported api, to truncate and mutate) -------


def _catalogue() -> list[tuple[str, int, int, dict]]:
    out: list[tuple[str, int, int, dict]] = []
    for v in range(0, 5):
        out.append(
            (
                "ApiVersions",
                18,
                v,
                {"client_software_name": "strata-fuzz", "client_software_version": "1.0"},
            )
        )
    for v in range(1, 13):
        out.append(
            (
                "Metadata",
                3,
                v,
                {
                    "topics": [{"name": T_MUTATE, "topic_id": None}],
                    "allow_auto_topic_creation": False,
                    "include_cluster_authorized_operations": False,
                    "include_topic_authorized_operations": False,
                },
            )
        )
    for v in range(3, 10):
        out.append(
            (
                "Produce",
                0,
                v,
                {
                    "transactional_id": None,
                    "acks": -1,
                    "timeout": 5000,
                    "topic_data": [
                        {
                            "name": T_MUTATE,
                            "partition_data": [
                                {"index": 0, "records": make_batch([b"mutate-1", b"mutate-2"])}
                            ],
                        }
                    ],
                },
            )
        )
    for v in range(1, 8):
        out.append(
            (
                "ListOffsets",
                2,
                v,
                {
                    "replica_id": -1,
                    "isolation_level": 0,
                    "topics": [
                        {
                            "name": T_MUTATE,
                            "partitions": [
                                {
                                    "partition_index": 0,
                                    "current_leader_epoch": -1,
                                    "timestamp": -1,
                                    "max_num_offsets": 1,
                                }
                            ],
                        }
                    ],
                },
            )
        )
    for v in range(0, 5):
        out.append(
            ("InitProducerId", 22, v, {"transactional_id": None, "transaction_timeout": 60000})
        )
    for v in range(4, 12):
        out.append(
            (
                "Fetch",
                1,
                v,
                {
                    "replica_id": -1,
                    "max_wait": 0,
                    "min_bytes": 1,
                    "max_bytes": 1_000_000,
                    "isolation_level": 0,
                    "session_id": 0,
                    "session_epoch": -1,
                    "topics": [
                        {
                            "topic": T_MUTATE,
                            "partitions": [
                                {
                                    "partition": 0,
                                    "current_leader_epoch": -1,
                                    "fetch_offset": 0,
                                    "log_start_offset": -1,
                                    "partition_max_bytes": 100_000,
                                }
                            ],
                        }
                    ],
                    "forgotten_topics_data": [],
                    "rack_id": "",
                },
            )
        )
    return out


CATALOGUE = _catalogue()
# Byte flips in Fetch could turn max_wait into a long poll, a legitimate wait; leave it out.
MUTABLE = [c for c in CATALOGUE if c[0] != "Fetch"]


def request_bytes(entry: tuple[str, int, int, dict], correlation: int) -> bytes:
    _, key, version, body = entry
    return encode_request(key, version, body, correlation)


# --- 1. random bytes -------------------------------------------------------------------------


def _stream_model(data: bytes) -> str:
    """What the broker owes a raw byte stream, judged from its first frame: 'close' (it must
    close), 'incomplete' (it may wait for more bytes) or 'open' (answered or closed: a supported
    api with a random body, or ApiVersions in an unsupported version, which Kafka answers only
    if the rest of the header parses)."""
    if len(data) < 4:
        return "incomplete"
    (size,) = struct.unpack_from(">i", data)
    if size < 0 or size > MAX_REQUEST:
        return "close"
    if len(data) - 4 < size:
        return "incomplete"
    if size < 8:
        return "close"
    key, version = struct.unpack_from(">hh", data, 4)
    if key != ApiKey.API_VERSIONS and not _supported(key, version):
        return "close"
    return "open"


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=2048),
        # random bytes behind a plausible (in-limit) size prefix, so the body parser sees them
        st.binary(min_size=0, max_size=512).map(lambda b: struct.pack(">i", len(b)) + b),
    )
)
def test_random_bytes(harness: Harness, data: bytes) -> None:
    expected = _stream_model(data)
    with connect(harness) as s:
        send(s, data)
        if expected != "close":
            # a partial frame may legitimately be waited for: end the stream, the broker must close
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_WR)
        out = read_until(s)
    assert out.closed, (
        f"BROKER BUG: random bytes left the connection hanging ({out}): {data[:200].hex()}"
    )
    if expected == "close":
        assert not out.frames, (
            f"BROKER BUG: answered instead of closing ({out}): {data[:200].hex()}"
        )
    for frame in out.frames:
        assert len(frame) >= 4, f"BROKER BUG: runt response frame {frame.hex()}"
    harness.check(f"random bytes {data[:64].hex()}")


# --- 2. unknown api keys and unsupported versions ------------------------------------------------

unknown_key = st.integers(-(2**15), 2**15 - 1).filter(lambda k: k not in SUPPORTED)
bad_version = st.sampled_from(sorted(SUPPORTED)).flatmap(
    lambda k: st.tuples(
        st.just(k),
        st.integers(-(2**15), 2**15 - 1).filter(lambda v, k=k: not _supported(k, v)),
    )
)
unsupported_pair = st.one_of(
    st.tuples(unknown_key, st.integers(-(2**15), 2**15 - 1)),
    bad_version,
    st.tuples(
        st.just(int(ApiKey.API_VERSIONS)),
        st.integers(-(2**15), 2**15 - 1).filter(lambda v: not _supported(ApiKey.API_VERSIONS, v)),
    ),
)


@FUZZ
@given(
    pair=unsupported_pair,
    correlation=st.integers(-(2**31), 2**31 - 1),
    client_id=st.one_of(st.none(), st.text(max_size=20)),
    body=st.binary(max_size=256),
)
def test_unknown_api_keys_and_versions(
    harness: Harness, pair: tuple[int, int], correlation: int, client_id: str | None, body: bytes
) -> None:
    key, version = pair
    if client_id is None:
        cid = struct.pack(">h", -1)
    else:
        cid = struct.pack(">h", len(client_id.encode())) + client_id.encode()
    payload = struct.pack(">hhi", key, version, correlation) + cid + body
    data = struct.pack(">i", len(payload)) + payload
    what = f"api key {key} v{version}"
    if key != ApiKey.API_VERSIONS:
        expect_close(harness, data, what)
    else:
        # KIP-511: answered in v0 with UNSUPPORTED_VERSION and the ranges; the connection stays open
        with connect(harness) as s:
            assert send(s, data + probe_frame()), f"BROKER BUG: closed before reading {what}"
            out = read_until(s, stop_at_correlation=PROBE_CORRELATION)
        assert len(out.frames) == 2, (
            f"BROKER BUG: ApiVersions v{version} should get a v0 UNSUPPORTED_VERSION answer and "
            f"leave the connection usable: {out}; input {data[:200].hex()}"
        )
        corr, resp = decode_response(ApiKey.API_VERSIONS, 0, out.frames[0])
        assert corr == correlation
        assert int(resp.error_code) == UNSUPPORTED_VERSION, (
            f"BROKER BUG: ApiVersions v{version} answered with error {int(resp.error_code)}"
        )
        ranges = {(int(k.api_key), k.min_version, k.max_version) for k in resp.api_keys}
        assert ranges == {(int(k), lo, hi) for k, (lo, hi) in SUPPORTED.items()}
        assert_probe_answered(out, what)
    harness.check(what)


# --- 3. oversized and negative frame sizes -----------------------------------------------------


@FUZZ
@given(
    size=st.one_of(
        st.integers(MAX_REQUEST + 1, 2**31 - 1),
        st.just(MAX_REQUEST + 1),
        st.just(2**31 - 1),
        st.integers(-(2**31), -1),
        st.just(-1),
    ),
    tail=st.binary(max_size=64),
    after_valid=st.booleans(),
)
def test_oversized_and_negative_frame_sizes(
    harness: Harness, size: int, tail: bytes, after_valid: bool
) -> None:
    bad = struct.pack(">i", size) + tail
    what = f"frame size {size}"
    if not after_valid:
        expect_close(harness, bad, what)  # refused from the prefix alone: no body is ever sent
    else:
        # a valid request pipelined ahead of the bad prefix, in the same segment: it may be
        # answered or dropped with the connection, nothing else may come back, and the
        # connection must close
        with connect(harness) as s:
            send(s, probe_frame() + bad)
            out = read_until(s)
        assert out.closed, f"BROKER BUG: {what} did not close the connection ({out})"
        assert [correlation_of(f) for f in out.frames] in ([], [PROBE_CORRELATION]), (
            f"BROKER BUG: unexpected answers around {what}: {out}"
        )
    harness.check(what)


def test_frame_size_limit_boundary(harness: Harness) -> None:
    """A frame of exactly --max-request-bytes is read (and its batch refused as too large for
    max.message.bytes); one byte more closes the connection without reading the body."""
    value_size = MAX_REQUEST - 200
    while True:
        frame = produce_frame([(T_BIG, make_batch([b"x" * value_size]))], 77)
        excess = len(frame) - 4 - MAX_REQUEST
        if excess == 0:
            break
        value_size -= excess
    errors = produce_and_probe(harness, frame, "a frame of exactly max-request-bytes", 77)
    assert errors[T_BIG][0] == MESSAGE_TOO_LARGE, f"BROKER BUG: {errors}"

    over = produce_frame([(T_BIG, make_batch([b"x" * (value_size + 1)]))], 78)
    assert struct.unpack_from(">i", over)[0] == MAX_REQUEST + 1
    expect_close(harness, over[:4], "a size prefix of max-request-bytes + 1")
    harness.check("frame size boundary")


# --- 4. truncated frames ---------------------------------------------------------------------


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: f"{e[0]}-v{e[2]}")
def test_intact_requests_are_answered(harness: Harness, entry: tuple) -> None:
    """The control for the truncation and mutation fuzz: every request it starts from,
    sent whole, is answered."""
    name, key, version, _ = entry
    with connect(harness) as s:
        send(s, request_bytes(entry, 3131) + probe_frame())
        out = read_until(s, stop_at_correlation=PROBE_CORRELATION)
    if len(out.frames) != 2:
        harness.check(f"a valid {name} v{version}")  # shows the broker's traceback, if any
    assert len(out.frames) == 2 and correlation_of(out.frames[0]) == 3131, (
        f"BROKER BUG: a valid {name} v{version} was not answered ({out}): "
        f"{request_bytes(entry, 3131).hex()}"
    )
    decode_response(key, version, out.frames[0])
    harness.check(f"a valid {name} v{version}")


@FUZZ
@given(
    entry=st.sampled_from(CATALOGUE),
    cut=st.floats(0, 1, exclude_max=True),
    announce_full=st.booleans(),
)
def test_truncated_frames(harness: Harness, entry: tuple, cut: float, announce_full: bool) -> None:
    full = request_bytes(entry, 4242)
    body = full[4:]
    n = int(len(body) * cut)
    name, key, version, _ = entry
    if announce_full:
        # the prefix promises the whole request, the stream ends early: no hang, a close
        what = f"{name} v{version} cut at {n}/{len(body)} then EOF"
        expect_close(harness, full[: 4 + n], what, half_close=True)
    else:
        # a consistent prefix around a truncated request: it does not decode, so a close
        what = f"{name} v{version} truncated to {n}/{len(body)} bytes"
        expect_close(harness, struct.pack(">i", n) + body[:n], what)
    harness.check(what)


# --- 5. byte-flipped valid requests -------------------------------------------------------------


@FUZZ
@given(
    entry=st.sampled_from(MUTABLE),
    flips=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4
    ),
)
def test_mutated_requests(harness: Harness, entry: tuple, flips: list[tuple[float, int]]) -> None:
    full = bytearray(request_bytes(entry, 5151))
    for where, mask in flips:
        full[4 + int((len(full) - 4) * where)] ^= mask
    data = bytes(full)
    key, version, corr = struct.unpack_from(">hhi", data, 4)
    name = entry[0]
    what = f"{name} v{entry[2]} with bytes flipped: {data.hex()}"
    with connect(harness) as s:
        send(s, data + probe_frame())
        out = read_until(s, stop_at_correlation=PROBE_CORRELATION)
    assert out.closed or (out.frames and correlation_of(out.frames[-1]) == PROBE_CORRELATION), (
        f"BROKER BUG: neither answered nor closed ({out}): {what}"
    )
    if key == ApiKey.API_VERSIONS and not _supported(key, version):
        if out.frames and correlation_of(out.frames[0]) != PROBE_CORRELATION:
            c, resp = decode_response(ApiKey.API_VERSIONS, 0, out.frames[0])
            assert (c, int(resp.error_code)) == (corr, UNSUPPORTED_VERSION), what
    elif not _supported(key, version):
        assert out.closed and not out.frames, (
            f"BROKER BUG: unsupported api answered ({out}): {what}"
        )
    else:
        answers = [f for f in out.frames if correlation_of(f) != PROBE_CORRELATION]
        assert len(answers) <= 1 and all(correlation_of(f) == corr for f in answers), (
            f"BROKER BUG: unexpected answers {[f.hex() for f in answers]}: {what}"
        )
    harness.check(what)


# --- 6. negative and wrong length fields inside a request -------------------------------------

# Requests written field by field, so that any length prefix can be replaced. A segment is
# (label, bytes, struct format of a length field or None, whether that field is nullable).
Segment = tuple[str, bytes, str | None, bool]
I16, I32 = ">h", ">i"
NO_SUCH_TOPIC = b"no-such-topic-fuzz"


def _len(label: str, fmt: str, n: int, nullable: bool = False) -> Segment:
    return (label, struct.pack(fmt, n), fmt, nullable)


def _raw(data: bytes) -> Segment:
    return ("", data, None, False)


def _str(label: str, text: bytes, nullable: bool = False) -> list[Segment]:
    return [_len(label, I16, len(text), nullable), _raw(text)]


def _head(key: int, version: int, correlation: int) -> list[Segment]:
    return [_raw(struct.pack(">hhi", key, version, correlation)), *_str("client_id", b"fuzz", True)]


LENGTH_RECORDS = make_batch([b"length-fuzz"])
_T = T_LENGTHS.encode()
LAYOUTS: dict[str, tuple[Any, dict]] = {
    # name: (segments for a correlation id, the same request as an encode_request body)
    "Produce v3": (
        lambda corr: [
            *_head(0, 3, corr),
            _len("transactional_id", I16, -1, True),
            _raw(struct.pack(">hi", -1, 5000)),
            _len("topic_data", I32, 1),
            *_str("name", _T),
            _len("partition_data", I32, 1),
            _raw(struct.pack(">i", 0)),
            _len("records", I32, len(LENGTH_RECORDS), True),
            _raw(LENGTH_RECORDS),
        ],
        {
            "transactional_id": None,
            "acks": -1,
            "timeout": 5000,
            "topic_data": [
                {"name": T_LENGTHS, "partition_data": [{"index": 0, "records": LENGTH_RECORDS}]}
            ],
        },
    ),
    "Fetch v7": (
        lambda corr: [
            *_head(1, 7, corr),
            _raw(struct.pack(">iiiibii", -1, 0, 1, 1_000_000, 0, 0, -1)),
            _len("topics", I32, 1),
            *_str("topic", _T),
            _len("partitions", I32, 1),
            _raw(struct.pack(">iqqi", 0, 0, -1, 100_000)),
            _len("forgotten_topics_data", I32, 0),
        ],
        {
            "replica_id": -1,
            "max_wait": 0,
            "min_bytes": 1,
            "max_bytes": 1_000_000,
            "isolation_level": 0,
            "session_id": 0,
            "session_epoch": -1,
            "topics": [
                {
                    "topic": T_LENGTHS,
                    "partitions": [
                        {
                            "partition": 0,
                            "fetch_offset": 0,
                            "log_start_offset": -1,
                            "partition_max_bytes": 100_000,
                        }
                    ],
                }
            ],
            "forgotten_topics_data": [],
        },
    ),
    "ListOffsets v1": (
        lambda corr: [
            *_head(2, 1, corr),
            _raw(struct.pack(">i", -1)),
            _len("topics", I32, 1),
            *_str("name", _T),
            _len("partitions", I32, 1),
            _raw(struct.pack(">iq", 0, -1)),
        ],
        {
            "replica_id": -1,
            "topics": [
                {"name": T_LENGTHS, "partitions": [{"partition_index": 0, "timestamp": -1}]}
            ],
        },
    ),
    "Metadata v1": (
        lambda corr: [*_head(3, 1, corr), _len("topics", I32, 1, True), *_str("name", _T)],
        {"topics": [{"name": T_LENGTHS}]},
    ),
    "DeleteTopics v1": (
        lambda corr: [
            *_head(20, 1, corr),
            _len("topic_names", I32, 1),
            *_str("topic_name", NO_SUCH_TOPIC),
            _raw(struct.pack(">i", 1000)),
        ],
        {"topic_names": [NO_SUCH_TOPIC.decode()], "timeout": 1000},
    ),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_handcrafted_requests_match_the_encoder(name: str) -> None:
    """Each field-by-field request is what kio encodes (bar the client id)."""
    segments, body = LAYOUTS[name]
    handmade = b"".join(seg for _, seg, _, _ in segments(9))
    key, version = struct.unpack_from(">hh", handmade)
    encoded = encode_request(key, version, body, 9)[4:]
    assert handmade[:8] == encoded[:8]
    assert handmade[8 + 2 + len(b"fuzz") :] == encoded[8 + 2 + len(b"strata-tests") :]


@st.composite
def tampered_lengths(draw: st.DrawFn) -> tuple[str, str, int]:
    name = draw(st.sampled_from(sorted(LAYOUTS)))
    fields_ = [label for label, _, fmt, _ in LAYOUTS[name][0](0) if fmt is not None]
    label = draw(st.sampled_from(fields_))
    value = draw(
        st.one_of(
            st.just(-1),
            st.integers(-(2**15), -2),
            st.integers(-(2**31), -1),
            st.integers(0, 64),
            st.integers(2**15 - 64, 2**15 - 1),
            st.integers(2**31 - 64, 2**31 - 1),
        )
    )
    return name, label, value


@FUZZ
@given(case=tampered_lengths())
@example(case=("Produce v3", "topic_data", -1))  # a null where the schema allows none
@example(case=("Produce v3", "partition_data", -1))
@example(case=("Fetch v7", "forgotten_topics_data", -1))
@example(case=("Produce v3", "name", -2))
def test_negative_and_wrong_length_fields(harness: Harness, case: tuple[str, str, int]) -> None:
    name, label, value = case
    corr = 6161
    segments = LAYOUTS[name][0](corr)
    ((fmt, nullable, original),) = [(f, n, d) for lb, d, f, n in segments if lb == label]
    assert fmt is not None
    if fmt == I16:  # an int32 draw on an int16 field: keep the sign, clamp the size
        value = max(-(2**15), min(value, 2**15 - 1))
    payload = b"".join(struct.pack(fmt, value) if lb == label else d for lb, d, _, _ in segments)
    data = struct.pack(">i", len(payload)) + payload
    was = struct.unpack(fmt, original)[0]
    what = f"{name} with {label} length {value} (was {was}): {data.hex()}"
    if value < 0 and not nullable:
        # a negative length (null) where the schema allows none: the request does not parse
        expect_close(harness, data, what)
        harness.check(what)
        return
    with connect(harness) as s:
        send(s, data + probe_frame())
        out = read_until(s, stop_at_correlation=PROBE_CORRELATION)
    answered = bool(out.frames) and correlation_of(out.frames[-1]) == PROBE_CORRELATION
    answers = [f for f in out.frames if correlation_of(f) != PROBE_CORRELATION]
    if value == was:
        assert answered and len(answers) == 1, f"BROKER BUG: intact {name} not answered: {out}"
    # otherwise a shifted parse: answered (with the right correlation id) or closed, never a hang
    assert out.closed or answered, f"BROKER BUG: neither answered nor closed ({out}): {what}"
    assert len(answers) <= 1 and all(correlation_of(f) == corr for f in answers), what
    if name == "Produce v3" and label == "records" and value < 0 and answers:
        err = produce_errors(answers[0], 3).get(T_LENGTHS, (None,))[0]
        assert err in REJECTED, f"BROKER BUG: null records got error {err}: {what}"
    harness.check(what)


# --- 7. corrupted batch CRCs -----------------------------------------------------------------


@FUZZ
@given(
    values=st.lists(st.binary(max_size=200), min_size=1, max_size=5),
    where=st.floats(0, 1, exclude_max=True),
    mask=st.integers(1, 255),
    acks=st.sampled_from([-1, 1]),
    with_good=st.booleans(),
)
def test_corrupted_batch_crc(
    harness: Harness, values: list[bytes], where: float, mask: int, acks: int, with_good: bool
) -> None:
    batch = bytearray(make_batch(values))
    pos = 17 + int((len(batch) - 17) * where)  # the CRC field itself or anything it covers
    batch[pos] ^= mask
    # header fields under the CRC may be judged invalid before the CRC is checked
    allowed = REJECTED if 21 <= pos < HEADER_SIZE else {CORRUPT_MESSAGE}
    good_values = [b"good-%d-%d" % (pos, i) for i in range(len(values))]
    parts: list[tuple[str, bytes | None]] = [(T_CRC, bytes(batch))]
    if with_good:
        parts.append((T_GOOD, make_batch(good_values)))
    what = f"batch with byte {pos} ^ {mask:#x} (acks={acks}): {bytes(batch).hex()}"
    errors = produce_and_probe(harness, produce_frame(parts, 7171, acks), what, 7171)
    assert errors[T_CRC][0] in allowed, (
        f"BROKER BUG: corrupted batch got error {errors[T_CRC]}: {what}"
    )
    if with_good:
        code, base = errors[T_GOOD]
        assert code == NONE, f"BROKER BUG: the valid batch next to a corrupt one got error {code}"
        harness.good_acks.extend((T_GOOD, base + i, v) for i, v in enumerate(good_values))
    harness.check(what)


def test_corrupted_batch_with_acks_0_closes_the_connection(harness: Harness) -> None:
    """Kafka answers nothing to acks=0, so an erroneous acks=0 produce closes the connection
    (KafkaApis.handleProduceRequest: closeConnection when errorInResponse)."""
    batch = bytearray(make_batch([b"acks-zero"]))
    batch[-1] ^= 0x01
    data = produce_frame([(T_CRC, bytes(batch))], 7272, acks=0)
    with connect(harness) as s:
        send(s, data)
        out = read_until(s)
    assert out.closed and not out.frames, (
        "BROKER BUG: an acks=0 Produce with a corrupt batch must close the connection (Kafka "
        f"does, so the client learns of the error); got {out}. Input: {data.hex()}"
    )
    harness.check("acks=0 corrupt batch")


# --- 8. bad batch length fields and magic --------------------------------------------------------


@st.composite
def bad_batches(draw: st.DrawFn) -> tuple[str, bytes]:
    values = draw(st.lists(st.binary(max_size=100), min_size=1, max_size=4))
    batch = bytearray(make_batch(values))
    kind = draw(
        st.sampled_from(
            ["batch_length", "magic", "truncated", "record_count", "last_offset_delta", "tiny"]
        )
    )
    if kind == "batch_length":
        correct = len(batch) - 12
        v = draw(
            st.one_of(
                st.integers(-(2**31), 2**31 - 1), st.integers(correct - 70, correct + 70)
            ).filter(lambda v: v != correct)
        )
        struct.pack_into(">i", batch, 8, v)
    elif kind == "magic":
        struct.pack_into(">b", batch, 16, draw(st.integers(-128, 127).filter(lambda m: m != 2)))
    elif kind == "truncated":
        batch = batch[: draw(st.integers(1, len(batch) - 1))]
    elif kind == "record_count":
        struct.pack_into(
            ">i",
            batch,
            57,
            draw(st.integers(-(2**31), 2**31 - 1).filter(lambda c: c != len(values))),
        )
        batch = bytearray(reseal(batch))
    elif kind == "last_offset_delta":
        struct.pack_into(
            ">i",
            batch,
            23,
            draw(st.integers(-(2**31), 2**31 - 1).filter(lambda d: d != len(values) - 1)),
        )
        batch = bytearray(reseal(batch))
    else:  # less than a batch header
        batch = bytearray(draw(st.binary(min_size=1, max_size=HEADER_SIZE - 1)))
    return kind, bytes(batch)


@FUZZ
@given(case=bad_batches())
def test_bad_batch_length_fields_and_magic(harness: Harness, case: tuple[str, bytes]) -> None:
    kind, batch = case
    what = f"bad batch ({kind}): {batch.hex()}"
    errors = produce_and_probe(harness, produce_frame([(T_BATCH, batch)], 8181), what, 8181)
    assert errors[T_BATCH][0] in REJECTED, f"BROKER BUG: got error {errors[T_BATCH]} for {what}"
    harness.check(what)


# --- 9. CRC-valid batches whose records are malformed ---------------------------------------


@st.composite
def bad_records(draw: st.DrawFn) -> tuple[str, bytes]:
    values = draw(st.lists(st.binary(min_size=1, max_size=60), min_size=1, max_size=4))
    n = len(values)
    kind = draw(
        st.sampled_from(
            [
                "count_too_high",
                "count_too_low",
                "negative_record_length",
                "record_length_too_long",
                "record_length_too_short",
                "negative_value_length",
                "value_length_too_long",
                "negative_header_count",
                "trailing_garbage",
                "compressed_garbage",
            ]
        )
    )
    recs = [record(v, i) for i, v in enumerate(values)]
    count = n
    victim = draw(st.integers(0, n - 1))
    if kind == "count_too_high":
        count = n + draw(st.integers(1, 1000))
    elif kind == "count_too_low" and n > 1:
        count = draw(st.integers(1, n - 1))
    elif kind == "count_too_low":
        recs.append(record(b"extra", 1))
    elif kind == "negative_record_length":
        recs[victim] = record(values[victim], victim, length_adjust=-draw(st.integers(1000, 2**20)))
    elif kind == "record_length_too_long":
        recs[victim] = record(values[victim], victim, length_adjust=draw(st.integers(1, 500)))
    elif kind == "record_length_too_short":
        recs[victim] = record(values[victim], victim, length_adjust=-draw(st.integers(1, 5)))
    elif kind == "negative_value_length":
        recs[victim] = record(values[victim], victim, value_len=draw(st.integers(-(2**20), -2)))
    elif kind == "value_length_too_long":
        too_long = len(values[victim]) + draw(st.integers(1, 99))
        recs[victim] = record(values[victim], victim, value_len=too_long)
    elif kind == "negative_header_count":
        recs[victim] = record(values[victim], victim, headers=draw(st.integers(-(2**20), -1)))
    elif kind == "trailing_garbage":
        recs.append(draw(st.binary(min_size=1, max_size=8)))
    else:  # a compression codec over bytes no codec accepts (no gzip/lz4/zstd magic, xerial...)
        garbage = b"\xff" + draw(st.binary(max_size=64))
        return kind, batch_with_records(garbage, n, n - 1, attributes=draw(st.integers(1, 4)))
    return kind, batch_with_records(b"".join(recs), count, count - 1)


# Strata reads only the batch header and, for uncompressed batches, each record's length
# (never the records themselves: the hot-path rule). So a batch whose records do not tile
# its body, or disagree with its record count, is refused as Kafka refuses it; damage inside
# one record, or under a compression codec, is stored as the producer sent it (its CRC
# matches), and must not disturb the broker: ListOffsets over it still answers.
FRAMING_KINDS = {
    "count_too_high",
    "count_too_low",
    "negative_record_length",
    "record_length_too_long",
    "record_length_too_short",
    "trailing_garbage",
}


@settings(FUZZ, max_examples=100)
@given(case=bad_records())
def test_crc_valid_batches_with_malformed_records(
    harness: Harness, case: tuple[str, bytes]
) -> None:
    kind, batch = case
    what = f"CRC-valid batch with malformed records ({kind}): {batch.hex()}"
    framing = kind in FRAMING_KINDS
    topic = T_RECORDS if framing else T_OPAQUE
    errors = produce_and_probe(harness, produce_frame([(topic, batch)], 9191), what, 9191)
    if framing:
        assert errors[topic][0] in REJECTED, (
            f"BROKER BUG: a batch whose record framing is broken was answered with error "
            f"{errors[topic][0]} (Kafka rejects it with CORRUPT_MESSAGE or INVALID_RECORD): {what}"
        )
    else:
        assert errors[topic][0] in REJECTED | {NONE}, f"unexpected error {errors[topic][0]}: {what}"
        with WireClient(harness.broker.bootstrap) as c:
            for timestamp in (0, -3):
                assert c.list_offset(topic, 0, timestamp).error_code == NONE, what
    harness.check(what)


# --- 10. batches above max.message.bytes ----------------------------------------------------------


@settings(FUZZ, max_examples=40)
@given(size=st.integers(MAX_MESSAGE - HEADER_SIZE, 300_000), pieces=st.integers(1, 4))
def test_batch_above_max_message_bytes(harness: Harness, size: int, pieces: int) -> None:
    values = [b"L" * (size // pieces)] * pieces
    batch = make_batch(values)
    expected = MESSAGE_TOO_LARGE if len(batch) > MAX_MESSAGE else NONE
    topic = T_BIG if expected == MESSAGE_TOO_LARGE else T_GOOD
    what = f"a {len(batch)}-byte batch (max.message.bytes {MAX_MESSAGE})"
    errors = produce_and_probe(harness, produce_frame([(topic, batch)], 1010), what, 1010)
    code, base = errors[topic]
    assert code == expected, f"BROKER BUG: {what} got error {code}, not {expected}"
    if code == NONE:
        harness.good_acks.extend((T_GOOD, base + i, v) for i, v in enumerate(values))
    harness.check(f"{len(batch)}-byte batch")


def test_batch_exactly_max_message_bytes_is_accepted(harness: Harness) -> None:
    value_size = MAX_MESSAGE - 100
    while (excess := len(make_batch([b"E" * value_size])) - MAX_MESSAGE) != 0:
        value_size -= excess
    batch = make_batch([b"E" * value_size])
    frame = produce_frame([(T_GOOD, batch)], 1111)
    errors = produce_and_probe(harness, frame, "max-size batch", 1111)
    code, base = errors[T_GOOD]
    assert code == NONE, f"BROKER BUG: a batch of exactly max.message.bytes got error {code}"
    harness.good_acks.append((T_GOOD, base, b"E" * value_size))
    harness.check("max-size batch")


# --- 11. everything at once, concurrently ---------------------------------------------------------


def test_concurrent_bad_connections(harness: Harness) -> None:
    """Many bad connections at once, plus idle half-sent frames held open, while the
    well-behaved client keeps producing."""
    unknown = struct.pack(">hhih", 999, 0, 1, -1) + b"\x00" * 30
    cases: list[tuple[str, bytes, bool]] = [
        ("negative size", struct.pack(">i", -7), False),
        ("oversized", struct.pack(">i", 2**31 - 1) + b"\x00" * 32, False),
        ("unknown key", struct.pack(">i", len(unknown)) + unknown, False),
        ("truncated", request_bytes(CATALOGUE[0], 3)[:-1], True),
        ("zero size", struct.pack(">i", 0), False),
    ]

    def one(i: int) -> str | None:
        name, data, half_close = cases[i % len(cases)]
        try:
            with connect(harness) as s:
                send(s, data)
                if half_close:
                    s.shutdown(socket.SHUT_WR)
                out = read_until(s)
            if not out.closed or out.frames:
                return f"{name}: {out}"
        except OSError as e:
            return f"{name}: {type(e).__name__}: {e}"
        return None

    idle = [connect(harness) for _ in range(20)]
    try:
        for s in idle:
            s.sendall(struct.pack(">i", 1000) + b"\x00" * 10)  # a frame that never completes
        acked_before, _ = harness.steady.snapshot()
        with ThreadPoolExecutor(16) as pool:
            failures = [f for f in pool.map(one, range(400)) if f]
        assert not failures, f"BROKER BUG: under concurrent load: {failures[:5]}"
        # a produce round trip takes a group commit; give the steady client a moment
        deadline = time.monotonic() + 10
        while harness.steady.snapshot()[0] <= acked_before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert harness.steady.snapshot()[0] > acked_before, (
            "BROKER BUG: the well-behaved client made no progress during the flood"
        )
        # the idle, half-sent connections did not wedge anything: a fresh client is served
        with WireClient(harness.broker.bootstrap, timeout=10) as c:
            assert (
                int(
                    c.call(
                        18, 3, {"client_software_name": "x", "client_software_version": "1"}
                    ).error_code
                )
                == NONE
            )
    finally:
        for s in idle:
            s.close()
    harness.check("concurrent bad connections")


# --- clients that leave in the middle of a change ----------------------------------------------

LEAVE_TOPICS = [f"fuzz-leave-{i}" for i in range(4)]  # created, deleted, altered at random


def _leave_request(op: str, topic: str, n: int) -> tuple[int, int, dict]:
    return {
        "create": lambda: (*wire.CREATE_TOPICS, wire.create_topics_body(topic, 1 + n % 3)),
        "delete": lambda: (*wire.DELETE_TOPICS, wire.delete_topics_body(topic)),
        "auto-create": lambda: (*wire.METADATA, wire.metadata_body(f"{topic}-auto-{n}")),
        "alter": lambda: (
            *wire.INCREMENTAL_ALTER_CONFIGS,
            wire.alter_topic_configs_body(topic, {"retention.ms": str(3_600_000 + n)}),
        ),
        "commit": lambda: (*wire.OFFSET_COMMIT, wire.offset_commit_body("fuzz-g", topic, 0, n)),
        "produce": lambda: (*wire.PRODUCE, wire.produce_body(topic, 0, make_batch([b"a", b"b"]))),
        # up to the high watermark (-1) or a point that may lie beyond it (refused)
        "delete-records": lambda: (
            *wire.DELETE_RECORDS,
            wire.delete_records_body(topic, 0, -1 if n % 2 else n % 7),
        ),
    }[op]()


@settings(FUZZ, max_examples=30)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(
                ["create", "delete", "auto-create", "alter", "commit", "produce", "delete-records"]
            ),
            st.sampled_from(LEAVE_TOPICS),
            st.integers(0, 1000),
            st.booleans(),  # leave before the answer, or wait for it
        ),
        min_size=1,
        max_size=6,
    )
)
def test_clients_leaving_mid_change_at_random(harness: Harness, steps: list) -> None:
    """Random metadata, config and offset changes, each sent by a client that either leaves
    before the answer or waits for it: afterwards every change still works (a stale ETag
    or a half-applied change would refuse them), and the broker logged no failure."""
    for op, topic, n, leave in steps:
        request = _leave_request(op, topic, n)
        if leave:
            with contextlib.suppress(OSError):
                WireClient(harness.broker.bootstrap).send_and_leave(*request)
        else:
            with WireClient(harness.broker.bootstrap) as c:
                c.call(*request)
    control = f"fuzz-control-{time.monotonic_ns()}"
    with WireClient(harness.broker.bootstrap, timeout=15) as c:
        assert int(c.create_topic(control).error_code) == NONE, "BROKER BUG: a change after leaves"
        deleted = c.call(*wire.DELETE_TOPICS, wire.delete_topics_body(control))
        assert int(deleted.responses[0].error_code) == NONE
    harness.check(f"clients leaving mid change: {steps}")


# --- the verdict ---------------------------------------------------------------------------------


def _verify_acknowledged(h: Harness, acked: list[tuple[int, bytes]], when: str) -> None:
    got, hw = fetch_all(h.broker.bootstrap, STEADY)
    lost = [(o, v) for o, v in acked if got.get(o) != v]
    assert not lost, (
        f"BROKER BUG: {len(lost)} of {len(acked)} acknowledged records lost or changed {when} "
        f"(high watermark {hw}); first: {[(o, v, got.get(o)) for o, v in lost[:3]]}"
    )
    by_topic: dict[str, dict[int, bytes | None]] = {}
    for topic, offset, value in h.good_acks:
        if topic not in by_topic:
            by_topic[topic] = fetch_all(h.broker.bootstrap, topic)[0]
        assert by_topic[topic].get(offset) == value, (
            f"BROKER BUG: acknowledged {topic}@{offset} lost or changed {when}"
        )


def test_broker_survived_and_nothing_acknowledged_was_lost(harness: Harness) -> None:
    """Runs last: the broker is alive, the well-behaved client never saw an error, every
    acknowledged record reads back at its offset, live and after a SIGKILL and restart, and
    the topics that only ever received bad batches hold nothing."""
    time.sleep(0.5)  # let the steady client ack a few more after the last fuzz test
    harness.steady.halt()
    acked, errors = list(harness.steady.acked), list(harness.steady.errors)
    assert harness.broker.alive(), f"BROKER BUG: the broker died\n{harness.broker.log()[-5000:]}"
    assert not errors, f"BROKER BUG: the well-behaved client saw errors: {errors[:10]}"
    assert acked, "the well-behaved client got no acknowledgement at all"
    assert harness.steady.max_latency < 10, (
        f"the well-behaved client waited {harness.steady.max_latency:.1f} s for one produce"
    )
    _verify_acknowledged(harness, acked, "on the running broker")
    harness.check("the final read-back")

    harness.broker.kill()
    restarted = BrokerProcess(
        harness.broker.data_dir, harness.broker.port, *harness.broker.extra_args
    ).start()
    harness.extra.append(restarted)
    harness.broker = restarted
    _verify_acknowledged(harness, acked, "after SIGKILL and restart")
    harness.check("restart")

    with WireClient(harness.broker.bootstrap) as c:
        stored = {t: c.list_offset(t, 0, -1).offset for t in MUST_STAY_EMPTY}
    assert not any(stored.values()), (
        f"BROKER BUG: topics that only ever received invalid batches hold records: {stored} "
        "(see test_crc_valid_batches_with_malformed_records for the batches it accepts)"
    )
