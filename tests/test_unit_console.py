"""The console's pure parts: view models, input parsing, history, and HTML escaping."""

from __future__ import annotations

import struct

import pytest

from broker.console import html, views
from broker.console.history import CounterHistory, LagHistory

pytestmark = pytest.mark.unit


def _event(ts: int, key: str = "s", **value: object) -> dict:
    return {"partition": 0, "offset": ts, "timestamp": ts, "key": key, "value": value}


def test_pages_cover_the_list_and_a_page_past_the_end_shows_the_last() -> None:
    assert views.page_of(120, views.Page(1, 50)) == {
        "page": 1,
        "pages": 3,
        "per": 50,
        "total": 120,
        "start": 0,
        "end": 50,
    }
    last = views.page_of(120, views.Page(9, 50))
    assert (last["page"], last["start"], last["end"]) == (3, 100, 120)
    assert views.page_of(0, views.Page(1, 50))["pages"] == 1
    with pytest.raises(views.FormError):
        views.parse_page({"per": ["0"]})
    with pytest.raises(views.FormError):
        views.parse_page({"page": ["two"]})


def test_the_messages_form_refuses_a_malformed_offset_or_time() -> None:
    with pytest.raises(views.FormError) as e:
        views.parse_browse({"offset": ["12x"]}, 3)
    assert e.value.field == "offset"
    with pytest.raises(views.FormError) as e:
        views.parse_browse({"offset": ["-1"]}, 3)
    assert e.value.field == "offset"
    with pytest.raises(views.FormError) as e:
        views.parse_browse({"time": ["yesterday"]}, 3)
    assert e.value.field == "time"
    with pytest.raises(views.FormError) as e:
        views.parse_browse({"partition": ["3"]}, 3)
    assert e.value.field == "partition"
    with pytest.raises(views.FormError):
        views.parse_browse({"offset": ["1"], "time": ["5"]}, 3)
    b = views.parse_browse({"partition": ["2"], "time": ["2026-01-15T14:00:00Z"]}, 3)
    assert (b.partition, b.offset, b.time_ms) == (2, None, 1768485600000)
    assert views.parse_browse({}, 1) == views.Browse(0, None, None, 20, None)


def test_a_new_topic_needs_a_valid_name_and_configs_as_name_value() -> None:
    assert views.parse_new_topic(
        {
            "name": ["t.1"],
            "partitions": ["4"],
            "configs": ["retention.ms=5, cleanup.policy=compact"],
        }
    ) == ("t.1", 4, [("retention.ms", "5"), ("cleanup.policy", "compact")])
    for bad in ({"name": [""]}, {"name": ["a b"]}, {"name": ["t"], "configs": ["oops"]}):
        with pytest.raises(views.FormError):
            views.parse_new_topic(bad)


def _assignment(topics: dict[str, list[int]]) -> bytes:
    out = struct.pack(">hi", 0, len(topics))
    for t, parts in topics.items():
        out += struct.pack(">h", len(t)) + t.encode() + struct.pack(">i", len(parts))
        out += struct.pack(f">{len(parts)}i", *parts)
    return out + struct.pack(">i", -1)


def test_a_consumer_assignment_decodes_and_lag_is_end_minus_committed() -> None:
    data = _assignment({"orders": [0, 2], "refunds": [1]})
    assert views.decode_assignment(data) == {"orders": [0, 2], "refunds": [1]}
    assert views.decode_assignment(b"\x00") == {}
    rows = views.lag_rows({("orders", 0): 4, ("orders", 2): 9}, {("orders", 0): 12})
    assert [(r["partition"], r["lag"]) for r in rows] == [(0, 8), (2, None)]
    member = views.GroupMember("m-1", None, "c", "/h", {"orders": [0]})
    v = views.group_view("g", "Stable", "consumer", "range", 0, [member], rows, [(0.0, 8)])
    assert v["total_lag"] == 8
    assert [r["member"] for r in v["offsets"]] == ["m-1", None]


def test_the_lag_chart_spans_its_width_with_the_highest_lag_on_top() -> None:
    c = views.lag_chart([(10.0, 0), (12.0, 50), (14.0, 100)], width=100, height=50)
    xs_ys = [tuple(map(float, p.split(","))) for p in c["points"].split()]
    assert [x for x, _ in xs_ys] == [4.0, 50.0, 96.0]
    assert [y for _, y in xs_ys] == [46.0, 25.0, 4.0]
    assert views.lag_chart([])["points"] == ""


