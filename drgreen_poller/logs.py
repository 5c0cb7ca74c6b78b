"""Logging set-up: structlog to stdout, JSON off a terminal, console on one; done once per process.

Owns the processor chain and the routing of stdlib loggers (aiohttp, APScheduler, aiosqlite)
through structlog, held at WARNING whatever our level. When the stream is systemd's journal
(``$JOURNAL_STREAM`` names it), every line starts with its syslog priority (``<4>``), so
``journalctl -p warning`` filters. It must never be where a secret, a
payload body or a customer's data gets logged: callers log ids, hashes or sizes instead, and
tracebacks carry no local variables. When the reader of the log stream goes away (a closed
pipe), lines are dropped from then on and the caller is told once. Inside the event loop, a
turn's info lines leave in one write at its end; warnings and worse leave at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal, TextIO, cast

import orjson
import structlog

LogFormat = Literal["auto", "json", "console"]
LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "json", "console")
LEVELS = ("debug", "info", "warning", "error")
# Libraries log through the stdlib; below this they are dropped whatever our level. At debug
# aiosqlite writes every statement with its parameters (customers' names, e-mails, phone
# numbers), and it, asyncio and APScheduler would write thousands of lines a minute.
THIRD_PARTY_FLOOR = logging.WARNING
JOURNAL_ENV = "JOURNAL_STREAM"
# Lines at these levels are written out at once, not at the end of the loop's turn.
URGENT_LEVELS = frozenset({"warning", "error", "critical", "exception"})
# sd-daemon(3)'s priorities, which journald reads from a "<N>" at the start of each line.
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}


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


# orjson writes dataclasses field by field; passed through, they are their repr as with the
# stdlib, so a field kept out of it (``Secret.value``) stays out of the logs.
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS


def _dumps(data: Any, **kwargs: Any) -> str:
    """JSON text of one line: orjson (a delivered event costs one line, several times cheaper
    than the stdlib's), the stdlib for what orjson refuses (an integer beyond 64 bits) and for
    non-ASCII text, which it escapes: a line is ASCII, whatever encoding the stream has."""
    try:
        text = orjson.dumps(data, default=kwargs.get("default"), option=_ORJSON_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return _stdlib_dumps(data, kwargs)
    return text if text.isascii() else _stdlib_dumps(data, kwargs)


def _stdlib_dumps(data: dict[str, Any], kwargs: dict[str, Any]) -> str:
    try:
        return json.dumps(data, separators=(",", ":"), **kwargs)
    except (TypeError, ValueError):  # tuple keys, a cycle: the line still leaves, as reprs
        values = {str(k): v if isinstance(v, str) else repr(v) for k, v in data.items()}
        return json.dumps(values, separators=(",", ":"))


class LogOutput:
    """The stream log lines go to; once its reader is gone (EPIPE) it drops them quietly.

    Inside a running event loop, the lines of one turn of the loop leave together at its end
    (one write for a batch of deliveries' lines, not a write each); elsewhere each line leaves
    at once, and so does a warning or worse (``mark_urgent`` in the processor chain tells), with
    whatever was buffered before it. A SIGKILL, or the watchdog's SIGABRT in a stuck turn, can
    thus lose a turn's info lines, never a line that says what went wrong.

    Args:
        out: the real stream.
        on_closed: called once, from whichever thread met the closed pipe (``run`` stops).
    """

    def __init__(self, out: TextIO, on_closed: Callable[[], None] = lambda: None) -> None:
        self._out = out
        self._hooks = [on_closed]
        self._lock = threading.Lock()
        # The loop a flush is scheduled in (None: none is); another loop schedules its own.
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        self._urgent = False  # the line being written is a warning or worse: flush it at once
        self.reader_gone = False

    def mark_urgent(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        """A structlog processor (after ``add_log_level``): a warning or worse leaves at once."""
        if event_dict.get("level", method_name) in URGENT_LEVELS:
            self._urgent = True
        return event_dict

    def write(self, text: str) -> int:
        try:
            return self._out.write(text)
        except BrokenPipeError:
            self._gone()
            return len(text)
        except OSError:  # a full disk: the line is lost, never the caller's work
            return len(text)

    def flush(self) -> None:
        """Flush now, or at the end of this turn of the running event loop (once per turn)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: a command, or SQLite's thread
            self._flush_now()
            return
        if self._urgent:
            self._urgent = False
            self._flush_now()
        elif self._flush_loop is not loop:
            self._flush_loop = loop
            loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_loop, self._urgent = None, False
        try:
            self._out.flush()
        except BrokenPipeError:
            self._gone()
        except OSError:
            # A full disk: what is buffered is tried again at the next line. Raised in the loop,
            # its handler would log it, that line's flush fail again, and so on every turn.
            pass

    def isatty(self) -> bool:
        return self._out.isatty()

    def _gone(self) -> None:
        # /dev/null in the pipe's place: later lines, and the interpreter's last flush of
        # what is still buffered, go nowhere instead of failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._out.fileno())
        os.close(devnull)
        with self._lock:  # two threads may meet the closed pipe: the hook runs once
            hooks, self._hooks = self._hooks, []
            self.reader_gone = True
        for hook in hooks:
            hook()


def is_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether ``stream`` is the journal: ``$JOURNAL_STREAM`` ("DEV:INO") names its file.

    Compared, not just present: a child of a service inherits the variable while its own
    output may go to a pipe or a file.
    """
    dev, _, ino = environ.get(JOURNAL_ENV, "").partition(":")
    try:
        found = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # a StringIO, a closed or detached stream
        return False
    return f"{found.st_dev}:{found.st_ino}" == f"{dev}:{ino}"


class JournalPriority:
    """A renderer wrapped so each line it makes starts with its level's ``<N>`` priority.

    Every physical line gets the prefix (a console traceback is several), since journald
    reads the priority line by line.
    """

    def __init__(self, renderer: structlog.typing.Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> str:
        level = str(event_dict.get("level", method_name))
        prefix = f"<{PRIORITIES.get(level, PRIORITIES['info'])}>"
        text = str(self._renderer(logger, method_name, event_dict))
        return prefix + text.replace("\n", "\n" + prefix)


def configure(
    level: str = "info",
    fmt: LogFormat = "auto",
    stream: TextIO | None = None,
    on_closed: Callable[[], None] = lambda: None,
    environ: Mapping[str, str] | None = None,
) -> LogOutput:
    """Configure structlog and the stdlib root logger; returns the stream lines go to.

    Args:
        level: one of ``LEVELS``.
        fmt: ``json``, ``console``, or ``auto`` (console on a terminal, JSON otherwise).
        stream: where lines go; standard output by default.
        on_closed: called once if the stream's reader goes away (``run | grep -m1 ...``).
        environ: where ``$JOURNAL_STREAM`` is read; the process environment by default.
    """
    target = stream or sys.stdout
    out = LogOutput(target, on_closed)
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        out.mark_urgent,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if use_json
        # plain tracebacks: rich's (the default when installed) print every frame's locals
        else structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    if is_journal(target, os.environ if environ is None else environ):
        renderer = JournalPriority(renderer)
    structlog.configure(
        # JSON lines carry tracebacks as data; the console renderer formats them itself.
        processors=[*shared, *([_DICT_TRACEBACKS] if use_json else []), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, out)),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(out, renderer, shared, numeric)
    return out


def _route_stdlib(
    out: LogOutput,
    renderer: structlog.typing.Processor,
    shared: list[structlog.typing.Processor],
    level: int,
) -> None:
    """Send the libraries' stdlib records through ``renderer``, from THIRD_PARTY_FLOOR up."""
    handler = logging.StreamHandler(cast(TextIO, out))
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
    root.setLevel(max(level, THIRD_PARTY_FLOOR))
