"""Comparing a reloaded configuration with the running one, tested from tables: which
holders, sinks and settings changed, what only a restart applies, and that no secret or URL
is shown.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from drgreen_poller.config import Config, Secret, load_config
from drgreen_poller.config_sinks import FileSinkConfig, WebhookSinkConfig
from drgreen_poller.reload import config_changes, keep_restart_keys
from drgreen_poller.request_signing import generate_credentials
from drgreen_poller.sandbox import HolderInfo
from tests.conftest import write_config
from tests.reload.running import (
    SECRET,
    sink_toml,
)


class TestConfigChanges:
    @pytest.fixture
    def base(self, shop: HolderInfo, tmp_path: Path) -> Config:
        (tmp_path / "store.whsec").write_text(SECRET)
        sink = sink_toml("store", "http://127.0.0.1:9/hook?token=t0ps3cret")
        return load_config(write_config(tmp_path, "http://127.0.0.1:1/api/v1", shop, extra=sink))

    def test_the_same_file_changes_nothing(self, base: Config) -> None:
        """Loading an unchanged file again is an empty change with nothing to log."""
        changes = config_changes(base, base)
        assert changes.empty
        assert changes.log_fields() == {}

    def test_holders_added_removed_and_rekeyed(self, base: Config) -> None:
        """Holders are compared by name: new names are added, gone ones removed, keys noticed."""
        shop = base.holders[0]
        rekeyed = replace(shop, secret_key=Secret(generate_credentials().secret_key, "x"))
        other = replace(shop, name="other")
        assert config_changes(base, replace(base, holders=(rekeyed, other))).log_fields() == {
            "holders_added": ["other"],
            "holders_changed": {"shop": ["keys"]},
        }
        assert config_changes(base, replace(base, holders=())).holders_removed == ("shop",)
        countries = replace(shop, strain_countries=("PRT",))
        changed = config_changes(base, replace(base, holders=(countries,)))
        assert changed.holders_changed == {"shop": ("strain_countries",)}
        assert changed.rekeyed == ()

    def test_sinks_say_what_changed_but_never_a_secret_or_url(self, base: Config) -> None:
        """A rotated secret and a new URL are named, their values never appear."""
        store = base.sinks[0]
        assert isinstance(store, WebhookSinkConfig)
        rotated = replace(
            store,
            secrets=(Secret("whsec_bmV3IHNlY3JldCB2YWx1ZQ==", "inline"), *store.secrets),
            url="http://127.0.0.1:9/hook?token=n3wt0ken",
        )
        changes = config_changes(base, replace(base, sinks=(rotated,)))
        assert changes.sinks_changed == {"store": ("url", "secrets")}
        shown = json.dumps(changes.log_fields())
        for secret in ("t0ps3cret", "n3wt0ken", "bmV3IHNlY3JldCB2YWx1ZQ", SECRET[6:]):
            assert secret not in shown

    def test_a_sink_of_another_kind_is_a_kind_change(self, base: Config, tmp_path: Path) -> None:
        """A sink keeping its name but changing its kind is reported as a kind change."""
        store = base.sinks[0]
        as_file = FileSinkConfig(name=store.name, path=tmp_path / "events.jsonl")
        changes = config_changes(base, replace(base, sinks=(as_file,)))
        assert changes.sinks_changed == {"store": ("kind",)}

    def test_settings_show_old_and_new_values(self, base: Config) -> None:
        """Plain settings are listed as ``section.key: old → new`` in the file's own terms."""
        new = replace(
            base,
            schedule=replace(base.schedule, active_orders_s=30.0),
            api=replace(base.api, requests_per_second=2.5),
            delivery=replace(base.delivery, retry_schedule_s=(0.0, 60.0)),
        )
        assert config_changes(base, new).settings == (
            "api.requests_per_second: 200.0 → 2.5",
            "schedule.active_orders: 0.2s → 30s",
            "delivery.retry_schedule: [0s, 60s, 600s, 3600s, 21600s, 57600s] → [0s, 60s]",
        )

    def test_keys_only_a_restart_applies_are_kept(self, base: Config) -> None:
        """state_path, http_listen and logging keep their running values and are listed."""
        moved = replace(
            base.daemon,
            state_path=Path("/elsewhere.db"),
            log_level="debug",
            first_sync="emit",
        )
        changes = config_changes(base, replace(base, daemon=moved))
        assert changes.restart_required == ("daemon.state_path", "daemon.log_level")
        assert changes.settings == ("daemon.first_sync: seed → emit",)
        kept = keep_restart_keys(base.daemon, moved)
        assert (kept.state_path, kept.log_level, kept.first_sync) == (
            base.daemon.state_path,
            base.daemon.log_level,
            "emit",
        )
