"""The `strata` command."""

from __future__ import annotations

import argparse
import logging

from broker import config as broker_config
from broker import event_loop, logs_setup


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("strata")
    except PackageNotFoundError:  # run from a checkout without installing
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="strata", description="Strata: a Kafka-compatible broker."
    )
    parser.add_argument("--version", action="version", version=f"strata {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run a broker",
        description="Run a broker. Every setting also reads from a TOML file (--config) and "
        "from STRATA_<SETTING> environment variables; flags win over both.",
    )
    broker_config.add_arguments(serve)
    from broker.replay import cli as replay_cli

    replay_cli.add_parsers(sub)
    from broker.links import cli as link_cli

    link_cli.add_parsers(sub)
    args = parser.parse_args(argv)
    if args.command == "link":
        return link_cli.run(args)
    if args.command in ("replay", "diff"):
        logs_setup.configure("WARNING", "text", "")
        return replay_cli.run(args)
    try:
        cfg = broker_config.load(args)
        logs_setup.configure(cfg.log_level, cfg.log_format, cfg.log_levels)
        event_loop.loop_factory(cfg.event_loop)  # a bad choice is a usage error
    except (ValueError, OSError) as e:
        parser.error(str(e))
    from broker.app import run

    try:
        event_loop.run(run(cfg), cfg.event_loop)
    except OSError as e:
        logging.getLogger("strata").critical("cannot start: %s", e)
        return 1
    return 0
