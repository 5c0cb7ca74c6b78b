"""The TOML configuration: ``load_config(path) -> Config``, every section as frozen dataclasses.

Owns parsing and validation of design §6: durations, secrets (inline, ``_file``, ``_env`` or
``$CREDENTIALS_DIRECTORY``), URLs and names. Every problem is collected and reported at once as
one line naming its key path (``holders[0].secret_key_file: no such file``) in a ``ConfigError``.
It performs no network I/O and never logs a secret's value.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

from drgreen_poller.errors import ConfigError, SigningError
from drgreen_poller.logs import LOG_FORMATS, LogFormat
from drgreen_poller.signing import api_key_for, load_public_key, webhook_key

DEFAULT_CONFIG_PATH = Path("/etc/drgreen-poller/config.toml")
CONFIG_ENV = "DRGREEN_POLLER_CONFIG"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_COUNTRY_RE = re.compile(r"^[A-Z]{3}$")
_EVENT_GLOB_RE = re.compile(r"^[a-z0-9_.*?\[\]-]+$")

_T = TypeVar("_T")
_D = TypeVar("_D")

FirstSync = Literal["seed", "emit"]
SinkKind = Literal["webhook", "file", "command"]
SignatureScheme = Literal["standard", "hmac-sha256-hex"]


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret value and where it came from (for messages); the value never appears in repr."""

    value: str = field(repr=False)
    source: str

    def __str__(self) -> str:
        return f"<secret from {self.source}>"


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    state_path: Path = Path("/var/lib/drgreen-poller/state.db")
    log_level: str = "info"
    log_format: LogFormat = "auto"
    http_listen: str = "127.0.0.1:9187"
    first_sync: FirstSync = "seed"


@dataclass(frozen=True, slots=True)
class ApiConfig:
    base_url: str = "https://api.drgreennft.com/api/v1"
    timeout_s: float = 15.0
    requests_per_second: float = 1.0
    burst: int = 3


