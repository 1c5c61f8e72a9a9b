"""Logging: one line per event, as text or JSON, with levels settable per logger."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers; exceptions ride in `exc`."""

    def format(self, record: logging.LogRecord) -> str:
        event = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


def parse_levels(spec: str) -> dict[str, str]:
    """`broker.groups=DEBUG,wal=WARNING` -> {"broker.groups": "DEBUG", "wal": "WARNING"}."""
    levels = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        name, sep, level = part.partition("=")
        level = level.strip().upper()
        if not sep or logging.getLevelName(level) == f"Level {level}":
            raise ValueError(f"log level setting {part!r} is not LOGGER=LEVEL")
        levels[name.strip()] = level
    return levels


def configure(level: str, fmt: str, per_logger: str) -> None:
    if fmt not in ("text", "json"):
        raise ValueError(f"log format {fmt!r}: use text or json")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, lvl in parse_levels(per_logger).items():
        logging.getLogger(name).setLevel(lvl)
