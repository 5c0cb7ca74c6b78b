"""Operator commands over the state database: status, the event log, tracking, online checks.

Owns what ``status``, ``events list``, ``track``, ``listen``'s secrets and ``check-config
--online`` compute (``backup`` and ``restore`` are ``backup.py``'s); each may run while the daemon
runs (SQLite in WAL mode), and the readers never create a state database. Printing and exit
codes belong to the CLI.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from drgreen_poller.clock import SystemClock
from drgreen_poller.config import Config, StoreConfig, duration
from drgreen_poller.config_sinks import WebhookSinkConfig
from drgreen_poller.errors import (
    ConfigError,
    SigningError,
    StoreError,
)
from drgreen_poller.events import Resource, iso_ms
from drgreen_poller.monitoring import HealthInputs, delivery_problems, health_problems
from drgreen_poller.settings import timings
from drgreen_poller.store import ProgressRow, Store, TierRun
from drgreen_poller.store.files import check_writable
from drgreen_poller.store.lineage import Lineage
from drgreen_poller.tiers import TIERS, Tier
from drgreen_poller.webhook_signing import WEBHOOK_SECRET_PREFIX, webhook_key

TRACK_TIERS = {"order": Tier.ACTIVE_ORDERS, "client": Tier.PENDING_KYC}
# A sweep's row is rewritten with every page (at most once a second); one this quiet for longer
# than this (or twice the API timeout, if that is longer) belongs to a daemon that stopped.
SWEEP_STALLED_S = 60.0


def require_state(config: Config) -> Path | StoreConfig:
    """Where the state is, when there is one: a reader or a repair never creates it (a
    PostgreSQL database without it is refused when opened).

    Raises:
        StoreError: no file at ``daemon.state_path``.
    """
    path = config.state
    if isinstance(path, Path) and not path.is_file():
        raise StoreError(
            f"there is no state database at {path} (the daemon creates it when it first "
            "runs; is daemon.state_path right?)"
        )
    return path


def require_writable_state(config: Config) -> Path | StoreConfig:
    """``require_state`` for a repair: first whether it could write there, then whether there
    is a state to repair (an unwritable directory is the first thing to fix).

    Raises:
        StoreError: the state's directory or files cannot be written, or there is no state.
    """
    if isinstance(config.state, Path):
        check_writable(config.state)
    return require_state(config)


async def open_reader(config: Config) -> Store:
    """The existing state database, opened to read (no start of the state recorded)."""
    return await Store.open_reader(require_state(config))


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: an ISO-8601 time (``2026-11-23T10:00Z``) or a duration ago (``2h``, ``7d``).

    Raises:
        ConfigError: neither form.
    """
    try:
        return now - timedelta(seconds=duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: use a time like 2026-11-23T10:00:00Z or a duration like 2h"
        ) from None
    if moment.tzinfo is None:
        raise ConfigError(f"--since {text!r}: add a timezone, e.g. {text}Z for UTC")
    return moment


@dataclass
class TierStatus:
    tier: str
    active: int | None
    last_success_at: str | None
    next_due_at: str | None
    consecutive_failures: int
    last_error: str | None
    sweep: dict[str, Any] | None = None


@dataclass
class HolderStatus:
    name: str
    unauthorized_since: str | None
    tiers: list[TierStatus] = field(default_factory=list)