@dataclass(frozen=True, slots=True)
class HolderConfig:
    name: str
    api_key: Secret
    secret_key: Secret
    strain_countries: tuple[str, ...] = ("GBR",)


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    active_orders_s: float = 60.0
    stale_orders_s: float = 1800.0
    stale_after_s: float = 7 * 86400.0
    pending_kyc_s: float = 300.0
    commissions_s: float = 900.0
    strains_s: float = 3600.0
    jitter: float = 0.10
    backoff_base_s: float = 5.0
    backoff_max_s: float = 1800.0
    # orderStatus values at which an order leaves the active set (REJECTED approval always does)
    terminal_order_statuses: tuple[str, ...] = ("DELIVERED", "CANCELLED")


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    timeout_s: float = 10.0
    retry_schedule_s: tuple[float, ...] = (0.0, 60.0, 600.0, 3600.0, 21600.0, 57600.0)
    retention_s: float = 30 * 86400.0
    concurrency: int = 16


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """One ``[[sinks]]`` table; which fields matter depends on ``kind``."""

    name: str
    kind: SinkKind
    events: tuple[str, ...] = ("*",)
    url: str = ""
    allow_remote: bool = False
    secrets: tuple[Secret, ...] = ()
    signature: SignatureScheme = "standard"
    path: Path | None = None
    command: tuple[str, ...] = ()
    timeout_s: float | None = None
    unix_socket: Path | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration file."""

    daemon: DaemonConfig
    api: ApiConfig
    holders: tuple[HolderConfig, ...]
    schedule: ScheduleConfig
    delivery: DeliveryConfig
    sinks: tuple[SinkConfig, ...]
    path: Path | None = None
    warnings: tuple[str, ...] = ()


# --- the validation machinery -----------------------------------------------------------------


class _Reader:
    """Collects problems while values are read; one instance per load."""

    def __init__(self, environ: Mapping[str, str], base_dir: Path) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.environ = environ
        self.base_dir = base_dir  # relative paths in the file are relative to the file

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    @contextmanager
    def table(self, path: str, value: Any, allowed: set[str]) -> Iterator[Mapping[str, Any]]:
        """Check ``value`` is a table whose keys are all in ``allowed``; yield it (or {})."""
        if not isinstance(value, Mapping):
            self.problem(path, f"must be a table, not {_type_name(value)}")
            yield {}
            return
        for key in value:
            if key not in allowed:
                hint = _closest(key, allowed)
                self.problem(
                    _join(path, key), "unknown key" + (f" (did you mean {hint!r}?)" if hint else "")
                )
        yield value

    def get(
        self,
        table: Mapping[str, Any],
        path: str,
        key: str,
        convert: Callable[[Any], _T],
        default: _D,
    ) -> _T | _D:
        """``convert(table[key])``, or ``default`` when absent; a ValueError becomes a problem."""
        if key not in table:
            return default
        try:
            return convert(table[key])
        except ValueError as exc:
            self.problem(_join(path, key), str(exc))
            return default


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(value: Any) -> str:
    names = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


def _closest(key: str, allowed: set[str]) -> str | None:
    matches = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.7)
    return matches[0] if matches else None


# --- converters (raise ValueError with a message that reads after "key: ") ---------------------


def duration(value: Any) -> float:
    """Seconds from ``"90s"``, ``"30m"``, ``"1h"``, ``"7d"``, ``"250ms"`` or a number."""
    if isinstance(value, bool):
        raise ValueError(
            f'must be a duration like "90s" or a number of seconds, not {_type_name(value)}'
        )
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION_RE.match(value)):
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    else:
        raise ValueError(f'{value!r} is not a duration (use e.g. "90s", "30m", "1h", "7d")')
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def positive_duration(value: Any) -> float:
    seconds = duration(value)
    if seconds <= 0:
        raise ValueError("must be more than zero")
    return seconds


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {_type_name(value)}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {_type_name(value)}")
    return value


def _number(
    minimum: float, maximum: float | None = None, *, integer: bool = False
) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (integer and not isinstance(value, int))
        ):
            raise ValueError(
                f"must be {'an integer' if integer else 'a number'}, not {_type_name(value)}"
            )
        if value < minimum or (maximum is not None and value > maximum):
            bound = (
                f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            )
            raise ValueError(f"must be {bound}, not {value}")
        return value

    return convert


def _choice(*options: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}; got {value!r}")
        return str(value)

    return convert


def _string_list(item: Callable[[Any], str]) -> Callable[[Any], tuple[str, ...]]:
    def convert(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise ValueError(f"must be an array, not {_type_name(value)}")
        return tuple(item(v) for v in value)

    return convert


def _order_status(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Z_]+", value):
        raise ValueError(f'{value!r} is not an orderStatus value such as "DELIVERED"')
    return value


def _country(value: Any) -> str:
    if not isinstance(value, str) or not _COUNTRY_RE.match(value):
        raise ValueError(f'{value!r} is not an ISO 3166-1 alpha-3 code such as "GBR"')
    return value


def _event_glob(value: Any) -> str:
    if not isinstance(value, str) or not value or not _EVENT_GLOB_RE.match(value):
        raise ValueError(f'{value!r} is not an event pattern such as "order.*"')
    return value


def _http_url(value: Any) -> str:
    text = _string(value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an http(s) URL")
    return text


def _listen(value: Any) -> str:
    text = _string(value)
    if text == "":
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'{text!r} is not HOST:PORT ("" disables the listener)')
    return text


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at this machine (loopback address or ``localhost``)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- secrets -----------------------------------------------------------------------------------


def _read_secret_file(path_text: str) -> str:
    path = Path(path_text)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"no such file: {path}") from None
    except PermissionError:
        raise ValueError(f"cannot read {path}: permission denied") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory, not a file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    value = text.strip()
    if not value:
        raise ValueError(f"{path} is empty")
    return value


def _secret_values(
    r: _Reader, table: Mapping[str, Any], path: str, key: str
) -> list[Secret] | None:
    """The secret(s) given under ``key``, ``key_file`` or ``key_env``; None when none is given."""
    ways = [k for k in (key, f"{key}_file", f"{key}_env") if k in table]
    if len(ways) > 1:
        r.problem(path, f"give only one of {', '.join(ways)}")
        return []
    if not ways:
        return None
    way = ways[0]
    raw = table[way]
    items = raw if isinstance(raw, list) else [raw]
    secrets: list[Secret] = []
    for index, item in enumerate(items):
        where = _join(path, way) + (f"[{index}]" if isinstance(raw, list) else "")
        if not isinstance(item, str) or not item:
            r.problem(where, f"must be a non-empty string, not {_type_name(item)}")
            continue
        try:
            secrets.append(_resolve_secret(r, way, key, item, where))
        except ValueError as exc:
            r.problem(where, str(exc))
    return secrets


def _resolve_secret(r: _Reader, way: str, key: str, item: str, where: str) -> Secret:
    if way.endswith("_file"):
        return Secret(_read_secret_file(str(r.base_dir / item)), f"file {item}")
    if way.endswith("_env"):
        value = r.environ.get(item, "").strip()
        if not value:
            raise ValueError(f"environment variable {item} is not set or empty")
        return Secret(value, f"environment variable {item}")
    r.warnings.append(f"{where}: secret written inline; prefer {key}_file or {key}_env")
    return Secret(item, "inline")


def _credential(r: _Reader, name: str) -> Secret | None:
    """systemd's ``LoadCredential=``: ``$CREDENTIALS_DIRECTORY/<name>``, when present."""
    directory = r.environ.get(CREDENTIALS_ENV)
    if not directory:
        return None
    path = Path(directory) / name
    if not path.exists():
        return None
    return Secret(_read_secret_file(str(path)), f"credential {name}")


