"""What a reload (SIGHUP) changes: the difference between the running configuration and a new one.

Owns the comparison, a pure function of two ``Config`` values, and its description for the log.
Applying it belongs to ``service``. What it describes never carries a secret's value, nor a sink's
URL or command (either may hold a token): it says *that* they changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from drgreen_poller.config import Config, DaemonConfig, HolderConfig
from drgreen_poller.config_sinks import SinkConfig, WebhookSinkConfig

# [daemon] keys a running daemon cannot take over: the state it holds open, the socket it listens
# on, and the log pipeline configured at start. A reload keeps their running values and says so.
RESTART_KEYS = ("state_path", "http_listen", "log_level", "log_format")
# Sink fields whose values are not logged (they may carry a token); only their names are.
OPAQUE_SINK_FIELDS = frozenset({"url", "command", "unix_socket", "path"})


@dataclass(frozen=True, slots=True)
class ConfigChanges:
    """What differs, by name; an empty instance means the new file changes nothing."""

    holders_added: tuple[str, ...] = ()
    holders_removed: tuple[str, ...] = ()
    holders_changed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sinks_added: tuple[str, ...] = ()
    sinks_removed: tuple[str, ...] = ()
    sinks_changed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    settings: tuple[str, ...] = ()  # "schedule.active_orders: 60s → 30s"
    restart_required: tuple[str, ...] = ()  # "daemon.state_path"

    @property
    def empty(self) -> bool:
        return not any(getattr(self, f.name) for f in dataclasses.fields(self))

    @property
    def rekeyed(self) -> tuple[str, ...]:
        """Holders given a new key pair (a refused one is probed again at once)."""
        return tuple(name for name, what in self.holders_changed.items() if "keys" in what)

    def log_fields(self) -> dict[str, Any]:
        """The non-empty parts, as fields of the ``config_reloaded`` line (lists, not tuples:
        the console then renders them as a JSON reader sees them)."""
        fields: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict) and value:
                fields[f.name] = {name: list(what) for name, what in value.items()}
            elif isinstance(value, tuple) and value:
                fields[f.name] = list(value)
        return fields


def config_changes(old: Config, new: Config) -> ConfigChanges:
    """Compare the running configuration with a newly loaded one. Pure."""
    old_holders = {h.name: h for h in old.holders}
    new_holders = {h.name: h for h in new.holders}
    old_sinks = {s.name: s for s in old.sinks}
    new_sinks = {s.name: s for s in new.sinks}
    return ConfigChanges(
        holders_added=_added(old_holders, new_holders),
        holders_removed=_added(new_holders, old_holders),
        holders_changed=_changed(old_holders, new_holders, _holder_difference),
        sinks_added=_added(old_sinks, new_sinks),
        sinks_removed=_added(new_sinks, old_sinks),
        sinks_changed=_changed(old_sinks, new_sinks, _sink_difference),
        settings=tuple(_settings(old, new)),
        restart_required=(
            *(
                f"daemon.{key}"
                for key in RESTART_KEYS
                if getattr(old.daemon, key) != getattr(new.daemon, key)
            ),
            *(("store",) if old.store != new.store else ()),  # the database it holds open
        ),
    )


def keep_restart_keys(running: DaemonConfig, new: DaemonConfig) -> DaemonConfig:
    """``new`` with the keys only a restart applies kept at their running values."""
    return dataclasses.replace(new, **{key: getattr(running, key) for key in RESTART_KEYS})


def _added(before: dict[str, Any], after: dict[str, Any]) -> tuple[str, ...]:
    return tuple(name for name in after if name not in before)


def _changed(
    before: dict[str, Any], after: dict[str, Any], difference: Any
) -> dict[str, tuple[str, ...]]:
    changed = {}
    for name, new in after.items():
        if name in before and (what := difference(before[name], new)):
            changed[name] = what
    return changed


def _holder_difference(old: HolderConfig, new: HolderConfig) -> tuple[str, ...]:
    what = []
    if (old.api_key.value, old.secret_key.value) != (new.api_key.value, new.secret_key.value):
        what.append("keys")
    if old.strain_countries != new.strain_countries:
        what.append("strain_countries")
    return tuple(what)


def _sink_difference(old: SinkConfig, new: SinkConfig) -> tuple[str, ...]:
    if old.kind != new.kind:
        return ("kind",)
    what = []
    for f in dataclasses.fields(old):
        if f.name == "secrets":  # the values count, not where they were read from
            if _secret_values(old) != _secret_values(new):
                what.append("secrets")
        elif getattr(old, f.name) != getattr(new, f.name):
            what.append(f.name.removesuffix("_s"))
    return tuple(what)


def _secret_values(sink: SinkConfig) -> list[str]:
    return [s.value for s in sink.secrets] if isinstance(sink, WebhookSinkConfig) else []


def _settings(old: Config, new: Config) -> Iterable[str]:
    """``section.key: old → new`` for each changed value of the plain sections."""
    sections: list[tuple[str, Any, Any]] = [
        ("daemon", old.daemon, new.daemon),
        ("api", old.api, new.api),
        ("schedule", old.schedule, new.schedule),
        ("delivery", old.delivery, new.delivery),
    ]
    for section, before, after in sections:
        for f in dataclasses.fields(before):
            if section == "daemon" and f.name in RESTART_KEYS:
                continue
            was, now = getattr(before, f.name), getattr(after, f.name)
            if was != now:
                key = f.name.removesuffix("_s")
                yield f"{section}.{key}: {_shown(f.name, was)} → {_shown(f.name, now)}"


def _shown(name: str, value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_shown(name, v) for v in value) + "]"
    if name.endswith("_s") and isinstance(value, int | float):
        return f"{value:g}s"
    return str(value)
