"""The web console in headless Chromium against a real broker with data: the pages,
the figures Kafka clients see for the same objects, topic changes, session timelines
and diffs, bad input, and Kafka clients served while pages refresh themselves.

Each page's screenshot (1280×800) goes to docs/console/ (linked from README.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from devkit.broker import BrokerProcess
from devkit.procs import wait_for
from tests.browser import Tab, chromium, new_tab

ORDERS = "orders"
SESSIONS = "agent-events"
PER_PARTITION = (12, 20, 31)
COMMITTED = (4, 20, 9)  # the group's committed offsets: lag 8, 0, 22


def _session(kind: str) -> list[tuple[int, dict]]:
    """(ms after the start, event): two agent runs alike until step 4's tool."""
    tool = "calculator" if kind == "a" else "browser"
    return [
        (0, {"event_type": "llm_call", "model": "m1", "cost": 0.002, "tokens": 120}),
        (1500, {"event_type": "tool_call", "tool": "search", "duration_ms": 640}),
        (2300, {"event_type": "llm_call", "model": "m1", "cost": 0.004, "tokens": 310}),
        (4000, {"event_type": "tool_call", "tool": tool, "duration_ms": 90}),
        (5200, {"event_type": "final", "status": "ok"}),
    ]


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess, str]]:
    """A broker with its HTTP listener on, holding a topic with records, a consumer
    group that committed part of it (its member stays in the group), and two sessions."""
    b = BrokerProcess(
        tmp_path_factory.mktemp("console") / "data",
        None,
        "--num-partitions",
        "3",
        "--group-initial-rebalance-delay-ms",
        "0",
        metrics=True,
    ).start()
    url = f"http://127.0.0.1:{b.metrics_port}"
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    for f in admin.create_topics(
        [NewTopic(ORDERS, 3, 1), NewTopic(SESSIONS, 3, 1)], operation_timeout=10
    ).values():
        f.result()
    producer = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5})
    for p, n in enumerate(PER_PARTITION):
        for i in range(n):
            value = json.dumps({"order": i, "partition": p, "amount": 10 + i})
            producer.produce(ORDERS, key=f"customer-{i % 4}", value=value, partition=p)
    start = int(time.time() * 1000) - 60_000
    for name in ("a", "b"):
        for at, event in _session(name):
            producer.produce(
                SESSIONS, key=f"session-{name}", value=json.dumps(event), timestamp=start + at
            )
    assert producer.flush(15) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": b.bootstrap,
            "group.id": "billing",
            "client.id": "billing-worker",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([ORDERS])
    assert wait_for(lambda: consumer.poll(0.2) is not None or bool(consumer.assignment()), 30)
    consumer.commit(
        offsets=[TopicPartition(ORDERS, p, c) for p, c in enumerate(COMMITTED)],
        asynchronous=False,
    )
    yield b, url
    consumer.close()
    b.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as context:
        yield context


