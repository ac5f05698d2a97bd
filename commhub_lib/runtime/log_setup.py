"""The process's log set-up: one line per record on stderr, as text (for people) or JSON (for log shippers)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from ..logs import TEXT_FORMAT, AccessLog


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, plus the record's `fields` (access data)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        # json.dumps escapes control characters itself, so one record is always one line.
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(level: str, fmt: str = "text") -> None:
    """Log records to stderr, one line each: text (with timestamps, for people) or JSON (for log shippers)."""
    handler = logging.StreamHandler(sys.stderr)
    AccessLog.text_handler = None
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
        AccessLog.text_handler = handler
    # Neither format shows the caller, thread or process: not collecting them makes each record (one per
    # request) cheaper (the logging docs' "Optimization" settings; record creation was ~1.4 % of an MCP call).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
