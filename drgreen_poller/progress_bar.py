"""``poll-once``'s progress bar on a terminal (tqdm), and a log stream that writes above it.

Owns the decision to draw (standard error is a terminal, and not a ``dumb`` one) and keeps log
lines from tearing the bar: each whole line is written with the bar cleared, then the bar is
drawn again. Off a terminal it draws nothing and passes log lines through untouched. It knows
nothing of polling beyond the ``SweepProgress`` values it is handed.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import NoReturn, Self, TextIO, cast

from tqdm import tqdm

from drgreen_poller.progress import SweepProgress

# A tier run shorter than this shows no bar (most runs read one page in a fraction of a second).
BAR_DELAY_S = 0.5


def wants_bar(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether a bar belongs on ``stream``: a terminal that can move its cursor."""
    return stream.isatty() and environ.get("TERM", "") != "dumb"


class _AboveBar:
    """A text stream whose whole lines go out above the bar (tqdm clears and redraws it)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._partial = ""

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            tqdm.write(line, file=self._out)
        return len(text)

    def flush(self) -> None:
        self._out.flush()

    def isatty(self) -> bool:
        return self._out.isatty()

    def fileno(self) -> int:
        return self._out.fileno()


class PollBar:
    """One bar per tier run that reads pages: records read (of how many, on a first sync).

    Args:
        stream: where the bar goes (standard error).
        enabled: draw at all (see ``wants_bar``); when false every call does nothing.
        delay_s: a run shorter than this gets no bar.
    """

    def __init__(self, stream: TextIO, *, enabled: bool, delay_s: float = BAR_DELAY_S) -> None:
        self._stream, self._enabled, self._delay_s = stream, enabled, delay_s
        self._bar: tqdm[NoReturn] | None = None
        self._run: tuple[str, str] | None = None
        # Log lines: above the bar when there is one, else straight through.
        self.log_stream = cast(TextIO, _AboveBar(stream)) if enabled else stream

    def update(self, progress: SweepProgress) -> None:
        """Show ``progress``; a new holder × tier replaces the bar, ``done`` removes it."""
        if not self._enabled:
            return
        run = (progress.holder, progress.tier)
        if progress.done or run != self._run:
            self.close()
        if progress.done:
            return
        if self._bar is None:
            self._run = run
            self._bar = tqdm(
                desc=f"{progress.holder}/{progress.tier}",
                total=progress.expected_records,
                unit=" records",
                file=self._stream,
                leave=False,
                delay=self._delay_s,
                mininterval=0,  # one redraw per page: pages come a few a second at most
                dynamic_ncols=True,
            )
        self._bar.total = progress.expected_records
        self._bar.set_postfix_str(f"{progress.pages} page(s)", refresh=False)
        self._bar.update(progress.records - self._bar.n)

    def close(self) -> None:
        """Remove the bar, if one is drawn."""
        if self._bar is not None:
            self._bar.close()
            self._bar, self._run = None, None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