def _ends(bootstrap: str, topic: str, partitions: int) -> dict[int, tuple[int, int]]:
    """(log start, end) per partition, as a Kafka client reads them."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "console-check"})
    try:
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in range(partitions)
        }
    finally:
        c.close()


def _int(text: str) -> int:
    return int(text.replace(",", "").strip())


def _visit(tab: Tab, url: str, shot: str | None = None) -> None:
    assert tab.open(url) == 200
    if shot:
        tab.shot(shot)
    assert tab.errors == [], f"{url}: {tab.errors}"


def test_each_page_loads_without_errors_and_shows_what_kafka_clients_see(console, browser) -> None:
    b, url = console
    tab = new_tab(browser)
    ends = _ends(b.bootstrap, ORDERS, 3)
    assert [ends[p][1] for p in range(3)] == list(PER_PARTITION)

    _visit(tab, url + "/", "cluster")
    brokers = tab.page.locator("table.brokers tbody tr")
    assert brokers.count() == 1
    assert f"127.0.0.1:{b.port}" in brokers.first.inner_text()

    _visit(tab, url + "/topics", "topics")
    row = tab.page.locator("table.topics tr", has_text=ORDERS)
    assert row.locator("td").nth(1).inner_text() == "3"
    assert _int(row.locator("td").nth(2).inner_text()) == sum(PER_PARTITION)

    _visit(tab, url + f"/topics/{ORDERS}", "topic")
    for p, (low, high) in ends.items():
        assert _int(tab.page.locator(f'[data-cell="end-{p}"]').inner_text()) == high
        assert _int(tab.page.locator(f'[data-cell="start-{p}"]').inner_text()) == low

    _visit(tab, url + f"/topics/{ORDERS}/messages?partition=2&offset=25&limit=5", "messages")
    rows = tab.page.locator("table.messages tbody tr")
    assert rows.count() == 5
    assert [_int(rows.nth(i).locator("td").nth(1).inner_text()) for i in range(5)] == list(
        range(25, 30)
    )
    assert '"order": 25' in rows.first.locator("pre.json").inner_text()  # decoded JSON
    with tab.page.expect_navigation():
        tab.page.click(".pager a:has-text('next')")  # the rest of the partition: offset 30
    rows = tab.page.locator("table.messages tbody tr")
    assert rows.count() == 1 and _int(rows.first.locator("td").nth(1).inner_text()) == 30
    # by key, through the replay key index: every record of that key, none other
    _visit(tab, url + f"/topics/{ORDERS}/messages?key=customer-1")
    keyed = tab.page.locator("table.messages tbody tr")
    assert keyed.count() == sum(len(range(1, n, 4)) for n in PER_PARTITION)
    assert {keyed.nth(i).locator("td").nth(3).inner_text() for i in range(keyed.count())} == {
        "customer-1"
    }
    assert "key index" in tab.page.locator(".note").inner_text()

    _visit(tab, url + "/groups", "groups")
    assert tab.page.locator("table.groups tr", has_text="billing").count() == 1

    # lag as a Kafka client computes it: the end minus what the group committed
    reader = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "billing"})
    committed = reader.committed([TopicPartition(ORDERS, p) for p in range(3)], timeout=10)
    reader.close()
    lags = {tp.partition: ends[tp.partition][1] - tp.offset for tp in committed}
    assert lags == {0: 8, 1: 0, 2: 22}
    _visit(tab, url + "/groups/billing")
    for p, lag in lags.items():
        assert _int(tab.page.locator(f'[data-lag="{ORDERS}-{p}"]').inner_text()) == lag
    members = tab.page.locator("table.members tbody tr")
    assert members.count() == 1 and "billing-worker" in members.first.inner_text()
    # the lag chart fills as the page refreshes itself
    tab.page.wait_for_function("Number(document.body.dataset.refreshes || 0) >= 2", timeout=15000)
    assert len(tab.page.locator("svg.chart polyline").get_attribute("points").split()) >= 2
    tab.shot("group")
    assert tab.errors == []

    _visit(tab, url + "/objects")
    tab.page.wait_for_function("Number(document.body.dataset.refreshes || 0) >= 1", timeout=15000)
    puts = tab.page.locator('[data-figure="PUTs"]').inner_text()
    assert _int(puts) >= 1  # the broker wrote its metadata and catalog at least
    tab.shot("objects")
    assert tab.errors == []


def test_a_topic_created_altered_and_deleted_in_the_console_is_so_for_kafka_clients(
    console, browser
) -> None:
    b, url = console
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    tab = new_tab(browser)
    _visit(tab, url + "/topics")
    page = tab.page
    page.fill("form.create input[name=name]", "made-in-console")
    page.fill("form.create input[name=partitions]", "4")
    page.fill("form.create input[name=configs]", "retention.ms=3600000")
    with page.expect_navigation():
        page.click("form.create button")  # the confirmation dialog is accepted
    assert page.url.endswith("/topics/made-in-console")
    md = admin.list_topics("made-in-console", timeout=10)
    assert len(md.topics["made-in-console"].partitions) == 4
    assert md.topics["made-in-console"].error is None

    def config(name: str) -> str:
        res = ConfigResource(ConfigResource.Type.TOPIC, "made-in-console")
        return admin.describe_configs([res])[res].result()[name].value

    assert config("retention.ms") == "3600000"
    page.fill("form.alter input[name=key]", "retention.ms")
    page.fill("form.alter input[name=value]", "7200000")
    with page.expect_navigation():
        page.click("form.alter button")
    assert config("retention.ms") == "7200000"
    assert "7200000" in page.locator("table.configs").inner_text()

    page.fill("form.delete input[name=confirm]", "made-in-console")
    with page.expect_navigation():
        page.click("form.delete button")
    assert page.url.endswith("/topics")
    assert wait_for(lambda: "made-in-console" not in admin.list_topics(timeout=10).topics, 10)
    assert tab.errors == []


def test_the_session_pages_show_a_timeline_and_where_two_sessions_diverge(console, browser) -> None:
    _, url = console
    tab = new_tab(browser)
    _visit(tab, url + f"/sessions?topic={SESSIONS}&key=session-a", "sessions")
    rows = tab.page.locator("table.timeline tbody tr")
    expected = _session("a")
    assert rows.count() == len(expected)
    for i, (at, event) in enumerate(expected):
        cells = rows.nth(i).locator("td")
        assert cells.nth(1).inner_text() == f"+{at / 1000:.3f} s"
        assert cells.nth(2).inner_text() == event["event_type"]
    # a duration field where the event has one, else the time to the next event
    assert rows.nth(1).locator("td").nth(3).inner_text() == "0.640 s"
    assert rows.nth(0).locator("td").nth(3).inner_text() == "1.500 s"
    assert rows.nth(0).locator("td").nth(4).inner_text() == "0.002"
    assert "0.006" in tab.page.locator(".figures").first.inner_text()  # the cost in all

    _visit(tab, url + f"/sessions/diff?topic={SESSIONS}&a=session-a&b=session-b", "sessions-diff")
    assert tab.page.locator(".verdict").get_attribute("data-divergence") == "4"
    diverging = tab.page.locator("table.diff tr.diverges")
    assert diverging.count() == 1
    assert diverging.get_attribute("data-step") == "4"
    text = diverging.inner_text()
    assert "calculator" in text and "browser" in text
    assert tab.page.locator("table.diff tr.same").count() == 3


def test_bad_input_gets_a_404_page_or_a_form_error_and_long_lists_paginate(
    console, browser
) -> None:
    b, url = console
    tab = new_tab(browser)
    page = tab.page
    assert tab.open(url + "/topics/no-such-topic") == 404
    assert "There is no topic named no-such-topic" in page.locator(".notfound").inner_text()
    tab.shot("not-found")
    assert tab.open(url + "/groups/no-such-group") == 404
    assert "There is no group named no-such-group" in page.locator(".notfound").inner_text()
    assert tab.open(url + f"/topics/{ORDERS}/messages?partition=0&offset=12x") == 400
    assert "not a whole number" in page.locator(".form-error").inner_text()
    assert tab.open(url + f"/topics/{ORDERS}/messages?partition=0&offset=999") == 400
    assert "outside partition 0's log (0 to 12)" in page.locator(".form-error").inner_text()
    assert tab.open(url + f"/topics/{ORDERS}/messages?partition=0&time=last+tuesday") == 400
    assert "malformed time" in page.locator(".form-error").inner_text()
    # the form keeps what was typed, and a good time then works
    assert page.input_value("form.browse input[name=time]") == "last tuesday"
    page.fill("form.browse input[name=time]", "2000-01-01T00:00:00Z")
    with page.expect_navigation():
        page.click("form.browse button")
    assert page.locator("table.messages tbody tr").count() == 12

    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic("wide", 1000, 1)])["wide"].result()
    assert tab.open(url + "/topics/wide") == 200
    assert page.locator("table.partitions tbody tr").count() == 50
    assert "page 1 of 20" in page.locator(".pager").inner_text()
    with page.expect_navigation():
        page.click(".pager a:has-text('next')")
    first = page.locator("table.partitions tbody tr").first.locator("td").first.inner_text()
    assert first == "50"
    assert tab.open(url + "/topics/wide?page=20&per=100") == 200
    assert "page 10 of 10" in page.locator(".pager").inner_text()  # clamped to the last
    assert tab.open(url + "/topics/wide?per=100000") == 400


def _produce_for(bootstrap: str, seconds: float) -> tuple[int, float]:
    """Records acknowledged in `seconds` of produce as fast as acks come (acks=all)."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    acked = 0

    def done(err, _msg) -> None:
        nonlocal acked
        assert err is None, err
        acked += 1

    payload = b"x" * 512
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            p.produce("load", payload, on_delivery=done)
        except BufferError:
            p.poll(0.01)
        p.poll(0)
    assert p.flush(30) == 0
    return acked, time.monotonic() - start