async def status_report(config: Config, now: datetime | None = None) -> dict[str, Any]:
    """Per holder: active set sizes, last and next poll, failures, sweeps in progress; delivery
    backlog per sink; and whether all is healthy (``healthy``, with the ``problems`` if not).
    ``now`` (the system clock's by default) judges how fresh a sweep's row is, and how late.

    Raises:
        StoreError: there is no state database (a reader never creates one).
    """
    now = now or SystemClock().now()
    store = await open_reader(config)
    try:
        runs = await store.tier_runs()
        sizes = await store.tier_sizes()
        unauthorized = await store.unauthorized_holders()
        backlog = await store.backlog()
        undelivered = await store.undelivered()
        progress = await store.progress_rows()
        lineage = store.lineage
        instances = await _instances(store, config)
    finally:
        await store.close()
    stalled_after_s = max(SWEEP_STALLED_S, 2 * config.api.timeout_s)
    sweeps = {(p.holder, p.tier): sweep_status(p, now, stalled_after_s) for p in progress}
    by_tier = {(r.holder, r.tier): r for r in runs}
    holders = [
        HolderStatus(
            holder.name,
            unauthorized.get(holder.name),
            [_tier_status(holder.name, tier, by_tier, sizes, sweeps) for tier in TIERS],
        )
        for holder in config.holders
    ]
    sinks = {s.name: backlog.get(s.name, {}) for s in config.sinks}
    # The daemon's /healthz rules, judged from the state, plus failed deliveries.
    max_age_s, now_s = config.daemon.health_max_delivery_age_s, now.timestamp()
    problems = [
        *health_problems(
            HealthInputs([h.name for h in config.holders], timings(config), _since(lineage, now)),
            runs,
            unauthorized,
            now_s,
        ),
        *delivery_problems(
            {s: undelivered[s] for s in sinks if s in undelivered}, max_age_s, now_s
        ),
        *failed_deliveries(sinks),
    ]
    return {
        "state_path": config.state_shown,
        "state": {
            "began_at": lineage.began_at,
            "new": lineage.fresh,
            "restored_at": lineage.rebased_at,
            "restore_reason": lineage.rebase_reason,
            "sequence_floor": lineage.sequence_floor,
        },
        "holders": [_holder_json(h) for h in holders],
        "instances": instances,
        "deliveries": sinks,
        "healthy": not problems,
        "problems": problems,
    }


async def _instances(store: Store, config: Config) -> list[dict[str, Any]] | None:
    """The daemons registered on a PostgreSQL database, with the holders each holds (None:
    SQLite, where one daemon alone runs and none registers)."""
    if config.store is None:
        return None
    rows = await store.instances(config.store.lease_ttl_s)
    return [asdict(row) | {"holders": list(row.holders)} for row in rows]


def _since(lineage: Lineage, now: datetime) -> float:
    """When a tier that never succeeded started to be late: when the state began (or now, for
    a state older than that record)."""
    began = lineage.began_at or iso_ms(now)
    return datetime.fromisoformat(began.replace("Z", "+00:00")).timestamp()


def failed_deliveries(backlog: dict[str, dict[str, int]]) -> list[str]:
    """A problem per sink with failed deliveries: nothing retries them until an operator does.

    (``/healthz`` leaves them out: restarting the daemon would not bring them back.)
    """
    return [
        f"sink {sink}: {states['failed']} failed delivery(ies), retried only by an operator "
        "(deliveries list --state failed; deliveries retry --all-failed)"
        for sink, states in backlog.items()
        if states.get("failed")
    ]


_SET_TIERS = (Tier.ACTIVE_ORDERS, Tier.STALE_ORDERS, Tier.PENDING_KYC)


def _tier_status(
    holder: str,
    tier: str,
    runs: dict[tuple[str, str], TierRun],
    sizes: dict[tuple[str, str], int],
    sweeps: dict[tuple[str, str], dict[str, Any]],
) -> TierStatus:
    run = runs.get((holder, tier))
    return TierStatus(
        tier=tier,
        active=sizes.get((holder, tier), 0) if tier in _SET_TIERS else None,
        last_success_at=run.last_success_at if run else None,
        next_due_at=_when(run.next_due_at) if run and run.next_due_at else None,
        consecutive_failures=run.consecutive_failures if run else 0,
        last_error=run.last_error if run else None,
        sweep=sweeps.get((holder, tier)),
    )


def sweep_status(row: ProgressRow, now: datetime, stalled_after_s: float) -> dict[str, Any]:
    """A tier run's progress row as ``status`` shows it: how far, since when, and how fresh.

    ``stalled`` means no page for longer than ``stalled_after_s``: the daemon (or poll-once)
    that wrote it has stopped or is stuck, and the row is left from it.
    """
    updated = datetime.fromisoformat(row.updated_at.replace("Z", "+00:00"))
    updated_s_ago = round(max(0.0, (now - updated).total_seconds()), 1)
    return {
        "started_at": row.started_at,
        "updated_at": row.updated_at,
        "updated_s_ago": updated_s_ago,
        "pages": row.pages,
        "records": row.records,
        "expected_records": row.expected_records,
        "stalled": updated_s_ago > stalled_after_s,
    }