def _one_secret(
    r: _Reader, table: Mapping[str, Any], path: str, key: str, credential: str
) -> Secret:
    found = _secret_values(r, table, path, key)
    if found is None:
        try:
            cred = _credential(r, credential)
        except ValueError as exc:
            r.problem(path, f"credential {credential}: {exc}")
            return Secret("", "missing")
        if cred is None:
            r.problem(
                _join(path, key),
                f"missing: set {key}_file, {key}_env or {key} "
                f"(or provide the systemd credential {credential})",
            )
            return Secret("", "missing")
        return cred
    if len(found) > 1:
        r.problem(_join(path, key), "give one value, not an array")
    return found[0] if found else Secret("", "missing")


# --- sections ----------------------------------------------------------------------------------

_TOP_KEYS = {"daemon", "api", "holders", "schedule", "delivery", "sinks"}
_HOLDER_KEYS = {
    "name",
    "strain_countries",
    "api_key",
    "api_key_file",
    "api_key_env",
    "secret_key",
    "secret_key_file",
    "secret_key_env",
}
_SINK_COMMON = {"name", "kind", "events"}
_SINK_KEYS: dict[str, set[str]] = {
    "webhook": _SINK_COMMON
    | {
        "url",
        "allow_remote",
        "secret",
        "secret_file",
        "secret_env",
        "signature",
        "timeout",
    },
    "file": _SINK_COMMON | {"path"},
    "command": _SINK_COMMON | {"command", "timeout"},
}


def _daemon(r: _Reader, value: Any, base_dir: Path) -> DaemonConfig:
    d = DaemonConfig()
    with r.table("daemon", value, {f for f in DaemonConfig.__slots__}) as t:
        state = r.get(t, "daemon", "state_path", _string, None)
        return DaemonConfig(
            state_path=(base_dir / state) if state else d.state_path,
            log_level=r.get(
                t, "daemon", "log_level", _choice("debug", "info", "warning", "error"), d.log_level
            ),
            log_format=cast(
                LogFormat, r.get(t, "daemon", "log_format", _choice(*LOG_FORMATS), d.log_format)
            ),
            http_listen=r.get(t, "daemon", "http_listen", _listen, d.http_listen),
            first_sync=cast(
                FirstSync, r.get(t, "daemon", "first_sync", _choice("seed", "emit"), d.first_sync)
            ),
        )


