"""Logging set-up: libraries held at WARNING whatever our level, tracebacks without locals."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Iterator

import pytest
import structlog

from drgreen_poller import logs

CUSTOMER = "quillonah.vexbridge@privacy-probe.example"

Configure = Callable[..., io.StringIO]


@pytest.fixture
def configure() -> Iterator[Configure]:
    """``logs.configure`` into a string; the process's logging is put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    library = logging.getLogger("aiosqlite")
    library_level = library.level

    def run(level: str, fmt: logs.LogFormat) -> io.StringIO:
        out = io.StringIO()
        logs.configure(level, fmt, stream=out)
        return out

    try:
        yield run
    finally:
        root.handlers[:], root.level = handlers, level
        library.setLevel(library_level)
        structlog.reset_defaults()


def _crash(record: dict[str, str]) -> None:
    raise ValueError("the upstream answer did not parse")


class TestThirdPartyLoggers:
    def test_held_at_warning_at_debug(self, configure: Configure) -> None:
        """At debug, library debug and info lines are dropped; their warnings still show."""
        out = configure("debug", "json")
        library = logging.getLogger("aiosqlite")
        library.debug("executing %s", ("INSERT", CUSTOMER))
        library.info("chatter")
        library.warning("a real problem")
        structlog.get_logger("drgreen_poller.test").debug("ours_at_debug")
        events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
        assert events == ["a real problem", "ours_at_debug"]

    def test_a_library_that_sets_its_own_level(self, configure: Configure) -> None:
        """A library logger set to DEBUG by someone still cannot write below WARNING."""
        out = configure("debug", "json")
        library = logging.getLogger("aiosqlite")
        library.setLevel(logging.DEBUG)
        library.debug("executing %s", CUSTOMER)
        assert out.getvalue() == ""


class TestTracebacks:
    @pytest.mark.parametrize("fmt", ["json", "console"])
    def test_no_frame_locals(self, configure: Configure, fmt: logs.LogFormat) -> None:
        """A logged exception shows its type and message but not the locals of its frames."""
        out = configure("info", fmt)
        try:
            _crash({"email": CUSTOMER})
        except ValueError:
            structlog.get_logger("drgreen_poller.test").exception("poll_crashed")
        text = out.getvalue()
        assert "the upstream answer did not parse" in text
        assert "ValueError" in text
        assert CUSTOMER not in text


class TestLogOutput:
    def test_a_closed_pipe_is_told_once_and_then_quiet(self) -> None:
        """Lines into a pipe whose reader is gone: the hook runs once, later lines are dropped."""
        read_end, write_end = os.pipe()
        os.close(read_end)
        calls: list[str] = []
        with os.fdopen(write_end, "w") as stream:
            output = logs.LogOutput(stream, lambda: calls.append("closed"))
            assert output.write("a line\n") == len("a line\n")  # buffered, not yet sent
            output.flush()
            assert (output.reader_gone, calls) == (True, ["closed"])
            output.write("x" * 100_000)
            output.flush()
        assert calls == ["closed"]

    def test_a_large_write_into_a_closed_pipe(self) -> None:
        """A write that must reach the pipe at once also counts as the reader being gone."""
        read_end, write_end = os.pipe()
        os.close(read_end)
        with os.fdopen(write_end, "w") as stream:
            output = logs.LogOutput(stream)
            assert output.write("x" * 100_000) == 100_000
            assert output.reader_gone
            assert not output.isatty()
