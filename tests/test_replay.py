"""Session replay: one key's records from the bucket (and the un-uploaded tail), in order.

Agent events keyed by session id go in through confluent-kafka; a replay (HTTP API,
`strata replay` against the broker, `strata replay` offline from the bucket) must give
exactly what a consumer scanning the whole topic and keeping that key gets, in order.
The CI scale is 24,000 events over 500 sessions in 12 partitions (the issue's 1,000,000
events are the `replay` benchmark's).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from devkit.broker import REPO_ROOT, BrokerProcess, metric
from devkit.procs import NO_PROXY, free_port, wait_for

EVENTS = 24_000
SESSIONS = 500
PARTITIONS = 12
TOOLS = ("search", "refund", "lookup_order", "send_email", "escalate")


def _event(session: str, step: int, rng: random.Random) -> dict:
    return {
        "session": session,
        "step": step,
        "event_type": rng.choice(("llm_call", "tool_call", "tool_result", "decision")),
        "tool": rng.choice(TOOLS),
        "action": rng.choice(("approve", "deny", "ask", "wait")),
        "tokens": rng.randrange(10, 2000),
        "cost": round(rng.random() / 100, 6),
        "note": "x" * rng.randrange(80, 160),
    }


def _produce(bootstrap: str, topic: str, events: list[tuple[str, dict]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "lz4"})
    failures = []
    for i, (key, value) in enumerate(events):
        p.produce(
            topic,
            json.dumps(value).encode(),
            key=key.encode(),
            headers=[("seq", str(i).encode())],
            on_delivery=lambda e, m: e is not None and failures.append(e),
        )
        if i % 5000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    assert failures == []


def _session_events(n: int, sessions: int, seed: int) -> list[tuple[str, dict]]:
    """`n` events over `sessions` sessions of varying length, interleaved as live agents
    would write them."""
    rng = random.Random(seed)
    names = [f"sess_{uuid.UUID(int=rng.getrandbits(128)).hex[:10]}" for _ in range(sessions)]
    weights = [rng.paretovariate(1.2) for _ in names]
    steps: dict[str, int] = {}
    out = []
    for name in rng.choices(names, weights, k=n):
        steps[name] = steps.get(name, 0) + 1
        out.append((name, _event(name, steps[name], rng)))
    return out


def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)


def _scan(bootstrap: str, topic: str, partitions: int) -> dict[str, list[tuple]]:
    """Every record of the topic by a consumer, by key: (partition, offset, value)."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"scan-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    try:
        ends = {}
        for i in range(partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, i), timeout=10)
            ends[i] = (lo, hi)
        c.assign(
            [
                TopicPartition(topic, i, ends[i][0])
                for i in range(partitions)
                if ends[i][1] > ends[i][0]
            ]
        )
        left = {i for i in range(partitions) if ends[i][1] > ends[i][0]}
        out: dict[str, list[tuple]] = {}
        deadline = time.monotonic() + 120
        while left and time.monotonic() < deadline:
            for m in c.consume(1000, 1.0):
                assert m.error() is None, m.error()
                out.setdefault(m.key().decode(), []).append(
                    (m.partition(), m.offset(), json.loads(m.value()))
                )
                if m.offset() + 1 >= ends[m.partition()][1]:
                    left.discard(m.partition())
        assert not left, f"scan did not reach the end of partitions {left}"
    finally:
        c.close()
    for v in out.values():
        v.sort(key=lambda r: (r[0], r[1]))
    return out


