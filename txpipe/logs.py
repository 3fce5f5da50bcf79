"""Structured logging: JSON lines when stderr is not a terminal (collectors parse them),
one readable line per record when it is. The hot path logs nothing per element; counts go
to Beam metrics."""

from __future__ import annotations

import logging
import sys

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


JsonFormatter.converter = staticmethod(__import__("time").gmtime)


def configure(level: str = "INFO", stream=None) -> None:
    """Configure the root logger once; Beam's own chatter stays at WARNING unless DEBUG."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if stream.isatty():
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s",
                                               "%H:%M:%S"))
    else:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    beam_level = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in ("apache_beam", "google", "urllib3", "absl"):
        logging.getLogger(name).setLevel(beam_level)
