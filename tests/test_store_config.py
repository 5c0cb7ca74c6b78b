"""Tests of the ``[store]`` section: choosing PostgreSQL, its URL and its password."""

from __future__ import annotations

from pathlib import Path

import pytest

from drgreen_poller.config import CREDENTIALS_ENV, Config, StoreConfig, load_config
from drgreen_poller.errors import ConfigError
from drgreen_poller.reload import config_changes
from drgreen_poller.request_signing import ApiCredentials
from tests.cli_run import run_cli


def _config(tmp_path: Path, creds: ApiCredentials, store: str) -> Path:
    (tmp_path / "main.api_key").write_text(creds.api_key + "\n")
    (tmp_path / "main.secret_key").write_text(creds.secret_key + "\n")
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
{store}

[daemon]
state_path = "state.db"

[[holders]]
name = "main"
api_key_file = "main.api_key"
secret_key_file = "main.secret_key"
"""
    )
    return path


def _load(path: Path, environ: dict[str, str] | None = None) -> Config:
    return load_config(path, environ or {})


def _store_warnings(config: Config) -> list[str]:
    return [w for w in config.warnings if w.startswith("store")]


def _problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ or {})
    return info.value.problems


URL = "postgresql://drgreen@127.0.0.1:5432/drgreen"


class TestChoosing:
    def test_without_a_store_section_the_state_is_the_sqlite_file(
        self, tmp_path: Path, credentials: ApiCredentials
    ) -> None:
        """No ``[store]``: the state is SQLite at daemon.state_path, as before."""
        config = _load(_config(tmp_path, credentials, ""))
        assert config.store is None
        assert config.state == tmp_path / "state.db"

    def test_a_url_chooses_postgresql(self, tmp_path: Path, credentials: ApiCredentials) -> None:
        """``[store] url`` makes the state that database, with no password unless given."""
        config = _load(_config(tmp_path, credentials, f'[store]\nurl = "{URL}"'))
        assert config.state == StoreConfig(URL, None)
        assert _store_warnings(config) == []

    @pytest.mark.parametrize(
        ("way", "environ"),
        [
            ('password_file = "pg.password"', {}),
            ('password_env = "PGPW"', {"PGPW": "s3cret"}),
            ("", {"CREDENTIALS_DIRECTORY": "creds"}),
        ],
    )
    def test_the_password_is_read_like_every_secret(
        self, tmp_path: Path, credentials: ApiCredentials, way: str, environ: dict[str, str]
    ) -> None:
        """The password comes from a file, the environment or systemd's credential
        ``store.password``, never shown."""
        (tmp_path / "pg.password").write_text("s3cret\n")
        (tmp_path / "creds").mkdir()
        (tmp_path / "creds" / "store.password").write_text("s3cret\n")
        if CREDENTIALS_ENV in environ:
            environ = {CREDENTIALS_ENV: str(tmp_path / "creds")}
        config = _load(_config(tmp_path, credentials, f'[store]\nurl = "{URL}"\n{way}'), environ)
        assert config.store is not None
        assert config.store.password is not None
        assert config.store.password.value == "s3cret"
        assert "s3cret" not in repr(config.store)

    def test_a_password_in_the_url_warns_and_is_never_shown(
        self, tmp_path: Path, credentials: ApiCredentials
    ) -> None:
        """A password inside the URL works but warns, as an inline secret does; ``shown``
        hides it."""
        url = "postgresql://drgreen:s3cret@127.0.0.1:5432/drgreen"
        config = _load(_config(tmp_path, credentials, f'[store]\nurl = "{url}"'))
        assert _store_warnings(config) == [
            "store.url: password written in the URL; prefer store.password_file or "
            "store.password_env"
        ]
        assert config.store is not None
        assert config.store.shown == "postgresql://drgreen:***@127.0.0.1:5432/drgreen"

    def test_inline_password_warns(self, tmp_path: Path, credentials: ApiCredentials) -> None:
        """``password = "..."`` warns like every inline secret."""
        config = _load(_config(tmp_path, credentials, f'[store]\nurl = "{URL}"\npassword = "x"'))
        assert _store_warnings(config) == [
            "store.password: secret written inline; prefer password_file or password_env"
        ]


class TestProblems:
    @pytest.mark.parametrize(
        ("store", "problem"),
        [
            (
                'url = "mysql://a@h/db"',
                "store.url: 'mysql://a@h/db' is not a postgresql:// URL "
                '(e.g. "postgresql://drgreen@127.0.0.1:5432/drgreen")',
            ),
            (
                'url = "postgresql://a:pw@h:port/db"',
                "store.url: not a URL libpq can read: Port could not be cast to integer value "
                "as 'port'",
            ),
            (
                'url = "postgresql://a@h/db?nonsense=1"',
                'store.url: not a URL libpq can read: invalid URI query parameter: "nonsense"',
            ),
            ("url = 5432", "store.url: must be a string, not an integer"),
            ("", 'store.url: missing: set url = "postgresql://USER@HOST:5432/DATABASE"'),
            (
                f'url = "{URL}"\npassword = "a"\npassword_env = "B"',
                "store: give only one of password, password_env",
            ),
            (
                'url = "postgresql://a:pw@h/db"\npassword_env = "PGPW"',
                "store.url: holds a password and environment variable PGPW gives one: give one",
            ),
            (f'url = "{URL}"\nhost = "h"', "store.host: unknown key"),
        ],
    )
    def test_one_line_naming_the_key(
        self, tmp_path: Path, credentials: ApiCredentials, store: str, problem: str
    ) -> None:
        """A bad ``[store]`` is one problem line naming its key, never showing a password."""
        path = _config(tmp_path, credentials, f"[store]\n{store}")
        assert _problems(path, {"PGPW": "x"}) == [problem]

    def test_two_passwords_in_an_array(self, tmp_path: Path, credentials: ApiCredentials) -> None:
        """The password is one value: an array of two is a problem."""
        (tmp_path / "a").write_text("x\n")
        path = _config(tmp_path, credentials, f'[store]\nurl = "{URL}"\npassword_file = ["a", "a"]')
        assert _problems(path) == ["store.password: give one value, not an array"]

    def test_an_unreadable_credential(self, tmp_path: Path, credentials: ApiCredentials) -> None:
        """A systemd credential store.password that is empty is one problem naming it."""
        (tmp_path / "creds").mkdir()
        (tmp_path / "creds" / "store.password").write_text("\n")
        path = _config(tmp_path, credentials, f'[store]\nurl = "{URL}"')
        problems = _problems(path, {CREDENTIALS_ENV: str(tmp_path / "creds")})
        assert problems == [
            f"store: credential store.password: {tmp_path / 'creds' / 'store.password'} is empty"
        ]

    def test_not_a_table(self, tmp_path: Path, credentials: ApiCredentials) -> None:
        """``store = "..."`` instead of a table is one problem."""
        path = _config(tmp_path, credentials, f'store = "{URL}"')
        assert _problems(path) == ["store: must be a table, not a string"]

    async def test_the_cli_exits_2_with_one_line(
        self, tmp_path: Path, credentials: ApiCredentials
    ) -> None:
        """``check-config`` on a bad URL prints one line naming store.url and exits 2."""
        path = _config(tmp_path, credentials, '[store]\nurl = "http://h/db"')
        code, _, err = await run_cli("-c", str(path), "check-config")
        assert code == 2
        assert err.strip().splitlines() == [
            "error: store.url: 'http://h/db' is not a postgresql:// URL "
            '(e.g. "postgresql://drgreen@127.0.0.1:5432/drgreen")'
        ]


class TestReload:
    def test_a_new_store_needs_a_restart(self, tmp_path: Path, credentials: ApiCredentials) -> None:
        """A reload that changes ``[store]`` keeps the running database and says a restart is
        needed."""
        before = _load(_config(tmp_path, credentials, ""))
        after = _load(_config(tmp_path, credentials, f'[store]\nurl = "{URL}"'))
        assert config_changes(before, after).restart_required == ("store",)
        assert config_changes(after, after).restart_required == ()
