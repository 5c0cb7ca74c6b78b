"""``sandbox --write-config DIR``: a ready-to-use configuration for trying the daemon locally.

Owns the files written for a sandbox holder: its key pair (0600), a webhook secret, and a
``config.toml`` pointing at the sandbox with short intervals and a JSON Lines sink, and the
commands it then suggests, spelled the way this program was started so they work as printed.
It writes nothing else and never overwrites a config the user has edited (it refuses instead).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drgreen_poller.errors import ConfigError
from drgreen_poller.webhook_signing import generate_webhook_secret

MARKER = "# written by: drgreen-poller sandbox --write-config"
# Where the trial's webhook sink posts: ``listen``'s default address.
WEBHOOK_URL = "http://127.0.0.1:8080/drgreen/events"

CONFIG_TEMPLATE = """{marker}
# A configuration for trying drgreen-poller against the local sandbox ({base_url}).
# Every key is documented in config.example.toml.

[daemon]
state_path = "state.db"
http_listen = ""

[api]
base_url = "{base_url}"

[[holders]]
name = "demo"
api_key_file = "demo.api_key"
secret_key_file = "demo.secret_key"
strain_countries = ["GBR", "ZAF"]

[schedule]
active_orders = "5s"
pending_kyc = "5s"
stale_orders = "1m"
commissions = "15s"
strains = "30s"

[[sinks]]
name = "events"
kind = "file"
path = "events.jsonl"
events = ["*"]

[[sinks]]
name = "store"
kind = "webhook"
url = "{webhook_url}"
secret_file = "store.whsec"
events = ["order.*", "client.*"]
"""


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_trial_config(directory: Path, ready: dict[str, Any]) -> Path:
    """Write the trial files for the sandbox holder announced in ``ready``; returns the config.

    Raises:
        ConfigError: ``directory`` holds a config.toml that this command did not write.
    """
    config = directory / "config.toml"
    if config.exists() and not config.read_text(encoding="utf-8").startswith(MARKER):
        raise ConfigError(f"{config} exists and was not written by --write-config; not touching it")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write_private(directory / "demo.api_key", ready["api_key"] + "\n")
        _write_private(directory / "demo.secret_key", ready["secret_key"] + "\n")
        whsec = directory / "store.whsec"
        if not whsec.exists():
            _write_private(whsec, generate_webhook_secret() + "\n")
        _write_private(
            config,
            CONFIG_TEMPLATE.format(
                marker=MARKER, base_url=ready["base_url"], webhook_url=WEBHOOK_URL
            ),
        )
    except OSError as exc:
        raise ConfigError(f"--write-config {directory}: {exc.strerror or exc}") from exc
    return config


def program_name(argv0: str, executable: str, which: Callable[[str], str | None]) -> str:
    """This program as the user can type it again: its name when that is what ``PATH`` finds,
    else the path it was started by, or ``PYTHON -m drgreen_poller`` for ``python -m``."""
    if Path(argv0).name == "__main__.py":
        return f"{shlex.quote(executable)} -m drgreen_poller"
    name = Path(argv0).name
    found = which(name)
    if found and Path(found).resolve() == Path(argv0).resolve():
        return name
    return shlex.quote(argv0)


def next_steps(config: Path, program: str) -> str:
    """What was written and the commands to try next, one per line, each runnable as printed."""
    directory = config.parent
    dgp = f"{program} -c {shlex.quote(str(config))}"
    return "\n".join(
        [
            f"wrote {config} (holder demo; sinks: a file, {directory / 'events.jsonl'}, and a"
            f" webhook to {WEBHOOK_URL} signed with {directory / 'store.whsec'})",
            "next, each in a terminal of its own (this one keeps the sandbox running):",
            f"  {dgp} listen                  # receives the webhook sink's events",
            f"  {dgp} check-config --online   # validates, then one signed call",
            f"  {dgp} poll-once --dry-run     # first sync: what exists is taken as it is",
            f"  {dgp} run                     # the daemon: events reach listen within seconds",
        ]
    )
