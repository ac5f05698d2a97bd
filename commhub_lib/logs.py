"""The access log (one line per request) and escaping of what clients put in log fields.

The process's log set-up (text or JSON lines on stderr) is runtime/log_setup.py."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# C0 and C1 control characters, DEL, and the Unicode line/paragraph separators: a client that puts one in a
# path or header could otherwise start a forged line in the log.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape(value: Any) -> str:
    """A value made safe for a one-line log record: control characters become \\xNN / \\uNNNN."""
    text = str(value)
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                       else f"\\u{ord(m.group()):04x}", text)


class AccessLog:
    """The access log, one line per request, on the `commhub.access` logger.

    When logging is exactly what setup_logging made for the text format (its one handler on the root logger,
    no other handler or filter on the way, INFO enabled), the line is formatted and written here directly:
    the very text `logging` would write, without a LogRecord, its `fields` extra and Formatter.format per
    request (that path was ~3.5 % of the server's CPU per MCP call). Any other set-up (the JSON format, a
    test's caplog, a handler added later) gets the LogRecord, with `fields` for the JSON formatter."""

    text_handler: logging.StreamHandler | None = None  # set by setup_logging for the text format

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self._second = -1
        self._second_text = ""

    def info(self, line: str, fields: Callable[[], dict[str, object]]) -> None:
        """Log one access line; `fields` (the structured form) is called only when a LogRecord is made."""
        handler = self.text_handler
        if handler is not None and self._direct(handler):
            now = time.time()
            second = int(now)
            if second != self._second:  # one strftime per second, as logging.Formatter.formatTime would give
                self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
                self._second = second
            text = f"{self._second_text},{int((now - second) * 1000):03d} INFO {self.logger.name}: {line}\n"
            try:
                with handler.lock:  # type: ignore[union-attr]
                    handler.stream.write(text)
                    handler.stream.flush()
                return
            except Exception:  # noqa: BLE001 (a broken stream: let logging report it its own way)
                pass
        self.logger.info("%s", line, extra={"fields": fields()})

    def _direct(self, handler: logging.StreamHandler) -> bool:
        """Whether the one thing logging would do with an INFO record of this logger is `handler` writing it."""
        logger = self.logger
        parent = logger.parent
        root = logging.root
        return (logger.isEnabledFor(logging.INFO) and not logger.handlers and not logger.filters
                and logger.propagate and parent is not None and parent.parent is root and not parent.handlers
                and not parent.filters and parent.propagate and not root.filters and len(root.handlers) == 1
                and root.handlers[0] is handler and not handler.filters and handler.level <= logging.INFO
                and handler.formatter is not None and handler.formatter._fmt == TEXT_FORMAT
                and handler.formatter.converter is time.localtime)


ACCESS_LOG = AccessLog(logging.getLogger("commhub.access"))


def log_access(remote: str | None, method: str, path: str, status: int, elapsed_ms: float,
               calls: list[tuple[str, str]] | None = None, alias: str | None = None) -> None:
    """One access line per request; MCP requests add what was called, as whom, and how it ended.

    Every field a client controls is escaped, so a CR/LF in a path cannot forge a log line."""
    remote_text, path = escape(remote), escape(path)
    line = f"{remote_text} {method} {path} {status} {elapsed_ms:.1f}ms"
    alias_text = ""
    if calls:
        calls = [(escape(c), escape(o)) for c, o in calls]
        alias_text = escape(alias or "-")
        line += (f" mcp={','.join(c for c, _ in calls)} alias={alias_text}"
                 f" outcome={','.join(o for _, o in calls)}")

    def fields() -> dict[str, object]:
        out: dict[str, object] = {"remote": remote, "method": method, "path": path, "status": status,
                                  "ms": round(elapsed_ms, 1)}
        if calls:
            out["mcp"] = [{"call": c, "outcome": o} for c, o in calls]
            out["alias"] = alias_text
        return out

    ACCESS_LOG.info(line, fields)
