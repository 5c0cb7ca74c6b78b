"""The ``[[sinks]]`` tables: one configuration type per kind of sink, and how each is read.

Owns which keys each kind takes (``webhook``, ``file``, ``command``), their defaults, and the
checks on them (http:// only to loopback or a unix socket, ``whsec_`` secrets for the standard
signature, absolute unix socket paths). Single values are read by ``config_fields``; the file
as a whole by ``config``. It builds no sink: ``sinks.build_sinks`` does, from these types.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

from drgreen_poller.config_fields import (
    Reader,
    Secret,
    Section,
    boolean,
    check_unique_names,
    choice,
    event_glob,
    http_url,
    is_loopback_url,
    is_whsec,
    positive_duration,
    secret_values,
    string,
    string_list,
    systemd_credential,
    type_name,
)

SinkKind = Literal["webhook", "file", "command"]
SignatureScheme = Literal["standard", "hmac-sha256-hex"]
ALL_EVENTS = ("*",)
# sun_path holds 108 bytes on Linux, the terminating NUL included.
UNIX_SOCKET_MAX_BYTES = 107


@dataclass(frozen=True, slots=True)
class WebhookSinkConfig:
    """A ``kind = "webhook"`` sink: signed HTTP POSTs to ``url`` (or over ``unix_socket``)."""

    kind: ClassVar[Literal["webhook"]] = "webhook"
    name: str
    url: str
    secrets: tuple[Secret, ...]
    events: tuple[str, ...] = ALL_EVENTS
    allow_remote: bool = False
    signature: SignatureScheme = "standard"
    timeout_s: float | None = None  # None: [delivery] timeout
    unix_socket: Path | None = None


@dataclass(frozen=True, slots=True)
class FileSinkConfig:
    """A ``kind = "file"`` sink: JSON Lines appended to ``path``."""

    kind: ClassVar[Literal["file"]] = "file"
    name: str
    path: Path
    events: tuple[str, ...] = ALL_EVENTS


@dataclass(frozen=True, slots=True)
class CommandSinkConfig:
    """A ``kind = "command"`` sink: runs ``command`` with the event on its standard input."""

    kind: ClassVar[Literal["command"]] = "command"
    name: str
    command: tuple[str, ...]
    events: tuple[str, ...] = ALL_EVENTS
    timeout_s: float | None = None  # None: [delivery] timeout


SinkConfig = WebhookSinkConfig | FileSinkConfig | CommandSinkConfig

_COMMON = {"name", "kind", "events"}
_KEYS: dict[str, set[str]] = {
    "webhook": _COMMON
    | {
        "url",
        "allow_remote",
        "secret",
        "secret_file",
        "secret_env",
        "signature",
        "timeout",
        "unix_socket",
    },
    "file": _COMMON | {"path"},
    "command": _COMMON | {"command", "timeout"},
}


def read_sinks(r: Reader, value: Any) -> tuple[SinkConfig, ...]:
    """Every ``[[sinks]]`` table (none is allowed, with a warning)."""
    if value is None:
        value = []
    if not isinstance(value, list):
        r.problem("sinks", f"must be an array of tables ([[sinks]]), not {type_name(value)}")
        return ()
    sinks = [s for i, item in enumerate(value) if (s := _sink(r, f"sinks[{i}]", item)) is not None]
    check_unique_names(r, "sinks", [s.name for s in sinks])
    if not sinks:
        r.warnings.append("sinks: none configured; events are recorded but delivered nowhere")
    return tuple(sinks)


def _sink(r: Reader, path: str, value: Any) -> SinkConfig | None:
    kind = value.get("kind") if isinstance(value, Mapping) else None
    if not isinstance(kind, str) or kind not in _KEYS:  # an array or a table is no kind either
        if isinstance(value, Mapping):
            shown = "missing" if kind is None else f"{kind!r} is not one of webhook, file, command"
            r.problem(f"{path}.kind", shown)
        else:
            r.problem(path, f"must be a table, not {type_name(value)}")
        return None
    with r.table(path, value, _KEYS[kind]) as section:
        name = section.required_name()
        events = section.get("events", string_list(event_glob), ALL_EVENTS)
        if kind == "webhook":
            return _webhook_sink(section, name, events)
        if kind == "file":
            return _file_sink(section, name, events)
        return _command_sink(section, name, events)


def _file_sink(section: Section, name: str, events: tuple[str, ...]) -> FileSinkConfig:
    target = section.get("path", string, "")
    if not target:
        section.problem("path", "missing: the JSON Lines file to append to")
    return FileSinkConfig(name=name, path=section.reader.base_dir / target, events=events)


def _command_sink(section: Section, name: str, events: tuple[str, ...]) -> CommandSinkConfig:
    command = section.get("command", _command, ())
    if "command" not in section:
        section.problem("command", "missing: the program and its arguments, as an array")
    timeout = section.get("timeout", positive_duration, None)
    return CommandSinkConfig(name=name, command=command, events=events, timeout_s=timeout)


def _unix_socket(value: Any) -> Path:
    """An absolute path for AF_UNIX: the socket is the receiver's, never relative to us."""
    text = string(value)
    if not text.startswith("/"):
        raise ValueError(f"must be an absolute path, not {text!r}")
    size = len(os.fsencode(text))
    if size > UNIX_SOCKET_MAX_BYTES:
        raise ValueError(
            f"is {size} bytes long; a unix socket path takes at most {UNIX_SOCKET_MAX_BYTES}"
        )
    return Path(text)


def _command(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(
            'must be a non-empty array of strings, e.g. ["/usr/local/bin/notify", "--quiet"]'
        )
    return tuple(value)


def _webhook_sink(section: Section, name: str, events: tuple[str, ...]) -> WebhookSinkConfig:
    url = section.get("url", http_url, "")
    if "url" not in section:
        section.problem("url", "missing: the receiver's URL")
    allow_remote = section.get("allow_remote", boolean, False)
    # Over a unix socket the URL only gives the Host header and the path: the request is local.
    unix_socket = section.get("unix_socket", _unix_socket, None)
    local = "unix_socket" in section or is_loopback_url(url)
    if url.startswith("http://") and not allow_remote and not local:
        section.problem(
            "url",
            "http:// is only allowed to a loopback address or a unix_socket; "
            "use https:// or set allow_remote = true",
        )
    signature = cast(
        SignatureScheme, section.get("signature", choice("standard", "hmac-sha256-hex"), "standard")
    )
    return WebhookSinkConfig(
        name=name,
        url=url,
        secrets=_sink_secrets(section, name, signature),
        events=events,
        allow_remote=allow_remote,
        signature=signature,
        timeout_s=section.get("timeout", positive_duration, None),
        unix_socket=unix_socket,
    )


def _sink_secrets(section: Section, name: str, signature: str) -> tuple[Secret, ...]:
    """A webhook sink's secret(s): given one way, or the systemd credential ``<name>.whsec``."""
    secrets = secret_values(section, "secret")
    if secrets is None:
        try:
            cred = systemd_credential(section.reader, f"{name}.whsec")
        except ValueError as exc:
            section.problem(None, f"credential {name}.whsec: {exc}")
            return ()
        if cred is None:
            section.problem(
                "secret",
                "missing: set secret_file, secret_env or secret "
                f"(or provide the systemd credential {name}.whsec)",
            )
            return ()
        secrets = [cred]
    if signature == "standard":
        for secret in secrets:
            if not is_whsec(secret.value):
                section.problem(
                    "secret",
                    f"{secret} is not a whsec_ secret (24-64 random bytes, base64); "
                    "make one with: drgreen-poller secret",
                )
    return tuple(secrets)