def _api(r: _Reader, value: Any) -> ApiConfig:
    d = ApiConfig()
    with r.table("api", value, {"base_url", "timeout", "requests_per_second", "burst"}) as t:
        return ApiConfig(
            base_url=r.get(t, "api", "base_url", _http_url, d.base_url).rstrip("/"),
            timeout_s=r.get(t, "api", "timeout", positive_duration, d.timeout_s),
            requests_per_second=float(
                r.get(t, "api", "requests_per_second", _number(0.001, 1000), d.requests_per_second)
            ),
            burst=r.get(t, "api", "burst", _number(1, 1000, integer=True), d.burst),
        )


def _holders(r: _Reader, value: Any) -> tuple[HolderConfig, ...]:
    if value is None or value == []:
        r.problem("holders", "at least one [[holders]] table is required")
        return ()
    if not isinstance(value, list):
        r.problem("holders", f"must be an array of tables ([[holders]]), not {_type_name(value)}")
        return ()
    holders = [_holder(r, f"holders[{i}]", item) for i, item in enumerate(value)]
    _check_unique_names(r, "holders", [h.name for h in holders])
    _check_key_pairs(r, holders)
    return tuple(holders)


def _holder(r: _Reader, path: str, value: Any) -> HolderConfig:
    with r.table(path, value, _HOLDER_KEYS) as t:
        name = _required_name(r, t, path)
        return HolderConfig(
            name=name,
            api_key=_one_secret(r, t, path, "api_key", f"{name}.api_key"),
            secret_key=_one_secret(r, t, path, "secret_key", f"{name}.secret_key"),
            strain_countries=r.get(t, path, "strain_countries", _string_list(_country), ("GBR",)),
        )


def _required_name(r: _Reader, table: Mapping[str, Any], path: str) -> str:
    name = r.get(table, path, "name", _string, "")
    if "name" not in table:
        r.problem(_join(path, "name"), "missing")
    elif not _NAME_RE.match(name):
        r.problem(_join(path, "name"), f"{name!r} must be 1-64 letters, digits, '-', '_' or '.'")
    return name


def _check_unique_names(r: _Reader, path: str, names: list[str]) -> None:
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name and name in seen:
            r.problem(
                f"{path}[{index}].name", f"duplicate name {name!r} (also {path}[{seen[name]}])"
            )
        seen.setdefault(name, index)


def _check_key_pairs(r: _Reader, holders: list[HolderConfig]) -> None:
    """Each holder's api_key must be the public half of its secret_key, or every call is a 401."""
    for index, holder in enumerate(holders):
        if not holder.api_key.value or not holder.secret_key.value:
            continue
        path = f"holders[{index}]"
        try:
            load_public_key(holder.api_key.value)
        except SigningError as exc:
            r.problem(f"{path}.api_key", f"{exc} (from {holder.api_key.source})")
            continue
        try:
            derived = api_key_for(holder.secret_key.value)
        except SigningError as exc:
            r.problem(f"{path}.secret_key", f"{exc} (from {holder.secret_key.source})")
            continue
        if derived.strip() != holder.api_key.value.strip():
            r.problem(path, "api_key is not the public key of secret_key (a mixed-up pair?)")


