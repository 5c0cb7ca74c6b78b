"""``drgreen-poller trigger``'s parts that need no delivery: a sample of each type, valid and
marked as a test; the sinks chosen; what the command says of each outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

from drgreen_poller.changes import Change
from drgreen_poller.commands_contract import _said
from drgreen_poller.config import Config, load_config
from drgreen_poller.contract import EVENT_TYPES
from drgreen_poller.errors import ConfigError
from drgreen_poller.events import envelope
from drgreen_poller.request_signing import ApiCredentials
from drgreen_poller.samples import TEST_ID_PREFIX, sample
from drgreen_poller.sandbox import HolderInfo
from drgreen_poller.trigger import SinkResult, chosen_sinks
from tests.conftest import write_config
from tests.contract_check import problems
from tests.trigger.rig import NOW


class TestSamples:
    @pytest.mark.parametrize("event_type", EVENT_TYPES)
    def test_valid_and_marked(self, event_type: str) -> None:
        """The sample of each type matches its schemas and says test: true, about test_ ids."""
        observation = sample(event_type, holder="shop", country="GBR", now=NOW)
        [change] = observation.changes
        event = envelope(
            holder="shop", resource=observation.resource, sequence=1, change=change,
            observed_at=NOW, obj=observation.obj,
        )  # fmt: skip
        assert problems(event) == []
        assert event["test"] is True
        assert event["resource"]["id"].startswith(TEST_ID_PREFIX)

    def test_real_events_carry_no_mark(self) -> None:
        """An event of the poller's has no test field at all."""
        observation = sample("order.paid", holder="shop", country="GBR", now=NOW)
        event = envelope(
            holder="shop", resource=observation.resource, sequence=1,
            change=Change("order.paid", {"paymentStatus": "PENDING"}), observed_at=NOW,
            obj=observation.obj,
        )  # fmt: skip
        assert "test" not in event
        assert problems(event) == []

    def test_unknown_type(self) -> None:
        """A type the daemon never emits has no sample."""
        with pytest.raises(ConfigError, match=r"unknown event type 'order\.x'"):
            sample("order.x", holder="shop", country="GBR", now=NOW)


class TestChosenSinks:
    def test_every_sink_that_takes_the_type(self, config: Config) -> None:
        """Without --sink: each sink whose filter takes the type."""
        assert [s.name for s in chosen_sinks(config, "order.paid", None)] == ["store", "audit"]
        assert [s.name for s in chosen_sinks(config, "strain.created", None)] == ["audit"]

    @pytest.mark.parametrize(
        ("event_type", "sink", "message"),
        [
            ("order.paid", "nope", "--sink 'nope': no such sink (store, audit)"),
            (
                "strain.created",
                "store",
                "--sink store: its events filter (order.*, client.*) does not take strain.created",
            ),
            ("order.x", "store", "unknown event type 'order.x'"),
        ],
    )
    def test_refusals(self, config: Config, event_type: str, sink: str, message: str) -> None:
        """An unknown sink or type, or a sink that does not take the type: one clear line."""
        with pytest.raises(ConfigError) as caught:
            chosen_sinks(config, event_type, sink)
        (line,) = caught.value.problems
        assert line.startswith(message)

    def test_no_sink_takes_it(self, tmp_path: Path, credentials: ApiCredentials) -> None:
        """No sink at all for the type names every filter."""
        holder = HolderInfo("shop", credentials, user_id="u-1", nft=None)
        path = write_config(tmp_path, "http://127.0.0.1:9/api/v1", holder)
        with pytest.raises(ConfigError, match=r"no sink takes order\.paid"):
            chosen_sinks(load_config(path), "order.paid", None)


class TestWhatTheCommandSays:
    @pytest.mark.parametrize(
        ("result", "daemon", "said"),
        [
            (
                SinkResult("store", "queued", None, None),
                True,
                "queued: the running daemon has not attempted it yet "
                "(see 'drgreen-poller deliveries list --sink store')",
            ),
            (
                SinkResult("store", "queued", None, None),
                False,
                "queued behind deliveries due before it: 'drgreen-poller run' delivers them in "
                "order",
            ),
            (
                SinkResult("store", "pending", "connection refused", "cannot connect to h:1"),
                True,
                "attempt failed (cannot connect to h:1); the daemon retries it on its retry "
                "schedule",
            ),
            (
                SinkResult("store", "delivered", "204", None),
                True,
                "delivered (HTTP 204) by the running daemon",
            ),
        ],
    )
    def test_each_outcome(self, result: SinkResult, daemon: bool, said: str) -> None:
        """Each sink's line says what happened and what happens next."""
        assert _said(result, daemon=daemon) == said