def _http(url: str) -> tuple[int, dict, bytes]:
    try:
        with NO_PROXY.open(url, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _replay_http(http: int, topic: str, key: str, **params: str) -> list[dict]:
    q = urllib.parse.urlencode({"key": key, **params})
    status, _, body = _http(f"http://127.0.0.1:{http}/v1/topics/{topic}/records?{q}")
    assert status == 200, body
    return [json.loads(line) for line in body.splitlines()]


def _strata(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "broker", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
    )


def _as_rows(records: list[dict]) -> list[tuple]:
    return [(r["partition"], r["offset"], r["value"]) for r in records]


def _broker(data_dir: Path, s3: tuple, http: int, *extra: str) -> BrokerProcess:
    server, bucket = s3
    return BrokerProcess(
        data_dir,
        None,
        "--object-store",
        f"s3://{bucket}",
        "--s3-endpoint",
        server.endpoint,
        "--http-listen",
        f"127.0.0.1:{http}",
        *extra,
        env=server.env(),
    ).start()


@pytest.fixture(scope="module")
def uploaded(moto_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """24,000 events written through one broker and uploaded; then a second broker on
    an empty data directory over the same bucket, and a full consumer scan through it."""
    bucket = f"strata-replay-{uuid.uuid4().hex[:8]}"
    moto_server.create_bucket(bucket)
    s3 = (moto_server, bucket)
    topic = "agent-events"
    events = _session_events(EVENTS, SESSIONS, seed=19)
    # 64 KiB blocks: at this scale 1 MiB blocks would hold a partition's whole share
    small = ("--object-block-bytes", "65536")
    first = _broker(tmp_path_factory.mktemp("first") / "data", s3, free_port(), *small)
    try:
        _create_topic(first.bootstrap, topic, PARTITIONS)
        _produce(first.bootstrap, topic, events)
    finally:
        assert first.stop() == 0, first.log()  # a clean stop uploads everything
    http = free_port()
    second = _broker(tmp_path_factory.mktemp("second") / "data", s3, http, *small)
    try:
        scan = _scan(second.bootstrap, topic, PARTITIONS)
        assert sum(len(v) for v in scan.values()) == EVENTS
        yield {"s3": s3, "broker": second, "http": http, "topic": topic, "scan": scan}
    finally:
        second.stop()


def _data_bytes(s3: tuple) -> int:
    server, bucket = s3
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="data/")
    return sum(o["Size"] for page in pages for o in page.get("Contents", []))


def test_replay_over_http_returns_exactly_what_a_full_scan_keeps_for_the_key(uploaded) -> None:
    scan, http, topic = uploaded["scan"], uploaded["http"], uploaded["topic"]
    sessions = random.Random(7).sample(sorted(scan), 40)
    before = metric(http, "strata_replay_store_bytes_total")
    fetched = []
    for s in sessions:
        q = urllib.parse.urlencode({"key": s})
        status, headers, body = _http(f"http://127.0.0.1:{http}/v1/topics/{topic}/records?{q}")
        assert status == 200, body
        got = [json.loads(line) for line in body.splitlines()]
        assert _as_rows(got) == scan[s], s
        assert all(r["key"] == s and r["headers"]["seq"].isdigit() for r in got)
        fetched.append(int(headers["X-Strata-Replay-Bytes"]))
    assert metric(http, "strata_replay_store_bytes_total") - before == sum(fetched)
    assert metric(http, 'strata_replay_requests_total{outcome="ok"}') >= len(sessions)
    # a session's replay reads a small part of the topic (the key index narrows it down)
    median = sorted(fetched)[len(fetched) // 2]
    assert median < 0.1 * _data_bytes(uploaded["s3"]), (median, _data_bytes(uploaded["s3"]))


def test_replay_reads_only_blocks_that_may_hold_the_key(uploaded) -> None:
    http, topic, scan = uploaded["http"], uploaded["topic"], uploaded["scan"]
    short = min(scan, key=lambda s: len(scan[s]))  # a short session: a block or two
    _, headers, body = _http(f"http://127.0.0.1:{http}/v1/topics/{topic}/records?key={short}")
    read, total = (int(x) for x in headers["X-Strata-Replay-Blocks"].split("/"))
    assert len(body.splitlines()) == len(scan[short])
    assert read <= len(scan[short]) and read < total, headers


def test_replay_narrows_to_a_time_range_and_a_limit(uploaded) -> None:
    http, topic, scan = uploaded["http"], uploaded["topic"], uploaded["scan"]
    longest = max(scan, key=lambda s: len(scan[s]))
    everything = _replay_http(http, topic, longest)
    mid = everything[len(everything) // 2]["timestamp"]
    later = _replay_http(http, topic, longest, **{"from": str(mid)})
    assert later == [r for r in everything if r["timestamp"] >= mid]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(mid / 1000)) + "Z"
    earlier = _replay_http(http, topic, longest, to=iso)
    assert earlier == [r for r in everything if r["timestamp"] <= (mid // 1000) * 1000]
    assert _replay_http(http, topic, longest, limit="5") == everything[:5]


def test_strata_replay_against_the_broker_prints_the_session(uploaded) -> None:
    http, topic, scan = uploaded["http"], uploaded["topic"], uploaded["scan"]
    s = sorted(scan)[3]
    out = _strata(
        "replay",
        "--topic",
        topic,
        "--key",
        s,
        "--format",
        "jsonl",
        "--broker",
        f"http://127.0.0.1:{http}",
    )
    assert out.returncode == 0, out.stderr
    assert _as_rows([json.loads(line) for line in out.stdout.splitlines()]) == scan[s]
    out = _strata("replay", "--topic", topic, "--key", s, "--broker", f"http://127.0.0.1:{http}")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert s in lines[0] and f"{len(scan[s])} events" in lines[0]
    assert len(lines) == len(scan[s]) + 1
    first = scan[s][0][2]
    assert (
        "+    0.000s" in lines[1] and first["event_type"] in lines[1] and first["tool"] in lines[1]
    )


def test_bad_requests_get_clear_errors_and_the_broker_keeps_serving(uploaded) -> None:
    http, topic = uploaded["http"], uploaded["topic"]
    base = f"http://127.0.0.1:{http}/v1/topics"
    status, _, body = _http(f"{base}/no-such-topic/records?key=a")
    assert status == 404 and "no-such-topic" in json.loads(body)["error"]
    status, _, body = _http(f"{base}/{topic}/records?key=a&from=yesterday")
    assert status == 400 and "yesterday" in json.loads(body)["error"]
    status, _, body = _http(f"{base}/{topic}/records?key=a&limit=100000000")
    assert status == 400 and "limit" in json.loads(body)["error"]
    status, _, body = _http(f"{base}/{topic}/records")
    assert status == 400 and "key" in json.loads(body)["error"]
    status, _, body = _http(f"{base}/{topic}/records?key=sess_nobody_has_this")
    assert (status, body) == (200, b"")
    out = _strata("replay", "--topic", "nope", "--key", "a", "--broker", f"http://127.0.0.1:{http}")
    assert out.returncode == 1 and "unknown topic" in out.stderr
    out = _strata(
        "replay",
        "--topic",
        topic,
        "--key",
        "a",
        "--from",
        "noon",
        "--broker",
        f"http://127.0.0.1:{http}",
    )
    assert out.returncode == 1 and "malformed time" in out.stderr
    assert _http(f"http://127.0.0.1:{http}/healthz")[0] == 200
    s = sorted(uploaded["scan"])[0]
    assert _as_rows(_replay_http(http, topic, s)) == uploaded["scan"][s]
    assert metric(http, 'strata_replay_requests_total{outcome="bad_request"}') >= 3
    assert metric(http, 'strata_replay_requests_total{outcome="not_found"}') >= 1


def test_diff_names_the_first_step_where_two_sessions_diverge(uploaded) -> None:
    broker, http = uploaded["broker"], uploaded["http"]
    topic = "agent-diff"
    _create_topic(broker.bootstrap, topic, 3)
    steps = [
        {"event_type": "llm_call", "tool": None, "action": "plan", "tokens": 100, "cost": 0.01},
        {"event_type": "tool_call", "tool": "lookup_order", "action": "read", "tokens": 20},
        {"event_type": "tool_result", "tool": "lookup_order", "action": "read", "tokens": 50},
        {"event_type": "llm_call", "tool": None, "action": "decide", "tokens": 300, "cost": 0.03},
        {"event_type": "tool_call", "tool": "policy", "action": "check", "tokens": 10},
        {"event_type": "tool_result", "tool": "policy", "action": "check", "tokens": 40},
        {"event_type": "llm_call", "tool": None, "action": "decide", "tokens": 200, "cost": 0.02},
    ]
    a = [*steps, {"event_type": "tool_call", "tool": "refund", "action": "deny", "tokens": 5}]
    b = [*steps, {"event_type": "tool_call", "tool": "refund", "action": "approve", "tokens": 7}]
    b.append({"event_type": "tool_result", "tool": "refund", "action": "approve", "tokens": 9})
    events = [("sess_a", {**e, "step": i}) for i, e in enumerate(a, 1)]
    events += [("sess_b", {**e, "step": i}) for i, e in enumerate(b, 1)]
    _produce(broker.bootstrap, topic, events)
    out = _strata(
        "diff", "--topic", topic, "sess_a", "sess_b", "--broker", f"http://127.0.0.1:{http}"
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "first divergence at step 8" in text
    assert '"action": "deny"' in text and '"action": "approve"' in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[4:] if line.strip()}
    assert rows["steps"] == ["8", "9"]
    assert rows["tokens"] == [str(sum(e["tokens"] for e in a)), str(sum(e["tokens"] for e in b))]
    same = _strata(
        "diff", "--topic", topic, "sess_a", "sess_a", "--broker", f"http://127.0.0.1:{http}"
    )
    assert "no divergence" in same.stdout


def test_offline_replay_from_the_bucket_with_no_broker_running(uploaded) -> None:
    """Last in this module: it stops the module's broker."""
    server, bucket = uploaded["s3"]
    scan, topic = uploaded["scan"], uploaded["topic"]
    assert uploaded["broker"].stop() == 0
    keys_before = set(server.list_keys(bucket))
    for s in random.Random(3).sample(sorted(scan), 4):
        out = _strata(
            "replay", "--topic", topic, "--key", s, "--format", "jsonl",
            "--object-store", f"s3://{bucket}", "--s3-endpoint", server.endpoint,
            env=server.env(),
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert _as_rows([json.loads(line) for line in out.stdout.splitlines()]) == scan[s]
    assert set(server.list_keys(bucket)) == keys_before, "an offline replay wrote to the bucket"
    out = _strata(
        "replay", "--topic", "nope", "--key", "x",
        "--object-store", f"s3://{bucket}", "--s3-endpoint", server.endpoint, env=server.env(),
    )  # fmt: skip
    assert out.returncode == 1 and "unknown topic" in out.stderr


def test_replay_includes_records_not_uploaded_yet(s3_bucket, tmp_path: Path) -> None:
    http = free_port()
    topic = "agent-live"
    # nothing uploads until the broker stops: every record is in the tail cache or WAL
    quiet = ("--upload-interval-ms", "3600000", "--upload-bytes", str(1 << 30))
    b = _broker(tmp_path / "data", s3_bucket, http, *quiet)
    try:
        _create_topic(b.bootstrap, topic, 4)
        first = _session_events(3000, 40, seed=5)
        _produce(b.bootstrap, topic, first)
        assert metric(http, "strata_uploads_total") == 0
        scan = _scan(b.bootstrap, topic, 4)
        for s in sorted(scan)[:10]:
            assert _as_rows(_replay_http(http, topic, s)) == scan[s]
    finally:
        assert b.stop() == 0
    b = _broker(tmp_path / "data", s3_bucket, http, *quiet)  # the first part is uploaded now
    try:
        more = [(k, {**v, "round": 2}) for k, v in _session_events(2000, 40, seed=5)]
        _produce(b.bootstrap, topic, more)
        scan = _scan(b.bootstrap, topic, 4)
        for s in sorted(scan)[:10]:
            got = _replay_http(http, topic, s)
            assert _as_rows(got) == scan[s]
            assert any(r["value"].get("round") == 2 for r in got)
            assert any("round" not in r["value"] for r in got)
    finally:
        b.stop()


def test_replay_leaves_out_what_delete_records_removed(s3_bucket, tmp_path: Path) -> None:
    server, bucket = s3_bucket
    http = free_port()
    topic = "agent-deleted"
    b = _broker(tmp_path / "data", s3_bucket, http, "--durability", "object")
    try:
        _create_topic(b.bootstrap, topic, 1)
        events = [("sess_x", {"step": i, "event_type": "e"}) for i in range(1, 301)]
        _produce(b.bootstrap, topic, events)
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        cut = TopicPartition(topic, 0, 120)
        assert admin.delete_records([cut])[cut].result(10).low_watermark == 120
        got = _replay_http(http, topic, "sess_x")
        assert [r["offset"] for r in got] == list(range(120, 300))
        assert [r["value"]["step"] for r in got] == list(range(121, 301))
    finally:
        assert b.stop() == 0
    out = _strata(
        "replay", "--topic", topic, "--key", "sess_x", "--format", "jsonl",
        "--object-store", f"s3://{bucket}", "--s3-endpoint", server.endpoint, env=server.env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["offset"] for line in out.stdout.splitlines()] == list(range(120, 300))


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode",
    [
        ("--durability", "object"),  # every acknowledged record is in the bucket
        # nothing uploaded: all of another leader's partition is its tail, asked of it
        ("--upload-interval-ms", "3600000", "--upload-bytes", str(1 << 30)),
    ],
    ids=["uploaded", "leaders-tail"],
)
def test_any_broker_of_a_cluster_replays_partitions_another_leads(
    s3_bucket, tmp_path, mode
) -> None:
    from devkit.etcd import EtcdServer
    from tests.cluster import Cluster, wait_for

    moto, bucket = s3_bucket
    etcd = EtcdServer().start()
    c = Cluster(
        tmp_path,
        etcd.url,
        ["--object-store", f"s3://{bucket}/c", "--s3-endpoint", moto.endpoint],
        *mode,
    )
    try:
        c.start(0)
        c.start(1)
        topic = "agent-cluster"
        _create_topic(c.bootstrap, topic, 6)
        assert wait_for(lambda: set(c.leaders(topic).values()) == {0, 1}, 60)
        _produce(c.bootstrap, topic, _session_events(3000, 30, seed=11))
        scan = _scan(c.bootstrap, topic, 6)
        leaders = c.leaders(topic)
        sample = sorted(scan)[:8]
        for broker_id in (0, 1):
            assert any(leaders[scan[s][0][0]] != broker_id for s in sample)
            http = c.metrics_ports[broker_id]  # --metrics-listen: the same HTTP listener
            for s in sample:
                assert _as_rows(_replay_http(http, topic, s)) == scan[s], (broker_id, s)
    finally:
        c.stop_all()
        etcd.close()


def test_replay_misses_nothing_while_a_producer_writes_and_uploads_move_the_tail(
    s3_bucket, tmp_path: Path
) -> None:
    """Sessions written while replays run, with uploads every 100 ms swapping WAL entries
    for object blocks under the reads: every replay is a gapless prefix of the session."""
    import threading

    http = free_port()
    topic = "agent-moving"
    b = _broker(tmp_path / "data", s3_bucket, http, "--upload-interval-ms", "100")
    stop = threading.Event()
    try:
        _create_topic(b.bootstrap, topic, 3)
        live = [f"sess_live_{i}" for i in range(3)]

        def write() -> None:
            p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 2})
            step = 0
            while not stop.is_set():
                step += 1
                for s in live:
                    p.produce(topic, json.dumps({"step": step, "pad": "y" * 200}), key=s)
                p.poll(0)
                if step % 50 == 0:
                    p.flush(10)
            p.flush(10)

        writer = threading.Thread(target=write)
        writer.start()
        seen = dict.fromkeys(live, 0)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            for s in live:
                steps = [r["value"]["step"] for r in _replay_http(http, topic, s)]
                assert steps == list(range(1, len(steps) + 1)), f"{s}: a gap or a repeat"
                assert len(steps) >= seen[s]
                seen[s] = len(steps)
        stop.set()
        writer.join(30)
        assert metric(http, "strata_uploads_total") > 5
        assert min(seen.values()) > 100
    finally:
        stop.set()
        b.stop()


def _as_version_1(body: bytes) -> bytes:
    """An object as a broker from before key indexes wrote it: the same blocks and block
    index, no key index, footer version 1."""
    from s3stream.object_format import FOOTER, MAGIC, parse_footer, parse_locator

    footer = parse_footer(body)
    lo, hi = footer.locator_range
    blocks_end = parse_locator(footer, body[lo:hi]).position
    index = body[footer.index_position : footer.index_position + footer.index_size]
    old = FOOTER.pack(blocks_end, len(index), footer.index_crc, footer.created_ms, 1, MAGIC)
    return body[:blocks_end] + index + old


def test_objects_from_before_key_indexes_are_served_and_replayed(s3_bucket, tmp_path) -> None:
    server, bucket = s3_bucket
    http = free_port()
    topic = "agent-old"
    b = _broker(tmp_path / "a", s3_bucket, http, "--object-block-bytes", "16384")
    try:
        _create_topic(b.bootstrap, topic, 3)
        _produce(b.bootstrap, topic, _session_events(3000, 30, seed=8))
    finally:
        assert b.stop() == 0
    s3 = server.client()
    data = [k for k in server.list_keys(bucket) if k.startswith("data/")]
    assert data
    for key in data:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        s3.put_object(Bucket=bucket, Key=key, Body=_as_version_1(body))
    # the snapshot names the objects' old sizes: without it they are found by listing
    s3.delete_object(Bucket=bucket, Key="manifests/b0.msgpack")
    b = _broker(tmp_path / "b", s3_bucket, http)
    try:
        scan = _scan(b.bootstrap, topic, 3)
        assert sum(len(v) for v in scan.values()) == 3000
        for s in sorted(scan)[:6]:
            _, headers, body = _http(f"http://127.0.0.1:{http}/v1/topics/{topic}/records?key={s}")
            assert _as_rows([json.loads(line) for line in body.splitlines()]) == scan[s]
            read, total = (int(x) for x in headers["X-Strata-Replay-Blocks"].split("/"))
            assert read == total, "an object without a key index is read block by block"
    finally:
        assert b.stop() == 0


def test_read_committed_replay_leaves_out_aborted_and_open_transactions(
    s3_bucket, tmp_path: Path
) -> None:
    server, bucket = s3_bucket
    http = free_port()
    topic = "agent-txn"
    b = _broker(tmp_path / "data", s3_bucket, http)
    try:
        _create_topic(b.bootstrap, topic, 2)
        p = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": "agent-1"})
        p.init_transactions(30)
        step = 0
        for outcome in ("commit", "abort", "commit"):
            p.begin_transaction()
            for _ in range(4):
                step += 1
                value = json.dumps({"step": step, "outcome": outcome})
                p.produce(topic, value, key="sess_t")
                p.produce(topic, value, key="sess_other")
            p.flush(10)
            (p.commit_transaction if outcome == "commit" else p.abort_transaction)(30)

        def steps(**params: str) -> list[int]:
            return [r["value"]["step"] for r in _replay_http(http, topic, "sess_t", **params)]

        assert steps() == list(range(1, 13))
        committed = [1, 2, 3, 4, 9, 10, 11, 12]
        assert steps(isolation="read_committed") == committed
        p.begin_transaction()  # still open: read_committed stops before it
        p.produce(topic, json.dumps({"step": 13, "outcome": "open"}), key="sess_t")
        p.flush(10)
        assert wait_for(lambda: steps() == list(range(1, 14)), 10)
        assert steps(isolation="read_committed") == committed
        p.abort_transaction(30)
        status, _, body = _http(
            f"http://127.0.0.1:{http}/v1/topics/{topic}/records?key=sess_t&isolation=dirty"
        )
        assert status == 400 and b"isolation" in body
    finally:
        assert b.stop() == 0
    out = _strata(
        "replay", "--topic", topic, "--key", "sess_t", "--format", "jsonl",
        "--isolation", "read_committed",
        "--object-store", f"s3://{bucket}", "--s3-endpoint", server.endpoint, env=server.env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["value"]["step"] for line in out.stdout.splitlines()] == committed