def _schedule(r: _Reader, value: Any) -> ScheduleConfig:
    d = ScheduleConfig()
    names = (
        "active_orders",
        "stale_orders",
        "stale_after",
        "pending_kyc",
        "commissions",
        "strains",
        "backoff_base",
        "backoff_max",
    )
    with r.table("schedule", value, {*names, "jitter", "terminal_order_statuses"}) as t:
        seconds = {
            n: r.get(t, "schedule", n, positive_duration, getattr(d, f"{n}_s")) for n in names
        }
        jitter = float(r.get(t, "schedule", "jitter", _number(0, 0.5), d.jitter))
        terminal = r.get(
            t,
            "schedule",
            "terminal_order_statuses",
            _string_list(_order_status),
            d.terminal_order_statuses,
        )
        if seconds["backoff_max"] < seconds["backoff_base"]:
            r.problem("schedule.backoff_max", "must not be less than schedule.backoff_base")
        return ScheduleConfig(
            **{f"{n}_s": float(v) for n, v in seconds.items()},
            jitter=jitter,
            terminal_order_statuses=terminal,
        )


def _delivery(r: _Reader, value: Any) -> DeliveryConfig:
    d = DeliveryConfig()
    with r.table("delivery", value, {"timeout", "retry_schedule", "retention", "concurrency"}) as t:
        schedule = r.get(t, "delivery", "retry_schedule", _duration_list, d.retry_schedule_s)
        return DeliveryConfig(
            timeout_s=r.get(t, "delivery", "timeout", positive_duration, d.timeout_s),
            retry_schedule_s=schedule,
            retention_s=r.get(t, "delivery", "retention", positive_duration, d.retention_s),
            concurrency=r.get(
                t, "delivery", "concurrency", _number(1, 1000, integer=True), d.concurrency
            ),
        )