def test_kafka_clients_are_served_while_console_pages_refresh(console, browser) -> None:
    b, url = console
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic("load", 3, 1)])["load"].result()
    quiet, quiet_s = _produce_for(b.bootstrap, 5)

    tabs = [new_tab(browser) for _ in range(3)]
    for tab, path in zip(tabs, ("/topics/load", "/groups/billing", "/objects"), strict=True):
        _visit(tab, url + path)
        tab.page.evaluate("window.__loaded_once = true")
    busy, busy_s = _produce_for(b.bootstrap, 8)
    assert busy > 0
    end = sum(high for _, high in _ends(b.bootstrap, "load", 3).values())
    assert end == quiet + busy
    topic = tabs[0].page
    topic.wait_for_function(
        f"""Array.from(document.querySelectorAll('[data-cell^="end-"]'))
              .reduce((s, e) => s + Number(e.textContent.replace(/,/g, '')), 0) === {end}""",
        timeout=15000,
    )
    for tab in tabs:
        refreshes = int(tab.page.evaluate("document.body.dataset.refreshes || '0'"))
        assert refreshes >= 2  # refreshed in place while the producer ran...
        assert tab.page.evaluate("window.__loaded_once") is True  # ...without a reload
        assert tab.errors == []
        tab.page.close()
    # the figures for the report, not a timed assertion
    print(
        f"\nproduce alone: {quiet / quiet_s:,.0f} records/s; with three console pages "
        f"refreshing: {busy / busy_s:,.0f} records/s"
    )


