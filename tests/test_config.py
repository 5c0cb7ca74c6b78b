"""Tests of configuration loading: the example file, defaults, secrets, every kind of mistake."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from drgreen_poller.config import (
    CREDENTIALS_ENV,
    Config,
    config_path,
    duration,
    is_whsec,
    load_config,
)
from drgreen_poller.config_sinks import WebhookSinkConfig
from drgreen_poller.errors import ConfigError
from drgreen_poller.request_signing import ApiCredentials, generate_credentials

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
WHSEC = "whsec_" + base64.b64encode(b"k" * 32).decode()


def _write_secrets(directory: Path, creds: ApiCredentials, holder: str = "main") -> None:
    (directory / f"{holder}.api_key").write_text(creds.api_key + "\n")
    (directory / f"{holder}.secret_key").write_text(creds.secret_key + "\n")
    (directory / "store.whsec").write_text(WHSEC + "\n")


def _minimal(tmp_path: Path, creds: ApiCredentials, extra: str = "") -> Path:
    _write_secrets(tmp_path, creds)
    path = tmp_path / "config.toml"
    daemon = "" if "[daemon]" in extra else '[daemon]\nstate_path = "state.db"\n'
    path.write_text(
        f"""
{daemon}
[[holders]]
name = "main"
api_key_file = "{tmp_path}/main.api_key"
secret_key_file = "{tmp_path}/main.secret_key"
{extra}
"""
    )
    return path


def _problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ or {})
    return info.value.problems


class TestExample:
    def test_example_loads_with_its_defaults(
        self, tmp_path: Path, credentials: ApiCredentials
    ) -> None:
        """config.example.toml loads with its defaults once its systemd credentials exist."""
        _write_secrets(tmp_path, credentials)
        config = load_config(EXAMPLE, {CREDENTIALS_ENV: str(tmp_path)})
        assert config.api.base_url == "https://api.drgreennft.com/api/v1"
        assert (config.api.timeout_s, config.api.requests_per_second, config.api.burst) == (
            15,
            1,
            3,
        )
        assert config.schedule.active_orders_s == 60
        assert config.schedule.stale_after_s == 7 * 86400
        assert config.schedule.terminal_order_statuses == ("DELIVERED", "CANCELLED")
        assert config.schedule.unauthorized_retry_s == 300
        assert config.daemon.health_max_delivery_age_s == 900
        assert config.delivery.retry_schedule_s == (0.0, 60.0, 600.0, 3600.0, 21600.0, 57600.0)
        assert [s.kind for s in config.sinks] == ["webhook", "file"]
        assert isinstance(config.sinks[0], WebhookSinkConfig)
        assert config.sinks[0].secrets[0].value == WHSEC
        assert config.holders[0].api_key.value == credentials.api_key
        assert config.warnings == ()


class TestDefaults:
    def test_minimal_file(self, tmp_path: Path, credentials: ApiCredentials) -> None:
        """A file with only a holder gets every default; relative paths follow the file."""
        config = load_config(_minimal(tmp_path, credentials), {})
        assert isinstance(config, Config)
        assert config.daemon.state_path == tmp_path / "state.db"
        assert config.daemon.first_sync == "seed"
        assert config.schedule.jitter == 0.10
        assert config.schedule.unauthorized_retry_s == 300
        assert config.daemon.health_max_delivery_age_s == 900
        assert config.sinks == ()
        assert any("no" in w and "sinks" in w for w in config.warnings)

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("90s", 90),
            ("30m", 1800),
            ("1h", 3600),
            ("7d", 604800),
            ("250ms", 0.25),
            (45, 45),
            (1.5, 1.5),
        ],
    )
    def test_durations(self, text: str | float, seconds: float) -> None:
        """Durations are strings with a unit or plain seconds."""
        assert duration(text) == seconds

    def test_health_max_delivery_age(self, tmp_path: Path, credentials: ApiCredentials) -> None:
        """[daemon] health_max_delivery_age is read as a duration."""
        extra = '[daemon]\nstate_path = "state.db"\nhealth_max_delivery_age = "30m"'
        config = load_config(_minimal(tmp_path, credentials, extra), {})
        assert config.daemon.health_max_delivery_age_s == 1800

    def test_path_from_env(self) -> None:
        """-c wins, then DRGREEN_POLLER_CONFIG, then the default path."""
        assert config_path("a.toml", {"DRGREEN_POLLER_CONFIG": "b.toml"}) == Path("a.toml")
        assert config_path(None, {"DRGREEN_POLLER_CONFIG": "b.toml"}) == Path("b.toml")
        assert config_path(None, {}) == Path("/etc/drgreen-poller/config.toml")


class TestSecrets:
    def test_from_environment(self, tmp_path: Path, credentials: ApiCredentials) -> None:
        """A secret can come from an environment variable."""
        path = tmp_path / "c.toml"
        path.write_text('[[holders]]\nname = "main"\napi_key_env = "K"\nsecret_key_env = "S"\n')
        config = load_config(path, {"K": credentials.api_key, "S": credentials.secret_key})
        assert config.holders[0].secret_key.source == "environment variable S"

    def test_from_systemd_credentials(self, tmp_path: Path, credentials: ApiCredentials) -> None:
        """With no key given, $CREDENTIALS_DIRECTORY/<holder>.api_key is used."""
        creds_dir = tmp_path / "creds"
        creds_dir.mkdir()
        _write_secrets(creds_dir, credentials)
        path = tmp_path / "c.toml"
        path.write_text('[[holders]]\nname = "main"\n')
        config = load_config(path, {CREDENTIALS_ENV: str(creds_dir)})
        assert config.holders[0].api_key.source == "credential main.api_key"

    def test_inline_warns_and_never_shows_the_value(
        self, tmp_path: Path, credentials: ApiCredentials
    ) -> None:
        """An inline secret works but warns, and the value never appears in repr or messages."""
        path = tmp_path / "c.toml"
        path.write_text(
            f'[[holders]]\nname = "main"\napi_key = "{credentials.api_key}"\n'
            f'secret_key = "{credentials.secret_key}"\n'
        )
        config = load_config(path, {})
        assert any("holders[0].secret_key: secret written inline" in w for w in config.warnings)
        assert credentials.secret_key not in repr(config)

    def test_mismatched_pair(self, tmp_path: Path, credentials: ApiCredentials) -> None:
        """An api_key that is not the public half of the secret_key is caught at load."""
        path = _minimal(tmp_path, credentials)
        (tmp_path / "main.api_key").write_text(generate_credentials().api_key)
        assert _problems(path) == [
            "holders[0]: api_key is not the public key of secret_key (a mixed-up pair?)"
        ]

    def test_whsec_format(self) -> None:
        """A Standard Webhooks secret is whsec_ + base64 of 24 to 64 bytes."""
        assert is_whsec(WHSEC)
        assert not is_whsec("whsec_" + base64.b64encode(b"short").decode())
        assert not is_whsec("not-a-secret")


class TestProblems:
    @pytest.mark.parametrize(
        ("extra", "expected"),
        [
            ('[api]\nburst = "3"', "api.burst: must be an integer, not a string"),
            ('[api]\nbase_url = "ftp://x"', "api.base_url: 'ftp://x' is not an http(s) URL"),
            (
                '[schedule]\nactive_orders = "fast"',
                "schedule.active_orders: 'fast' is not a duration",
            ),
            ("[schedule]\njitter = 0.9", "schedule.jitter: must be between 0 and 0.5, not 0.9"),
            (
                '[schedule]\nunauthorized_retry = "soon"',
                "schedule.unauthorized_retry: 'soon' is not a duration",
            ),
            ("[schedule]\nunauthorized_retry = 0", "schedule.unauthorized_retry: must be"),
            (
                '[daemon]\nhealth_max_delivery_age = "soon"',
                "daemon.health_max_delivery_age: 'soon' is not a duration",
            ),
            (
                "[daemon]\nhealth_max_delivery_age = 0",
                "daemon.health_max_delivery_age: must be more than zero",
            ),
            (
                '[daemon]\nfirst_sync = "all"',
                "daemon.first_sync: must be one of seed, emit; got 'all'",
            ),
            (
                "[delivery]\nretry_schedule = []",
                "delivery.retry_schedule: must be a non-empty array",
            ),
            ("[apii]\nx = 1", "apii: unknown section (did you mean 'api'?)"),
            (
                '[[sinks]]\nname = "s"\nkind = "webhook"\n'
                'url = "http://example.com/hook"\nsecret = "' + WHSEC + '"',
                "sinks[0].url: http:// is only allowed to a loopback address",
            ),
            (
                '[[sinks]]\nname = "s"\nkind = "carrier-pigeon"',
                "sinks[0].kind: 'carrier-pigeon' is not one of",
            ),
            (
                '[[sinks]]\nname = "s"\nkind = ["file"]',
                "sinks[0].kind: ['file'] is not one of webhook, file, command",
            ),
            ('[[sinks]]\nname = "s"\nkind = {}', "sinks[0].kind: {} is not one of"),
            ('[[sinks]]\nname = "s"\nkind = "file"', "sinks[0].path: missing"),
            (
                '[[sinks]]\nname = "s"\nkind = "webhook"\n'
                'url = "https://x.example"\nsecret = "hunter2"',
                "sinks[0].secret: <secret from inline> is not a whsec_ secret",
            ),
        ],
    )
    def test_one_line_naming_the_key(
        self, tmp_path: Path, credentials: ApiCredentials, extra: str, expected: str
    ) -> None:
        """Each mistake is one line that starts with its key path."""
        problems = _problems(_minimal(tmp_path, credentials, extra))
        assert any(p.startswith(expected) for p in problems), problems

    def test_unknown_key_with_suggestion(self, tmp_path: Path, credentials: ApiCredentials) -> None:
        """A misspelt key is named and the likely intended key suggested."""
        problems = _problems(_minimal(tmp_path, credentials, '[schedule]\nactive_order = "60s"'))
        assert problems == ["schedule.active_order: unknown key (did you mean 'active_orders'?)"]

    def test_missing_secret_file(self, tmp_path: Path, credentials: ApiCredentials) -> None:
        """A secret file that does not exist is named with its key path."""
        path = _minimal(tmp_path, credentials)
        os.remove(tmp_path / "main.secret_key")
        assert _problems(path) == [
            f"holders[0].secret_key_file: no such file: {tmp_path}/main.secret_key"
        ]

    def test_every_problem_at_once(self, tmp_path: Path) -> None:
        """Several mistakes are all reported, each on its own line."""
        path = tmp_path / "c.toml"
        path.write_text(
            '[[holders]]\nname = "a"\napi_key_env = "NOPE"\nsecret_key_file = "/nonexistent"\n'
            '[[holders]]\nname = "a"\napi_key = "x"\napi_key_env = "Y"\n'
        )
        problems = _problems(path)
        assert "holders[0].api_key_env: environment variable NOPE is not set or empty" in problems
        assert "holders[0].secret_key_file: no such file: /nonexistent" in problems
        assert "holders[1]: give only one of api_key, api_key_env" in problems
        assert any(p.startswith("holders[1].secret_key: missing") for p in problems)
        assert "holders[1].name: duplicate name 'a' (also holders[0])" in problems

    def test_no_holders(self, tmp_path: Path) -> None:
        """A file without holders is refused."""
        path = tmp_path / "c.toml"
        path.write_text("[daemon]\n")
        assert _problems(path) == ["holders: at least one [[holders]] table is required"]

    @pytest.mark.parametrize(
        ("content", "expected"),
        [(None, "no such file"), ("[daemon\n", "not valid TOML"), (b"\xff\xfe", "not UTF-8")],
    )
    def test_unreadable_file(
        self, tmp_path: Path, content: str | bytes | None, expected: str
    ) -> None:
        """A missing, non-TOML or non-UTF-8 file is one clear line."""
        path = tmp_path / "c.toml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        assert expected in _problems(path)[0]


class TestRepeats:
    def test_repeated_country(self, tmp_path: Path, credentials: ApiCredentials) -> None:
        """A country listed twice would emit every strain event twice: refused at load."""
        extra = 'strain_countries = ["GBR", "ZAF", "GBR"]'
        assert _problems(_minimal(tmp_path, credentials, extra)) == [
            "holders[0].strain_countries: 'GBR' appears more than once"
        ]
