"""The `strata` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from broker import config as broker_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="strata", description="Strata: a Kafka-compatible broker."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run a broker",
        description="Run a broker. Every setting also reads from a TOML file (--config) and "
        "from STRATA_<SETTING> environment variables; flags win over both.",
    )
    broker_config.add_arguments(serve)
    args = parser.parse_args(argv)
    try:
        cfg = broker_config.load(args)
    except (ValueError, OSError) as e:
        parser.error(str(e))
    logging.basicConfig(
        level=cfg.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from broker.app import run

    try:
        asyncio.run(run(cfg))
    except OSError as e:
        logging.getLogger("strata").critical("cannot start: %s", e)
        return 1
    return 0
