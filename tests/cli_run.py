"""The command line run to its end in a subprocess, as a user runs it: ``CLI`` and ``run_cli``.

Owns the one way the tests run a ``drgreen-poller`` command to completion and read its exit
code, stdout and stderr. It must not keep a process running, stream its output or send it
signals: a test that does starts its own process with ``CLI``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from asyncio.subprocess import PIPE
from collections.abc import Mapping
from pathlib import Path

CLI = (sys.executable, "-m", "drgreen_poller")


async def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 20.0,
) -> tuple[int, str, str]:
    """Run ``drgreen-poller ARGS`` to its end: its exit code, stdout and stderr as text.

    ``env`` is added to this process's environment; ``timeout_s`` bounds the whole run.
    """
    environ = {**os.environ, **env} if env is not None else None
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=PIPE, stderr=PIPE, cwd=cwd, env=environ
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()
