"""The shipped systemd unit, config.example.toml and the README's install steps agree.

The unit is parsed as systemd reads it (a key may repeat), so a credential, the state
directory, the program's path or the config's path changed in one file and not in the others
fails here.
"""

from __future__ import annotations

import base64
import shlex
from pathlib import Path

import pytest

from drgreen_poller.config import CREDENTIALS_ENV, config_path, load_config
from drgreen_poller.config_sinks import FileSinkConfig, WebhookSinkConfig
from drgreen_poller.request_signing import ApiCredentials

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "drgreen-poller.service"
EXAMPLE = ROOT / "config.example.toml"
README = ROOT / "README.md"
WHSEC = "whsec_" + base64.b64encode(b"w" * 32).decode()


def unit_section(text: str, section: str) -> dict[str, list[str]]:
    """Every ``key=value`` of ``[section]``, values in order (comments and blanks skipped)."""
    found: dict[str, list[str]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section:
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.fixture
def service() -> dict[str, list[str]]:
    """The [Service] section of the shipped unit."""
    return unit_section(UNIT.read_text(), "Service")


def _credential_value(name: str, credentials: ApiCredentials) -> str:
    suffix = name.rsplit(".", 1)[-1]
    values = {
        "api_key": credentials.api_key,
        "secret_key": credentials.secret_key,
        "whsec": WHSEC,
    }
    return values[suffix]


class TestExampleUnderTheUnit:
    def test_loads_with_exactly_the_units_credentials(
        self, service: dict[str, list[str]], tmp_path: Path, credentials: ApiCredentials
    ) -> None:
        """The example loads from the files LoadCredential= provides, and uses every one."""
        names = [value.split(":", 1)[0] for value in service["LoadCredential"]]
        for name in names:
            (tmp_path / name).write_text(_credential_value(name, credentials) + "\n")
        config = load_config(EXAMPLE, {CREDENTIALS_ENV: str(tmp_path)})
        used = {h.api_key.source for h in config.holders}
        used |= {h.secret_key.source for h in config.holders}
        webhooks = [s for s in config.sinks if isinstance(s, WebhookSinkConfig)]
        used |= {secret.source for sink in webhooks for secret in sink.secrets}
        assert used == {f"credential {name}" for name in names}
        assert config.warnings == ()

    def test_credentials_come_from_the_readmes_directory(
        self, service: dict[str, list[str]]
    ) -> None:
        """Each LoadCredential= reads /etc/drgreen-poller/credentials/<name>, as the README says."""
        readme = README.read_text()
        for value in service["LoadCredential"]:
            name, _, source = value.partition(":")
            assert source == f"/etc/drgreen-poller/credentials/{name}"
            assert f"/dev/stdin {source}" in readme

    def test_everything_written_is_in_the_state_directory(
        self, service: dict[str, list[str]], tmp_path: Path, credentials: ApiCredentials
    ) -> None:
        """The state file and file sinks lie in /var/lib/<StateDirectory>, the writable place."""
        for name in ("main.api_key", "main.secret_key"):
            (tmp_path / name).write_text(_credential_value(name, credentials))
        (tmp_path / "store.whsec").write_text(WHSEC)
        config = load_config(EXAMPLE, {CREDENTIALS_ENV: str(tmp_path)})
        (state_directory,) = service["StateDirectory"]
        writable = Path("/var/lib") / state_directory
        written = [config.daemon.state_path] + [
            s.path for s in config.sinks if isinstance(s, FileSinkConfig)
        ]
        assert len(written) == 2
        assert all(path.is_relative_to(writable) for path in written)


class TestProgramAndConfigPaths:
    def test_exec_start_runs_the_default_config(self, service: dict[str, list[str]]) -> None:
        """ExecStart runs `drgreen-poller -c <the default config> run`, with nothing before it."""
        (exec_start,) = service["ExecStart"]
        program, flag, path, command = shlex.split(exec_start)
        assert Path(program).name == "drgreen-poller"
        assert (flag, Path(path), command) == ("-c", config_path(None, {}), "run")
        assert "ExecStartPre" not in service

    def test_the_readme_installs_what_exec_start_runs(self, service: dict[str, list[str]]) -> None:
        """The README makes the venv ExecStart's program is in, and installs the config it names."""
        program, _, path, _ = shlex.split(service["ExecStart"][0])
        venv = Path(program).parent.parent
        readme = README.read_text()
        assert Path(program) == venv / "bin" / "drgreen-poller"
        assert f"sudo python3 -m venv {venv}\n" in readme
        assert f"sudo {venv}/bin/pip install .\n" in readme
        assert f"config.example.toml {path}\n" in readme
        assert "sudo install -m 0644 systemd/drgreen-poller.service /etc/systemd/system/" in readme

    def test_the_readme_creates_the_units_user(self, service: dict[str, list[str]]) -> None:
        """The user the unit runs as is the one the README's useradd creates."""
        (user,) = service["User"]
        readme = README.read_text()
        assert service["Group"] == [user]
        assert f"--shell /usr/sbin/nologin {user}\n" in readme
        assert "DynamicUser" not in service

    def test_reload_is_sighup(self, service: dict[str, list[str]]) -> None:
        """`systemctl reload` sends the main process SIGHUP."""
        assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
