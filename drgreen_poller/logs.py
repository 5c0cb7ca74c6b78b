"""Logging set-up: structlog to stdout, JSON off a terminal, console on one; done once per process.

Owns the processor chain and the routing of stdlib loggers (aiohttp, APScheduler) through
structlog. It must never be where a secret or a payload body gets logged: callers log hashes or
sizes instead.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]
LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "json", "console")
LEVELS = ("debug", "info", "warning", "error")


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
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        # JSON lines carry tracebacks as data; the console renderer formats them itself.
        processors=[
            *shared,
            *([structlog.processors.dict_tracebacks] if use_json else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # Third-party chatter only when it matters.
    for noisy in ("aiohttp.access", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
