"""The ``[store]`` table: the PostgreSQL database holding the state, and how it is read.

Owns ``StoreConfig`` (the URL as written, the password given apart like every other secret,
the lease of several daemons sharing the database) and the check that a URL is one libpq reads.
Without ``[store]`` the state stays in SQLite at ``daemon.state_path``; nothing here connects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from drgreen_poller.config_fields import (
    Reader,
    Secret,
    positive_duration,
    secret_values,
    string,
    systemd_credential,
)

DEFAULT_LEASE_TTL_S = 30.0


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """``[store]``: the PostgreSQL database holding the state (without it: SQLite at
    ``daemon.state_path``). ``url`` as written (a password in it warns); ``password`` given
    apart (``password_file``, ``password_env`` or the systemd credential ``store.password``),
    None to let libpq decide (peer or trust authentication, ``~/.pgpass``)."""

    url: str = field(repr=False)  # may hold a password: see ``shown``
    password: Secret | None = None
    # Several daemons on the database: a holder's lease lasts this long unless renewed.
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S

    def __repr__(self) -> str:
        return (
            f"StoreConfig(url={self.shown!r}, password={self.password},"
            f" lease_ttl_s={self.lease_ttl_s})"
        )

    @property
    def shown(self) -> str:
        """The URL as messages show it: any password in it replaced by ``***``."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


_STORE_KEYS = {"url", "password", "password_file", "password_env", "lease_ttl"}
STORE_PASSWORD_CREDENTIAL = "store.password"  # noqa: S105 - a credential's name, not a secret


def read_store(r: Reader, value: Any) -> StoreConfig | None:
    """``[store]``: absent, the state stays in SQLite (``None``)."""
    if value is None:
        return None
    with r.table("store", value, _STORE_KEYS) as s:
        url = s.get("url", postgresql_url, None)
        if url is None:
            if "url" not in s and isinstance(value, Mapping):
                s.problem("url", 'missing: set url = "postgresql://USER@HOST:5432/DATABASE"')
            return None
        given = secret_values(s, "password")
        if given is None:
            try:
                credential = systemd_credential(r, STORE_PASSWORD_CREDENTIAL)
            except ValueError as exc:
                s.problem(None, f"credential {STORE_PASSWORD_CREDENTIAL}: {exc}")
                return None
            given = [credential] if credential is not None else []
        if len(given) > 1:
            s.problem("password", "give one value, not an array")
        password = given[0] if given else None
        if urlsplit(url).password is not None:
            if password is not None:
                s.problem("url", f"holds a password and {password.source} gives one: give one")
            r.warnings.append(
                "store.url: password written in the URL; prefer store.password_file or "
                "store.password_env"
            )
        lease_ttl_s = s.get("lease_ttl", positive_duration, DEFAULT_LEASE_TTL_S)
        return StoreConfig(url, password, lease_ttl_s)


def postgresql_url(value: Any) -> str:
    """A ``postgresql://`` (or ``postgres://``) URL that libpq can read."""
    text = string(value)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - reading it checks it (a port that is no number raises)
    except ValueError as exc:
        raise ValueError(f"not a URL libpq can read: {exc}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(
            f"{StoreConfig(text).shown!r} is not a postgresql:// URL "
            '(e.g. "postgresql://drgreen@127.0.0.1:5432/drgreen")'
        )
    import psycopg  # only for a [store] section
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(text)
    except psycopg.ProgrammingError as exc:
        reason = str(exc).replace(text, "the URL").splitlines()[0]
        raise ValueError(f"not a URL libpq can read: {reason}") from None
    return text
