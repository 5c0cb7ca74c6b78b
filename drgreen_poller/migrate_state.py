"""``migrate-state``: move a stopped SQLite state into PostgreSQL, every id and sequence kept.

Owns choosing the target (``--to`` with its password options, else the configuration's
``[store]``) and the checks around the copy: the SQLite file exists, no daemon runs on it (its
``StateLock`` is held from before the copy to after it, and the copy reads inside one SQLite
transaction that holds writers off), its schema is brought up to date first. The copy itself,
one PostgreSQL transaction that refuses a target already holding a state, and what is or is not
copied (every table of the SQLite schema; rows ``delivering`` arrive ``pending``, as a restart
makes them) are ``store.copying``'s. Printing belongs to the CLI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from urllib.parse import urlsplit

from drgreen_poller.clock import Clock
from drgreen_poller.config import Config, StoreConfig
from drgreen_poller.config_fields import Secret, read_secret_file
from drgreen_poller.config_store import postgresql_url
from drgreen_poller.errors import ConfigError, StateLocked, StoreError
from drgreen_poller.events import iso_ms
from drgreen_poller.store import StateLock, Store
from drgreen_poller.store.copying import CopyReport, copy_state


def target_of(
    config: Config,
    to: str | None,
    *,
    password_file: str | None,
    password_env: str | None,
    environ: Mapping[str, str],
) -> tuple[StoreConfig, list[str]]:
    """The database to copy into, and warnings: ``--to`` (its password from ``password_file``,
    ``password_env``, the URL or libpq's own ways), else the configuration's ``[store]``.

    Raises:
        ConfigError: no target, a URL libpq cannot read, or a password that cannot be read.
    """
    if to is None:
        if password_file is not None or password_env is not None:
            raise ConfigError("--password-file and --password-env go with --to")
        if config.store is None:
            raise ConfigError(
                "migrate-state: give --to postgresql://USER@HOST:5432/DATABASE, or set [store]"
                " url in the configuration"
            )
        return config.store, []
    try:
        url = postgresql_url(to)
    except ValueError as exc:
        raise ConfigError(f"--to: {exc}") from None
    password = _password(password_file, password_env, environ)
    warnings = []
    if urlsplit(url).password is not None:
        if password is not None:
            raise ConfigError(f"--to: holds a password and {password.source} gives one: give one")
        warnings.append(
            "--to: password written in the URL (other users can read a command line); prefer"
            " --password-file or --password-env"
        )
    return StoreConfig(url, password), warnings


def _password(
    password_file: str | None, password_env: str | None, environ: Mapping[str, str]
) -> Secret | None:
    """The password ``--password-file`` or ``--password-env`` gives (the CLI takes one at most);
    None: libpq's own ways (``PGPASSWORD``, ``~/.pgpass``, peer authentication)."""
    if password_file is not None:
        try:
            return Secret(read_secret_file(password_file), f"file {password_file}")
        except ValueError as exc:
            raise ConfigError(f"--password-file: {exc}") from None
    if password_env is not None:
        value = environ.get(password_env, "").strip()
        if not value:
            raise ConfigError(
                f"--password-env: environment variable {password_env} is not set or empty"
            )
        return Secret(value, f"environment variable {password_env}")
    return None


async def migrate_state(config: Config, target: StoreConfig, clock: Clock) -> CopyReport:
    """Copy the SQLite state at ``daemon.state_path`` into ``target``, all or nothing.

    Raises:
        StoreError: no state at the path, a daemon running on it (``StateLocked``), the target
            unreachable or already holding a state, or the copy failed; one line each.
    """
    source = config.daemon.state_path
    if not source.is_file():
        raise StoreError(f"there is no state database at {source} to migrate (daemon.state_path)")
    lock = StateLock(source)
    try:
        lock.acquire()
    except StateLocked:
        raise StateLocked(
            f"a drgreen-poller is running on {source}: stop it first (migrate-state copies a"
            " stopped state, so that nothing changes under the copy)"
        ) from None
    try:
        store = await Store.open_reader(source, clock=clock)  # brings its schema up to date
        await store.close()
        return await asyncio.to_thread(copy_state, source, target, iso_ms(clock.now()))
    finally:
        lock.release()
