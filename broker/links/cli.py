"""`strata link ...`: the links API of a broker (`--broker http://HOST:PORT`, its
`--http-listen`), from the command line. Prints the broker's JSON answer; exits 1
with the broker's message when it refuses."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

from broker.links.http import DEFAULT_PROMOTE_TIMEOUT_S, PREFIX
from broker.links.model import LinkError
from broker.links.security import parse_pairs


def add_parsers(sub: argparse._SubParsersAction) -> None:
    link = sub.add_parser(
        "link",
        help="mirror topics from Apache Kafka at the same offsets; cut over topic by topic",
        description="Manage cluster links: topics mirrored from a Kafka cluster at the "
        "source's offsets, consumer group offsets synced, and promotion (cutover).",
    )
    actions = link.add_subparsers(dest="link_command", required=True)

    def action(name: str, help: str, named: bool = True) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help, description=help)
        p.add_argument("--broker", required=True, metavar="URL", help="http://HOST:PORT")
        if named:
            p.add_argument("--name", required=True, help="the link's name")
        return p

    create = action("create", "link a source cluster: mirror its topics matching --topics")
    create.add_argument("--source-bootstrap", required=True, metavar="HOST:PORT[,...]")
    create.add_argument("--topics", required=True, metavar="REGEX", help="e.g. 'agent-.*'")
    create.add_argument(
        "--groups", default=".*", metavar="REGEX", help="consumer groups whose offsets sync"
    )
    create.add_argument(
        "--source-security",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Kafka client setting for the source (repeat): security.protocol, "
        "sasl.mechanism, sasl.username, sasl.password, ssl.ca.location, "
        "ssl.certificate.location, ssl.key.location, ssl.endpoint.identification.algorithm",
    )
    create.add_argument(
        "--on-source-gap",
        choices=("stop", "continue"),
        default="stop",
        help="when the source deleted records (retention, delete_records) before they were "
        "mirrored: stop that partition and report the gap (default), or report it and go on "
        "from the source's new start",
    )
    action("list", "the links of the cluster", named=False)
    action("describe", "a link's topics, lag per partition, groups and last error")
    action("pause", "stop fetching (mirror topics stay read-only)")
    resume = action("resume", "fetch again from where the mirror ends")
    resume.add_argument(
        "--accept-gaps",
        action="store_true",
        help="partitions stopped at a gap the source lost go on from the source's start",
    )
    action("delete", "remove the link; its topics keep their records and become writable")
    promote = action("promote", "cut one topic over: catch up, stop mirroring, take writes")
    promote.add_argument("--topic", required=True)
    promote.add_argument("--timeout", type=float, default=DEFAULT_PROMOTE_TIMEOUT_S)


def run(args: argparse.Namespace) -> int:
    base = args.broker.rstrip("/") + PREFIX
    command = args.link_command
    name = urllib.parse.quote(getattr(args, "name", "") or "", safe="")
    timeout = 30.0
    if command == "create":
        try:
            source_security = parse_pairs(args.source_security)
        except LinkError as e:
            print(f"strata link create: {e}", file=sys.stderr)
            return 1
        method, url = "POST", base
        body = {
            "name": args.name,
            "source_bootstrap": args.source_bootstrap,
            "topics": args.topics,
            "groups": args.groups,
            "source_security": source_security,
            "on_source_gap": args.on_source_gap,
        }
    elif command == "list":
        method, url, body = "GET", base, None
    elif command == "describe":
        method, url, body = "GET", f"{base}/{name}", None
    elif command == "delete":
        method, url, body = "DELETE", f"{base}/{name}", None
    elif command == "promote":
        method, url = "POST", f"{base}/{name}/promote"
        body = {"topic": args.topic, "timeout_s": args.timeout}
        timeout += args.timeout
    elif command == "resume":
        method, url = "POST", f"{base}/{name}/resume"
        body = {"accept_gaps": True} if args.accept_gaps else None
    else:  # pause
        method, url, body = "POST", f"{base}/{name}/{command}", None
    status, answer = _call(method, url, body, timeout)
    print(json.dumps(answer, indent=2))
    if status >= 400:
        print(f"strata link {command}: {answer.get('error', status)}", file=sys.stderr)
        return 1
    if command == "promote" and status == 202:
        print(
            f"strata link promote: {args.topic} is still catching up; run it again to wait",
            file=sys.stderr,
        )
        return 2
    return 0


def _call(method: str, url: str, body: dict | None, timeout: float) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"{}")
        except json.JSONDecodeError:
            return e.code, {"error": f"HTTP {e.code}"}
    except (urllib.error.URLError, OSError) as e:
        return 599, {"error": f"cannot reach {url}: {e}"}