def test_leadership_balance_counts_client_topics_apart_from_internal_ones() -> None:
    brokers = [views.BrokerInfo(1, "h", 1, "a"), views.BrokerInfo(2, "h", 2, "b")]
    leads = [views.PartitionLead("t", i, 1 if i < 3 else 2, 0) for i in range(4)]
    leads += [views.PartitionLead("__consumer_offsets", 0, 2, 0)]
    v = views.cluster_view(brokers, 1, leads, [views.Moving("t", 2, 1, 2)], "cluster", 1)
    assert [(b["id"], b["leaders"], b["internal_leaders"]) for b in v["brokers"]] == [
        (1, 3, 0),
        (2, 1, 1),
    ]
    assert v["balance"] == {"fair_share": 2.0, "most": 3, "skew": 1.5}
    assert v["racks"] == ["a", "b"]
    assert v["moving"] == [{"topic": "t", "partition": 2, "from": 1, "to": 2}]


def test_a_timeline_has_relative_times_durations_and_costs() -> None:
    events = [
        _event(1000, event_type="llm", cost=0.5, tokens=10),
        _event(3500, event_type="tool", tool="search", duration_ms=250),
        _event(4000, event_type="final"),
    ]
    v = views.timeline_view("t", "s", events)
    assert [(r["rel_s"], r["type"], r["duration_s"]) for r in v["events"]] == [
        (0.0, "llm", 2.5),
        (2.5, "tool", 0.25),
        (3.0, "final", None),
    ]
    assert v["events"][0]["cost"] == 0.5 and v["events"][0]["tokens"] == 10
    assert v["summary"]["steps"] == 3


def test_a_diff_marks_the_first_step_that_differs_and_the_steps_after_it() -> None:
    a = [_event(i, event_type="x", tool=t) for i, t in enumerate(["a", "b", "c"])]
    b = [_event(i, event_type="x", tool=t) for i, t in enumerate(["a", "z", "c", "d"])]
    v = views.diff_view("t", "A", a, "B", b)
    assert v["divergence"] == 2
    assert [(r["divergence"], r["after"]) for r in v["rows"]] == [
        (False, False),
        (True, False),
        (False, True),
        (False, True),
    ]
    assert v["rows"][3]["a"] is None
    assert views.diff_view("t", "A", a, "B", a)["divergence"] is None
    with pytest.raises(views.FormError):
        views.parse_fields({"fields": [" , "]})


def test_rates_come_from_the_oldest_and_newest_sample_in_the_window() -> None:
    h = CounterHistory(window_s=10, min_gap_s=0.5)
    h.record(0.0, {"puts": 0})
    h.record(0.1, {"puts": 100})  # too close to the last sample: not kept
    h.record(5.0, {"puts": 50})
    series = h.record(20.0, {"puts": 200})
    assert views.rate(series["puts"]) == pytest.approx(150 / 15)
    assert views.rate([(1.0, 5)]) is None


def test_lag_history_keeps_points_apart_and_forgets_the_least_recent_group() -> None:
    h = LagHistory(points=3, min_gap_s=1.0, groups=2)
    h.record("g", 0.0, 5)
    h.record("g", 0.5, 6)  # too soon
    for t in (1.0, 2.0, 3.0):
        series = h.record("g", t, int(t))
    assert series == [(1.0, 1), (2.0, 2), (3.0, 3)]
    h.record("h", 0.0, 1)
    h.record("i", 0.0, 1)  # a third group: "g" goes
    assert h.record("g", 10.0, 7) == [(10.0, 7)]


def test_names_from_the_url_are_escaped_in_pages() -> None:
    page = html.document(html.not_found_page("topic", "<script>x</script>", "/topics"))
    assert "<script>x</script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    v = views.topics_view(
        [("a&b", 1), ("__consumer_offsets", 16)], {"a&b": 3}, views.Page(1, 50), False
    )
    assert [t["name"] for t in v["topics"]] == ["a&b"]
    assert 'href="/topics/a%26b"' in html.topics_page(v).live