def _when(timestamp: float) -> str:
    return iso_ms(datetime.fromtimestamp(timestamp).astimezone())


def _holder_json(status: HolderStatus) -> dict[str, Any]:
    return {
        "name": status.name,
        "unauthorized_since": status.unauthorized_since,
        "tiers": [vars(t) for t in status.tiers],
    }


async def list_events(
    config: Config, *, patterns: Sequence[str], since: datetime | None, limit: int
) -> list[dict[str, Any]]:
    """The newest ``limit`` matching events, oldest first (a log's order)."""
    store = await open_reader(config)
    try:
        return await store.events(patterns=patterns, since=since, limit=limit)
    finally:
        await store.close()


async def track(
    config: Config, kind: str, entity_id: str, holder: str | None, now: datetime
) -> str:
    """Put an order or client into the active set; returns what was done, in words.

    Raises:
        ConfigError: an unknown holder, an ambiguous one, or an id that is not a UUID.
    """
    name = _holder_name(config, holder)
    try:
        uuid.UUID(entity_id)
    except ValueError:
        raise ConfigError(f"{entity_id!r} is not a Dr Green id (a UUID)") from None
    resource, tier = Resource(kind, entity_id.lower()), TRACK_TIERS[kind]
    store = await Store.open(config.state, sinks=())
    try:
        await store.ensure_holders([name], now)
        known = await store.track(name, resource, tier, now)
    finally:
        await store.close()
    if known:
        return f"{kind} {resource.id} of {name} is now in the {tier} tier"
    return f"{kind} {resource.id} of {name} will be watched from the next {tier} poll"


def _holder_name(config: Config, holder: str | None) -> str:
    names = [h.name for h in config.holders]
    if holder is None:
        if len(names) > 1:
            raise ConfigError(f"several holders are configured; pass --holder ({', '.join(names)})")
        return names[0]
    if holder not in names:
        raise ConfigError(f"--holder {holder!r}: no such holder (configured: {', '.join(names)})")
    return holder


_GLOB_RE = re.compile(r"^[a-z0-9_.*?\[\]-]+$")


def event_patterns(values: Sequence[str] | None) -> list[str]:
    """``--type`` values as glob patterns (default: everything)."""
    patterns = list(values or ["*"])
    for pattern in patterns:
        if not _GLOB_RE.match(pattern):
            raise ConfigError(f"--type {pattern!r} is not an event pattern such as 'order.*'")
    return patterns


def listen_secrets(config: Config | None, given: Sequence[str]) -> list[str]:
    """Secrets for ``listen``: those given (each a well-formed ``whsec_`` secret), else every
    webhook sink's in the configuration.

    Raises:
        ConfigError: a malformed ``--secret`` (one line each, never echoing it), or none given
            and none configured.
    """
    problems = [
        f"--secret{f' #{n}' if len(given) > 1 else ''}: {problem}"
        for n, secret in enumerate(given, 1)
        if (problem := _whsec_problem(secret))
    ]
    if problems:
        raise ConfigError(problems)
    if given:
        return list(given)
    webhooks = [s for s in (config.sinks if config else ()) if isinstance(s, WebhookSinkConfig)]
    found = [secret.value for sink in webhooks for secret in sink.secrets]
    if not found:
        raise ConfigError("listen needs --secret (or a configuration with a webhook sink)")
    return found


def _whsec_problem(secret: str) -> str | None:
    """What is wrong with a ``whsec_`` secret given on the command line (None: nothing)."""
    if not secret.strip():
        return "empty; give a whsec_ secret (make one with: drgreen-poller secret)"
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        return (
            "not a whsec_ secret (for a hmac-sha256-hex sink, pass its configuration "
            "with -c instead of --secret)"
        )
    try:
        size = len(webhook_key(secret))
    except SigningError:
        return "the text after whsec_ is not base64"
    if not 24 <= size <= 64:
        return f"holds {size} bytes; a whsec_ secret holds 24 to 64 (drgreen-poller secret)"
    return None
