"""`strata replay` and `strata diff`: one session's records, from a broker or the bucket.

With `--broker http://HOST:PORT` the broker's replay API answers (its un-uploaded tail
included); with `--object-store` the bucket is read directly and read-only (GET and
LIST only: no bucket is created, nothing is written), so an investigator needs no
broker running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from broker.replay.core import DEFAULT_LIMIT, MAX_LIMIT, Query, Replayer, ReplayStats
from broker.replay.render import BadTime, diff_report, parse_time, timeline, to_dict
from broker.replay.sources import BucketSource, UnknownTopic
from s3stream.open_store import store_from_url
from s3stream.store import ObjectNotFound, ObjectStoreError


class ReplayFailed(Exception):
    """What the user is told, and the command exits 1."""


def _source_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topic", required=True)
    p.add_argument("--from", dest="start", metavar="TIME", help="ISO 8601 or epoch ms")
    p.add_argument("--to", dest="end", metavar="TIME", help="ISO 8601 or epoch ms")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"at most {MAX_LIMIT}")
    p.add_argument(
        "--isolation",
        choices=("read_uncommitted", "read_committed"),
        default="read_uncommitted",
        help="read_committed: leave out aborted transactions' records",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--broker", metavar="URL", help="a broker's --http-listen, http://...")
    where.add_argument(
        "--object-store", metavar="URL", help="read the bucket directly: s3://bucket[/prefix]"
    )
    p.add_argument("--s3-endpoint", default="", help="S3 endpoint URL (MinIO, moto)")
    p.add_argument("--s3-region", default="us-east-1")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    replay = sub.add_parser(
        "replay",
        help="one key's records (an agent session), in order",
        description="Print every record of one key, in offset order per partition and "
        "time order across partitions, from a broker or straight from the bucket.",
    )
    _source_arguments(replay)
    replay.add_argument("--key", required=True)
    replay.add_argument("--format", choices=("timeline", "jsonl"), default="timeline")
    diff = sub.add_parser(
        "diff",
        help="where two sessions diverge",
        description="Align two sessions' JSON events by the chosen fields; print the first "
        "step where they differ, both events, and a side-by-side summary.",
    )
    _source_arguments(diff)
    diff.add_argument("session_a")
    diff.add_argument("session_b")
    diff.add_argument("--fields", default="event_type,tool,action")


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "replay":
            events = asyncio.run(_fetch_many(args, [args.key]))[0]
            if args.format == "jsonl":
                for e in events:
                    sys.stdout.write(json.dumps(e, separators=(",", ":")) + "\n")
            else:
                sys.stdout.write(timeline(events))
        else:
            a, b = asyncio.run(_fetch_many(args, [args.session_a, args.session_b]))
            fields = [f for f in args.fields.split(",") if f]
            sys.stdout.write(diff_report(args.session_a, a, args.session_b, b, fields))
    except ReplayFailed as e:
        print(f"strata {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


class _ProgressBar:
    """Blocks fetched of those chosen, on stderr, once a read has taken over a second."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, stats: ReplayStats) -> None:
        if time.monotonic() - self.started < 1.0 or not stats.blocks_read:
            return
        done = min(stats.blocks_fetched, stats.blocks_read)
        filled = 30 * done // stats.blocks_read
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{stats.blocks_read} blocks, "
            f"{stats.bytes / 1e6:.1f} MB"
        )
        sys.stderr.flush()


async def _fetch_many(args: argparse.Namespace, keys: list[str]) -> list[list[dict]]:
    if not 0 < args.limit <= MAX_LIMIT:
        raise ReplayFailed(f"--limit {args.limit} out of range: 1 to {MAX_LIMIT}")
    try:
        start, end = parse_time(args.start), parse_time(args.end)
    except BadTime as e:
        raise ReplayFailed(str(e)) from None
    if args.broker:
        return [
            await asyncio.to_thread(_from_broker, args.broker, args.topic, k, args) for k in keys
        ]
    return await _from_bucket(args, keys, start, end)


def _from_broker(base: str, topic: str, key: str, args: argparse.Namespace) -> list[dict]:
    params = {"key": key, "limit": str(args.limit), "isolation": args.isolation}
    if args.start:
        params["from"] = args.start
    if args.end:
        params["to"] = args.end
    url = (
        f"{base.rstrip('/')}/v1/topics/{urllib.parse.quote(topic, safe='')}/records?"
        + urllib.parse.urlencode(params)
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=300) as resp:
            body = resp.read()
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read())["error"]
        except (ValueError, KeyError):
            message = str(e)
        raise ReplayFailed(f"{e.code}: {message}") from None
    except OSError as e:
        raise ReplayFailed(f"cannot reach {base}: {e}") from None
    return [json.loads(line) for line in body.splitlines() if line]


async def _from_bucket(
    args: argparse.Namespace, keys: list[str], start: int | None, end: int | None
) -> list[list[dict]]:
    try:
        store = store_from_url(
            args.object_store,
            endpoint=args.s3_endpoint or None,
            region=args.s3_region,
            path_style=bool(args.s3_endpoint),
        )
    except ValueError as e:
        raise ReplayFailed(str(e)) from None
    try:
        opener = getattr(store, "open", None)
        if opener is not None:
            await opener()  # the client only: never ensure_bucket, which may create
        source = BucketSource(store)
        replayer = Replayer(store, progress=_ProgressBar() if sys.stderr.isatty() else None)
        try:
            partitions = await source.partitions(args.topic)
        except UnknownTopic:
            raise ReplayFailed(f"unknown topic {args.topic!r}") from None
        except ObjectNotFound:
            raise ReplayFailed(f"{store.describe()} holds no Strata metadata") from None
        out = []
        for k in keys:
            committed = args.isolation == "read_committed"
            q = Query(k.encode(), start, end, args.limit, committed)
            result = await replayer.replay(partitions, q)
            if replayer.progress is not None:
                sys.stderr.write("\r\x1b[K")  # the bar goes once the answer is in
            out.append([to_dict(r) for r in result.records])
        return out
    except ObjectStoreError as e:
        raise ReplayFailed(f"{store.describe()}: {e}") from None
    finally:
        await store.close()