def _duration_list(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError('must be a non-empty array of durations, e.g. ["0s", "1m", "10m"]')
    try:
        return tuple(duration(v) for v in value)
    except ValueError as exc:
        raise ValueError(f"an entry is wrong: {exc}") from None


def _sinks(r: _Reader, value: Any) -> tuple[SinkConfig, ...]:
    if value is None:
        value = []
    if not isinstance(value, list):
        r.problem("sinks", f"must be an array of tables ([[sinks]]), not {_type_name(value)}")
        return ()
    sinks = [s for i, item in enumerate(value) if (s := _sink(r, f"sinks[{i}]", item)) is not None]
    _check_unique_names(r, "sinks", [s.name for s in sinks])
    if not sinks:
        r.warnings.append("sinks: none configured; events are recorded but delivered nowhere")
    return tuple(sinks)


def _sink(r: _Reader, path: str, value: Any) -> SinkConfig | None:
    kind = value.get("kind") if isinstance(value, Mapping) else None
    if kind not in _SINK_KEYS:
        if isinstance(value, Mapping):
            shown = "missing" if kind is None else f"{kind!r} is not one of webhook, file, command"
            r.problem(_join(path, "kind"), shown)
        else:
            r.problem(path, f"must be a table, not {_type_name(value)}")
        return None
    with r.table(path, value, _SINK_KEYS[kind]) as t:
        name = _required_name(r, t, path)
        events = r.get(t, path, "events", _string_list(_event_glob), ("*",))
        timeout = r.get(t, path, "timeout", positive_duration, None)
        if kind == "webhook":
            return _webhook_sink(r, t, path, name, events, timeout)
        if kind == "file":
            target = r.get(t, path, "path", _string, "")
            if not target:
                r.problem(_join(path, "path"), "missing: the JSON Lines file to append to")
            return SinkConfig(
                name=name, kind="file", events=events, path=r.base_dir / target if target else None
            )
        command = r.get(t, path, "command", _command, ())
        if "command" not in t:
            r.problem(_join(path, "command"), "missing: the program and its arguments, as an array")
        return SinkConfig(
            name=name, kind="command", events=events, command=command, timeout_s=timeout
        )


def _command(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(
            'must be a non-empty array of strings, e.g. ["/usr/local/bin/notify", "--quiet"]'
        )
    return tuple(value)


def _webhook_sink(
    r: _Reader,
    t: Mapping[str, Any],
    path: str,
    name: str,
    events: tuple[str, ...],
    timeout: float | None,
) -> SinkConfig:
    url = r.get(t, path, "url", _http_url, "")
    if "url" not in t:
        r.problem(_join(path, "url"), "missing: the receiver's URL")
    allow_remote = r.get(t, path, "allow_remote", _boolean, False)
    socket_text = r.get(t, path, "unix_socket", _string, "")
    unix_socket = r.base_dir / socket_text if socket_text else None
    local = unix_socket is not None or is_loopback_url(url)
    if url.startswith("http://") and not allow_remote and not local:
        r.problem(
            _join(path, "url"),
            "http:// is only allowed to a loopback address or a unix_socket; "
            "use https:// or set allow_remote = true",
        )
    signature = cast(
        SignatureScheme,
        r.get(t, path, "signature", _choice("standard", "hmac-sha256-hex"), "standard"),
    )
    return SinkConfig(
        name=name,
        kind="webhook",
        events=events,
        url=url,
        allow_remote=allow_remote,
        secrets=_sink_secrets(r, t, path, name, signature),
        signature=signature,
        timeout_s=timeout,
        unix_socket=unix_socket,
    )


def _sink_secrets(
    r: _Reader, t: Mapping[str, Any], path: str, name: str, signature: str
) -> tuple[Secret, ...]:
    """A webhook sink's secret(s): given one way, or the systemd credential ``<name>.whsec``."""
    secrets = _secret_values(r, t, path, "secret")
    if secrets is None:
        try:
            cred = _credential(r, f"{name}.whsec")
        except ValueError as exc:
            r.problem(path, f"credential {name}.whsec: {exc}")
            return ()
        if cred is None:
            r.problem(
                _join(path, "secret"),
                "missing: set secret_file, secret_env or secret "
                f"(or provide the systemd credential {name}.whsec)",
            )
            return ()
        secrets = [cred]
    if signature == "standard":
        for secret in secrets:
            if not is_whsec(secret.value):
                r.problem(
                    _join(path, "secret"),
                    f"{secret} is not a whsec_ secret (24-64 random bytes, base64); "
                    "make one with: drgreen-poller secret",
                )
    return tuple(secrets)


def is_whsec(value: str) -> bool:
    """Whether ``value`` is ``whsec_`` + standard base64 of 24 to 64 bytes."""
    try:
        return 24 <= len(webhook_key(value)) <= 64
    except SigningError:
        return False


# --- loading -----------------------------------------------------------------------------------


def config_path(cli_value: str | None, environ: Mapping[str, str]) -> Path:
    """The config file: ``-c/--config``, else ``$DRGREEN_POLLER_CONFIG``, else the default."""
    return Path(cli_value or environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def parse_config(
    document: Mapping[str, Any], *, base_dir: Path, environ: Mapping[str, str]
) -> Config:
    """Validate a parsed TOML document.

    Raises:
        ConfigError: one line per problem, each naming its key path.
    """
    r = _Reader(environ, base_dir)
    for key in document:
        if key not in _TOP_KEYS:
            hint = _closest(key, _TOP_KEYS)
            r.problem(key, "unknown section" + (f" (did you mean {hint!r}?)" if hint else ""))
    config = Config(
        daemon=_daemon(r, document.get("daemon", {}), base_dir),
        api=_api(r, document.get("api", {})),
        holders=_holders(r, document.get("holders")),
        schedule=_schedule(r, document.get("schedule", {})),
        delivery=_delivery(r, document.get("delivery", {})),
        sinks=_sinks(r, document.get("sinks")),
        warnings=tuple(r.warnings),
    )
    if r.problems:
        raise ConfigError(r.problems)
    return config


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the TOML file at ``path``.

    Raises:
        ConfigError: the file is missing, unreadable, not TOML, or invalid (one line per problem).
    """
    env = os.environ if environ is None else environ
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (pass -c/--config or set {CONFIG_ENV})") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    config = parse_config(document, base_dir=path.parent, environ=env)
    return Config(
        daemon=config.daemon,
        api=config.api,
        holders=config.holders,
        schedule=config.schedule,
        delivery=config.delivery,
        sinks=config.sinks,
        path=path,
        warnings=config.warnings,
    )
