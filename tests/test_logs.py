"""Logging set-up: libraries held at WARNING whatever our level, tracebacks without locals."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from drgreen_poller import logs
from drgreen_poller.config import Secret

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


class TestJsonLines:
    def test_any_value_makes_one_json_line(self, configure: Configure) -> None:
        """Values the fast encoder refuses (a 70-bit integer, an object) still make a JSON line."""
        out = configure("info", "json")
        log = structlog.get_logger("drgreen_poller.test")
        log.info("big", count=2**70)
        log.info("odd", thing=object(), keyed={1: "one"})
        big, odd = (json.loads(line) for line in out.getvalue().splitlines())
        assert big["count"] == 2**70
        assert odd["thing"].startswith("<object object at")
        assert odd["keyed"] == {"1": "one"}

    def test_a_dataclass_is_its_repr_so_hidden_fields_stay_hidden(
        self, configure: Configure
    ) -> None:
        """A dataclass value is written as its repr: a field kept out of it (a secret's value)
        stays out of the line, as with the stdlib encoder."""
        out = configure("info", "json")
        secret = Secret("whsec_c2VjcmV0LXZhbHVlLW5ldmVyLWxvZ2dlZA==", "env STORE_WHSEC")
        structlog.get_logger("drgreen_poller.test").info("sink_built", secret=secret)
        assert "c2VjcmV0" not in out.getvalue()
        assert json.loads(out.getvalue())["secret"] == repr(secret)

    def test_lines_are_ascii_whatever_the_stream_encodes(self, configure: Configure) -> None:
        """Non-ASCII text is escaped, as the stdlib encoder did: a stream that encodes only
        ASCII (a non-UTF-8 locale) takes the line, and the value reads back unchanged."""
        configure("info", "json")  # puts the process's logging back afterwards
        stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii", write_through=True)
        logs.configure("info", "json", stream=stream)
        structlog.get_logger("drgreen_poller.test").info("holder_added", holder="Zoë 漢")
        line = stream.buffer.getvalue()  # the BytesIO under it
        assert json.loads(line)["holder"] == "Zoë 漢"

    def test_values_no_encoder_takes_still_make_a_line(self, configure: Configure) -> None:
        """A value neither encoder accepts (tuple keys, a cycle) makes a line of reprs; the log
        call does not raise."""
        out = configure("info", "json")
        cycle: list[object] = []
        cycle.append(cycle)
        structlog.get_logger("drgreen_poller.test").info("odd", pairs={(1, 2): "x"}, loop=cycle)
        line = json.loads(out.getvalue())
        assert (line["event"], line["pairs"], line["loop"]) == ("odd", "{(1, 2): 'x'}", "[[...]]")


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


class CountingStream(io.StringIO):
    """A stream that counts its flushes."""

    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


class TestFlushing:
    def test_outside_a_loop_each_line_leaves_at_once(self) -> None:
        """A command's lines (no event loop running) are flushed line by line."""
        stream = CountingStream()
        output = logs.LogOutput(stream)
        for line in ("a\n", "b\n"):
            output.write(line)
            output.flush()
        assert stream.flushes == 2

    async def test_the_lines_of_one_loop_turn_leave_together(self) -> None:
        """In the daemon's loop, the lines of one turn are flushed once, at the turn's end."""
        stream = CountingStream()
        output = logs.LogOutput(stream)
        for line in ("a\n", "b\n", "c\n"):
            output.write(line)
            output.flush()
        assert stream.flushes == 0
        turn_ended = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(turn_ended.set_result, None)  # after the flush
        await turn_ended
        assert (stream.flushes, stream.getvalue()) == (1, "a\nb\nc\n")
        await asyncio.get_running_loop().run_in_executor(None, output.flush)  # another thread
        assert stream.flushes == 2  # at once: no loop runs there


async def _turns(count: int) -> None:
    """Let the running loop go round ``count`` times."""
    loop = asyncio.get_running_loop()
    for _ in range(count):
        turned = loop.create_future()
        loop.call_soon(turned.set_result, None)
        await turned


class FullDisk(io.StringIO):
    """A stream on a full disk: flushing (or also writing) fails with ENOSPC while ``full``."""

    def __init__(self, *, writes_fail: bool = False) -> None:
        super().__init__()
        self.full, self.writes_fail, self.flushes = True, writes_fail, 0

    def write(self, text: str) -> int:
        if self.full and self.writes_fail:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(text)

    def flush(self) -> None:
        self.flushes += 1
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")


class TestFailingStream:
    async def test_a_failed_flush_is_tried_at_the_next_line_not_every_turn(
        self, configure: Configure
    ) -> None:
        """A flush that fails (a full disk) is not retried at every turn of an idle loop (which
        then never sleeps and logs its own error each turn); the lines leave once it works."""
        configure("info", "json")  # puts the process's logging back afterwards
        stream = FullDisk()
        logs.configure("info", "json", stream=stream)
        log = structlog.get_logger("drgreen_poller.test")
        log.info("first")
        await _turns(20)
        assert stream.flushes == 1
        stream.full = False
        log.info("second")
        await _turns(1)
        assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == [
            "first",
            "second",
        ]

    def test_a_log_call_does_not_raise_when_the_stream_fails(self, configure: Configure) -> None:
        """Outside a loop too (a command), a stream that cannot be written or flushed costs the
        line, never the caller's work."""
        configure("info", "json")
        stream = FullDisk(writes_fail=True)
        logs.configure("info", "json", stream=stream)
        structlog.get_logger("drgreen_poller.test").info("lost")
        stream.full = False
        structlog.get_logger("drgreen_poller.test").info("kept")
        assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["kept"]


class TestUrgentLines:
    async def test_a_warning_leaves_at_once_with_what_came_before(self) -> None:
        """In the loop, a warning is flushed at once (a stuck turn still shows it); info waits."""
        stream = CountingStream()
        output = logs.configure("info", "json", stream=stream)
        try:
            log = structlog.get_logger("drgreen_poller.test")
            log.info("delivery_attempt_finished")
            assert stream.flushes == 0
            log.warning("delivery_attempt_failed")
            assert stream.flushes == 1
            events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
            assert events == ["delivery_attempt_finished", "delivery_attempt_failed"]
            log.info("next")
            assert stream.flushes == 1
        finally:
            structlog.reset_defaults()
        assert not output.reader_gone

    def test_a_loop_that_ended_with_a_flush_due_does_not_stop_the_next(self) -> None:
        """A flush left scheduled in a loop that closed does not keep a later loop from flushing."""
        stream = CountingStream()
        output = logs.LogOutput(stream)

        first = asyncio.new_event_loop()

        def line_then_stop() -> None:
            output.write("a\n")
            output.flush()  # due at the next turn, which never comes
            first.stop()

        first.call_soon(line_then_stop)
        first.run_forever()
        first.close()
        assert stream.flushes == 0

        async def line_then_turn() -> None:
            output.write("b\n")
            output.flush()
            turn_ended = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(turn_ended.set_result, None)
            await turn_ended

        asyncio.run(line_then_turn())
        assert stream.flushes == 1


# Every level through structlog, an exception, and library lines through the stdlib.
EMIT_EVERY_LEVEL = """
import logging, sys, structlog
from drgreen_poller import logs
logs.configure("debug", sys.argv[1])
log = structlog.get_logger("drgreen_poller.test")
log.debug("at_debug"); log.info("at_info"); log.warning("at_warning")
log.error("at_error"); log.critical("at_critical")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("at_exception")
logging.getLogger("aiohttp.client").warning("library warning")
logging.getLogger("apscheduler").error("library error")
"""
EXPECTED_PRIORITIES = [7, 6, 4, 3, 2, 3, 4, 3]


def _emit_every_level(tmp_path: Path, fmt: str, journal: str | None) -> str:
    """EMIT_EVERY_LEVEL's stdout; JOURNAL_STREAM names that file unless ``journal`` is given."""
    out_path = tmp_path / "stdout.log"
    with out_path.open("w") as out:
        found = os.fstat(out.fileno())
        env = {**os.environ, logs.JOURNAL_ENV: journal or f"{found.st_dev}:{found.st_ino}"}
        subprocess.run(  # noqa: S603 (our own interpreter running a fixed script)
            [sys.executable, "-c", EMIT_EVERY_LEVEL, fmt],
            stdout=out,
            env=env,
            check=True,
            timeout=30,
        )
    return out_path.read_text()


class TestJournal:
    def test_json_lines_carry_their_priority(self, tmp_path: Path) -> None:
        """Into the journal, each JSON line starts with <N> of its level, library lines too."""
        lines = _emit_every_level(tmp_path, "json", None).splitlines()
        prefixes = [int(line[1 : line.index(">")]) for line in lines]
        assert prefixes == EXPECTED_PRIORITIES
        records = [json.loads(line[line.index(">") + 1 :]) for line in lines]
        assert [r["event"] for r in records][:5] == [
            "at_debug",
            "at_info",
            "at_warning",
            "at_error",
            "at_critical",
        ]
        assert records[6]["event"] == "library warning"

    def test_console_tracebacks_are_prefixed_on_every_line(self, tmp_path: Path) -> None:
        """A console traceback spans lines: every one of them carries the error priority."""
        text = _emit_every_level(tmp_path, "console", None)
        traceback = text[text.index("at_exception") :].split("library warning")[0]
        lines = traceback.splitlines()
        assert len(lines) > 3
        assert all(line.startswith("<3>") for line in lines[1:-1])
        assert "ValueError: boom" in traceback
        assert all(line[:1] == "<" for line in text.splitlines())

    def test_no_prefix_when_the_stream_is_not_the_journal(self, tmp_path: Path) -> None:
        """JOURNAL_STREAM naming another file (an inherited variable) leaves lines plain JSON."""
        other = os.stat(tmp_path)
        text = _emit_every_level(tmp_path, "json", f"{other.st_dev}:{other.st_ino}")
        events = [json.loads(line)["event"] for line in text.splitlines()]
        assert events[0] == "at_debug"
        assert len(events) == len(EXPECTED_PRIORITIES)

    def test_a_stream_without_a_file_is_not_the_journal(self) -> None:
        """A stream with no file descriptor (a StringIO) is never taken for the journal."""
        assert not logs.is_journal(io.StringIO(), {logs.JOURNAL_ENV: "1:2"})