@pytest.mark.slow
def test_a_broker_of_a_cluster_shows_the_whole_cluster(etcd, s3_bucket, browser, tmp_path: Path):
    from tests.cluster import Cluster
    from tests.cluster import wait_for as cluster_wait

    moto, bucket = s3_bucket
    c = Cluster(
        tmp_path,
        etcd.url,
        ["--object-store", f"s3://{bucket}/console", "--s3-endpoint", moto.endpoint],
        "--lease-ttl-ms",
        "3000",
    )
    try:
        c.start(1, "--rack", "rack-a")
        c.start(2, "--rack", "rack-b")
        assert cluster_wait(lambda: c.live_brokers() == {1, 2}, 30)
        admin = AdminClient({"bootstrap.servers": c.bootstrap})
        admin.create_topics([NewTopic("spread", 4, 1)])["spread"].result()
        assert cluster_wait(lambda: set(c.leaders("spread").values()) == {1, 2}, 60)
        producer = Producer({"bootstrap.servers": c.bootstrap})
        for p in range(4):
            for i in range(5 * (p + 1)):
                producer.produce("spread", value=f"{p}-{i}".encode(), partition=p)
        assert producer.flush(15) == 0
        ends = _ends(c.bootstrap, "spread", 4)
        leaders = c.leaders("spread")
        # one group coordinated by each broker (FindCoordinator, as a Kafka client asks)
        by_coordinator: dict[int, str] = {}
        for i in range(64):
            g = f"readers-{i}"
            found = admin.describe_consumer_groups([g])[g].result().coordinator.id
            by_coordinator.setdefault(found, g)
            if len(by_coordinator) == 2:
                break
        assert set(by_coordinator) == {1, 2}
        groups = list(by_coordinator.values())
        for g in groups:
            committer = Consumer({"bootstrap.servers": c.bootstrap, "group.id": g})
            committer.commit(
                offsets=[TopicPartition("spread", p, p + 1) for p in range(4)], asynchronous=False
            )
            committer.close()
        url = f"http://127.0.0.1:{c.metrics_ports[1]}"
        tab = new_tab(browser)
        _visit(tab, url + "/", "cluster-mode")
        rows = tab.page.locator("table.brokers tbody tr")
        assert rows.count() == 2
        assert "cluster" in tab.page.locator('[data-figure="mode"]').inner_text()
        assert tab.page.locator('[data-figure="racks"]').inner_text() == "rack-a, rack-b"
        _visit(tab, url + "/topics/spread")
        for p, (_, high) in ends.items():
            cells = tab.page.locator("table.partitions tbody tr").nth(p).locator("td")
            assert _int(cells.nth(1).inner_text()) == leaders[p]
            # partitions broker 2 leads too: asked of broker 2 over the Kafka protocol
            assert _int(tab.page.locator(f'[data-cell="end-{p}"]').inner_text()) == high
        _visit(tab, url + "/groups")
        listed = tab.page.locator("table.groups tbody tr")
        coordinators = {}
        for i in range(listed.count()):
            cells = listed.nth(i).locator("td")
            coordinators[cells.nth(0).inner_text()] = _int(cells.nth(3).inner_text())
        assert {b: coordinators.get(g) for b, g in by_coordinator.items()} == {1: 1, 2: 2}
        for g in groups:
            _visit(tab, url + f"/groups/{g}")
            for p, (_, high) in ends.items():
                assert _int(tab.page.locator(f'[data-lag="spread-{p}"]').inner_text()) == high - (
                    p + 1
                )
    finally:
        c.stop_all()
