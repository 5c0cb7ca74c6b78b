"""The TOML configuration: ``load_config(path) -> Config``, every section as frozen dataclasses.

Owns the schema of design §6: which sections and keys exist, their defaults, and the checks
that span values (unique names, matching key pairs). Single values are read by
``config_fields`` (each table through a ``Section`` that knows its key path); the ``[[sinks]]``
tables, one type per kind, by ``config_sinks``. Every problem is reported at once, one line
naming its key path (``holders[0].secret_key_file: no such file``), in a ``ConfigError``. No
network I/O.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from drgreen_poller.config_fields import (
    CREDENTIALS_ENV,
    Reader,
    Secret,
    Section,
    check_unique_names,
    choice,
    closest,
    country,
    duration,
    http_url,
    is_whsec,
    listen_address,
    number,
    one_secret,
    order_status,
    positive_duration,
    read_text_file,
    secret_values,
    string,
    string_list,
    type_name,
)
from drgreen_poller.config_sinks import SinkConfig, read_sinks
from drgreen_poller.config_store import StoreConfig, read_store
from drgreen_poller.errors import ConfigError, SigningError
from drgreen_poller.logs import LOG_FORMATS, LogFormat
from drgreen_poller.request_signing import api_key_for, load_public_key

DEFAULT_CONFIG_PATH = Path("/etc/drgreen-poller/config.toml")
CONFIG_ENV = "DRGREEN_POLLER_CONFIG"
FirstSync = Literal["seed", "emit"]
# [daemon] operator_token: shorter than this is refused (it guards requeue and replay).
OPERATOR_TOKEN_MIN_CHARS = 16

__all__ = [
    "CONFIG_ENV",
    "CREDENTIALS_ENV",
    "ApiConfig",
    "Config",
    "DaemonConfig",
    "DeliveryConfig",
    "HolderConfig",
    "ScheduleConfig",
    "Secret",
    "StoreConfig",
    "config_path",
    "duration",
    "is_whsec",
    "load_config",
    "parse_config",
]


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    state_path: Path = Path("/var/lib/drgreen-poller/state.db")
    log_level: str = "info"
    log_format: LogFormat = "auto"
    http_listen: str = "127.0.0.1:9187"
    first_sync: FirstSync = "seed"
    # On stop, polling and delivery wind down together within this; keep it below the unit's
    # TimeoutStopSec (45 s), after which systemd kills the process.
    stop_grace_s: float = 20.0
    # /healthz is 503 while a sink's oldest owed delivery has waited longer than this
    health_max_delivery_age_s: float = 900.0
    # The operator page (GET /) from a non-loopback peer needs this token; None: loopback only
    operator_token: Secret | None = None


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
    # while a holder's key is refused: one probe per this interval (± jitter), nothing else
    unauthorized_retry_s: float = 300.0
    # orderStatus values at which an order leaves the active set (REJECTED approval always does)
    terminal_order_statuses: tuple[str, ...] = ("DELIVERED", "CANCELLED")


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    timeout_s: float = 10.0
    retry_schedule_s: tuple[float, ...] = (0.0, 60.0, 600.0, 3600.0, 21600.0, 57600.0)
    retention_s: float = 30 * 86400.0
    concurrency: int = 16


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
    store: StoreConfig | None = None

    @property
    def state(self) -> Path | StoreConfig:
        """Where the state is: the ``[store]`` database, else the SQLite file at
        ``daemon.state_path``."""
        return self.store if self.store is not None else self.daemon.state_path

    @property
    def state_shown(self) -> str:
        """Where the state is, for messages and logs (a URL's password hidden)."""
        return self.store.shown if self.store is not None else str(self.daemon.state_path)


# --- sections ----------------------------------------------------------------------------------

_TOP_KEYS = {"daemon", "api", "holders", "schedule", "delivery", "sinks", "store"}
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

_DAEMON_KEYS = {
    "state_path",
    "log_level",
    "log_format",
    "http_listen",
    "first_sync",
    "stop_grace",
    "health_max_delivery_age",
    "operator_token",
    "operator_token_file",
    "operator_token_env",
}


def _daemon(r: Reader, value: Any, base_dir: Path) -> DaemonConfig:
    d = DaemonConfig()
    with r.table("daemon", value, _DAEMON_KEYS) as s:
        state = s.get("state_path", string, None)
        return DaemonConfig(
            state_path=(base_dir / state) if state else d.state_path,
            log_level=s.get("log_level", choice("debug", "info", "warning", "error"), d.log_level),
            log_format=cast(LogFormat, s.get("log_format", choice(*LOG_FORMATS), d.log_format)),
            http_listen=s.get("http_listen", listen_address, d.http_listen),
            first_sync=cast(FirstSync, s.get("first_sync", choice("seed", "emit"), d.first_sync)),
            stop_grace_s=s.get("stop_grace", positive_duration, d.stop_grace_s),
            health_max_delivery_age_s=s.get(
                "health_max_delivery_age", positive_duration, d.health_max_delivery_age_s
            ),
            operator_token=_operator_token(s),
        )


def _operator_token(s: Section) -> Secret | None:
    """The operator page's optional token (``operator_token``, ``_file`` or ``_env``)."""
    found = secret_values(s, "operator_token")
    if not found:
        return None
    if len(found) > 1:
        s.problem("operator_token", "give one value, not an array")
    elif len(found[0].value) < OPERATOR_TOKEN_MIN_CHARS:
        s.problem(
            "operator_token",
            f"too short to guess safely: use at least {OPERATOR_TOKEN_MIN_CHARS} characters"
            " (e.g. the output of: openssl rand -hex 24)",
        )
    return found[0]


def _api(r: Reader, value: Any) -> ApiConfig:
    d = ApiConfig()
    with r.table("api", value, {"base_url", "timeout", "requests_per_second", "burst"}) as s:
        rate = s.get("requests_per_second", number(0.001, 1000), d.requests_per_second)
        return ApiConfig(
            base_url=s.get("base_url", http_url, d.base_url).rstrip("/"),
            timeout_s=s.get("timeout", positive_duration, d.timeout_s),
            requests_per_second=float(rate),
            burst=s.get("burst", number(1, 1000, integer=True), d.burst),
        )


def _holders(r: Reader, value: Any) -> tuple[HolderConfig, ...]:
    if value is None or value == []:
        r.problem("holders", "at least one [[holders]] table is required")
        return ()
    if not isinstance(value, list):
        r.problem("holders", f"must be an array of tables ([[holders]]), not {type_name(value)}")
        return ()
    holders = [_holder(r, f"holders[{i}]", item) for i, item in enumerate(value)]
    check_unique_names(r, "holders", [h.name for h in holders])
    _check_key_pairs(r, holders)
    return tuple(holders)


def _holder(r: Reader, path: str, value: Any) -> HolderConfig:
    with r.table(path, value, _HOLDER_KEYS) as s:
        name = s.required_name()
        return HolderConfig(
            name=name,
            api_key=one_secret(s, "api_key", f"{name}.api_key"),
            secret_key=one_secret(s, "secret_key", f"{name}.secret_key"),
            strain_countries=s.get("strain_countries", string_list(country), ("GBR",)),
        )


def _check_key_pairs(r: Reader, holders: list[HolderConfig]) -> None:
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


_INTERVALS = (
    "active_orders",
    "stale_orders",
    "stale_after",
    "pending_kyc",
    "commissions",
    "strains",
    "backoff_base",
    "backoff_max",
    "unauthorized_retry",
)


def _schedule(r: Reader, value: Any) -> ScheduleConfig:
    d = ScheduleConfig()
    with r.table("schedule", value, {*_INTERVALS, "jitter", "terminal_order_statuses"}) as s:
        seconds = {n: s.get(n, positive_duration, getattr(d, f"{n}_s")) for n in _INTERVALS}
        jitter = float(s.get("jitter", number(0, 0.5), d.jitter))
        terminal = s.get(
            "terminal_order_statuses", string_list(order_status), d.terminal_order_statuses
        )
        if seconds["backoff_max"] < seconds["backoff_base"]:
            s.problem("backoff_max", "must not be less than schedule.backoff_base")
        return ScheduleConfig(
            **{f"{n}_s": float(v) for n, v in seconds.items()},
            jitter=jitter,
            terminal_order_statuses=terminal,
        )


def _delivery(r: Reader, value: Any) -> DeliveryConfig:
    d = DeliveryConfig()
    with r.table("delivery", value, {"timeout", "retry_schedule", "retention", "concurrency"}) as s:
        return DeliveryConfig(
            timeout_s=s.get("timeout", positive_duration, d.timeout_s),
            retry_schedule_s=s.get("retry_schedule", _duration_list, d.retry_schedule_s),
            retention_s=s.get("retention", positive_duration, d.retention_s),
            concurrency=s.get("concurrency", number(1, 1000, integer=True), d.concurrency),
        )


def _duration_list(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError('must be a non-empty array of durations, e.g. ["0s", "1m", "10m"]')
    try:
        return tuple(duration(v) for v in value)
    except ValueError as exc:
        raise ValueError(f"an entry is wrong: {exc}") from None


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
    r = Reader(environ, base_dir)
    for key in document:
        if key not in _TOP_KEYS:
            hint = closest(key, _TOP_KEYS)
            r.problem(key, "unknown section" + (f" (did you mean {hint!r}?)" if hint else ""))
    config = Config(
        daemon=_daemon(r, document.get("daemon", {}), base_dir),
        api=_api(r, document.get("api", {})),
        holders=_holders(r, document.get("holders")),
        schedule=_schedule(r, document.get("schedule", {})),
        delivery=_delivery(r, document.get("delivery", {})),
        sinks=read_sinks(r, document.get("sinks")),
        store=read_store(r, document.get("store")),
    )
    config = dataclasses.replace(config, warnings=tuple(r.warnings))
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
        text = read_text_file(path)
    except ValueError as exc:
        hint = f" (pass -c/--config or set {CONFIG_ENV})" if not path.exists() else ""
        raise ConfigError(f"{exc}{hint}") from None
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
        store=config.store,
    )
