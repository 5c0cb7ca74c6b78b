"""Logging set-up: structlog to stdout, JSON off a terminal, console on one; done once per process.

Owns the processor chain and the routing of stdlib loggers (aiohttp, APScheduler, aiosqlite)
through structlog, held at WARNING whatever our level. It must never be where a secret, a
payload body or a customer's data gets logged: callers log ids, hashes or sizes instead, and
tracebacks carry no local variables.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]
LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "json", "console")
LEVELS = ("debug", "info", "warning", "error")
# Libraries log through the stdlib; below this they are dropped whatever our level. At debug
# aiosqlite writes every statement with its parameters (customers' names, e-mails, phone
# numbers), and it, asyncio and APScheduler would write thousands of lines a minute.
THIRD_PARTY_FLOOR = logging.WARNING


def _not_chatter(record: logging.LogRecord) -> bool:
    """Whether a stdlib record is at least ``THIRD_PARTY_FLOOR`` (our own code uses structlog).

    The root logger's level already stops records below the floor; this also stops those of a
    library that sets its own logger's level.
    """
    return record.levelno >= THIRD_PARTY_FLOOR


# Tracebacks as JSON data, without the locals of each frame (structlog shows them by default):
# a frame's locals hold customers' records, request bodies and keys.
_DICT_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def configure(level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger.

    Args:
        level: one of ``LEVELS``.
        fmt: ``json``, ``console``, or ``auto`` (console on a terminal, JSON otherwise).
        stream: where lines go; standard output by default.
    """
    out = stream or sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        # plain tracebacks: rich's (the default when installed) print every frame's locals
        else structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        # JSON lines carry tracebacks as data; the console renderer formats them itself.
        processors=[*shared, *([_DICT_TRACEBACKS] if use_json else []), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.addFilter(_not_chatter)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Also spares the libraries formatting what would be dropped (aiosqlite: every statement).
    root.setLevel(max(numeric, THIRD_PARTY_FLOOR))
