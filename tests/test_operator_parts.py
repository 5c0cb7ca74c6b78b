"""The operator page's pure parts: the access rules, the charts, the budget window, and the
rendering of states a running rig rarely shows (a refused key, a pending delivery, a full page)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from drgreen_poller.clock import FakeClock
from drgreen_poller.operator.access import (
    COOKIE,
    carries_token,
    cross_site,
    is_loopback,
    is_loopback_host,
    session_value,
)
from drgreen_poller.operator.charts import (
    Bar,
    bar_chart,
    events_bars,
    hour_keys,
    latency_bars,
)
from drgreen_poller.operator.gather import (
    EVENTS_SHOWN,
    DeliveryFilter,
    EventFilter,
    HolderView,
    Overview,
    SinkView,
    TierView,
)
from drgreen_poller.operator.render import overview_html
from drgreen_poller.ratelimit import TokenBucket, UsageWindow
from drgreen_poller.store import DeliveryRow, TierRun
from drgreen_poller.store.operator_views import DeliveredRow, LoggedEvent

NOW = datetime(2026, 11, 23, 10, 30, tzinfo=UTC)
TOKEN = "a-token-of-enough-length"


class TestLoopback:
    @pytest.mark.parametrize(
        ("peer", "loopback"),
        [
            ("127.0.0.1", True),
            ("127.8.9.10", True),
            ("::1", True),
            ("::ffff:127.0.0.1", True),
            ("::ffff:192.0.2.7", False),
            ("192.0.2.7", False),
            ("fe80::1%eth0", False),
            ("not-an-address", False),
            ("", False),
            (None, False),
        ],
    )
    def test_peer(self, peer: str | None, loopback: bool) -> None:
        """Only loopback peers count as local (IPv4-mapped IPv6 read as IPv4)."""
        assert is_loopback(peer) is loopback

    @pytest.mark.parametrize(
        ("host", "loopback"),
        [
            ("localhost:9187", True),
            ("LOCALHOST", True),
            ("127.0.0.1:9187", True),
            ("[::1]:9187", True),
            ("[::1]", True),
            ("::1", True),
            ("evil.example:9187", False),
            ("192.0.2.7:9187", False),
            ("", False),
            (None, False),
        ],
    )
    def test_host_header(self, host: str | None, loopback: bool) -> None:
        """A Host header passes without a token only when it names this machine by loopback."""
        assert is_loopback_host(host) is loopback


class TestToken:
    def test_bearer_or_cookie(self) -> None:
        """The token is carried as a bearer token or as the cookie's digest, never otherwise."""
        cookie = {COOKIE: session_value(TOKEN)}
        assert carries_token({"Authorization": f"Bearer {TOKEN}"}, {}, TOKEN)
        assert carries_token({"Authorization": f"bearer  {TOKEN}"}, {}, TOKEN)
        assert carries_token({}, cookie, TOKEN)
        assert not carries_token({"Authorization": f"Basic {TOKEN}"}, {}, TOKEN)
        assert not carries_token({}, {COOKIE: TOKEN}, TOKEN)
        assert not carries_token({}, cookie, TOKEN + "-rotated")
        assert TOKEN not in session_value(TOKEN)

    @pytest.mark.parametrize(
        ("headers", "refused"),
        [
            ({}, False),
            ({"Origin": "http://127.0.0.1:9187", "Sec-Fetch-Site": "same-origin"}, False),
            ({"Sec-Fetch-Site": "none"}, False),
            ({"Origin": "null"}, True),
            ({"Origin": "http://127.0.0.1:9188"}, True),
            ({"Sec-Fetch-Site": "same-site"}, True),
        ],
    )
    def test_cross_site(self, headers: dict[str, str], refused: bool) -> None:
        """A POST whose Origin is not the page's, or that the browser marks as from another
        site, is cross-site; one without either header is judged by the form token alone."""
        assert (cross_site(headers, "http://127.0.0.1:9187") is not None) is refused


class TestCharts:
    def test_hours_and_event_bars(self) -> None:
        """The last 24 UTC hours, oldest first, zero where nothing happened."""
        keys = hour_keys(NOW)
        bars = events_bars({"2026-11-23T10": 4, "2026-11-22T11": 1, "2026-11-20T00": 9}, NOW)
        assert (len(keys), keys[0], keys[-1]) == (24, "2026-11-22T11", "2026-11-23T10")
        assert [b.value for b in bars if b.value] == [1.0, 4.0]

    def test_latency_percentiles(self) -> None:
        """Latency per hour: creation to the end of the successful attempt, median and p95."""
        rows = [
            DeliveredRow("2026-11-23T10:00:00.000Z", f"2026-11-23T10:00:{s:02d}.000Z", 500.0)
            for s in range(1, 21)
        ]
        bars = latency_bars(rows, NOW)
        assert bars[-1] == Bar("2026-11-23T10", 10.5, 19.5)
        assert all(b.value == 0 and b.high is None for b in bars[:-1])

    def test_chart_scale_and_labels(self) -> None:
        """The axis tops at a round number, labels are escaped, small seconds show as ms."""
        seconds = bar_chart("<t>", [Bar("2026-11-23T10", 0.004, 0.007)], "s")
        events = bar_chart("events", [Bar("2026-11-23T10", 7.0), Bar("2026-11-23T11", 0.0)])
        empty = bar_chart("none", [])
        assert "&lt;t&gt;" in seconds
        assert "<t>" not in seconds
        assert ">10 ms<" in seconds
        assert "4 ms median, 7 ms p95" in seconds
        assert ">10<" in events
        assert ">1<" in empty
        assert "1,000" in bar_chart("many", [Bar("2026-11-23T10", 720.0)])

    def test_hour_labels_end_with_now(self) -> None:
        """Every sixth hour is labelled, the current one included."""
        day = bar_chart("day", events_bars({}, NOW))
        labels = [m for m in ("10:00<", "04:00<", "22:00<", "16:00<", "11:00<") if f">{m}" in day]
        assert labels == ["10:00<", "04:00<", "22:00<", "16:00<"]


class TestBudgetWindow:
    def test_counts_the_last_minute(self) -> None:
        """Requests leave the count once their slot is older than the window."""
        clock = FakeClock()
        window = UsageWindow(clock, window_s=60, slots=12)
        for _ in range(3):
            window.add()
        clock.advance(30)
        window.add()
        assert window.count() == 4
        clock.advance(31)
        assert window.count() == 1
        clock.advance(600)
        window.add()
        assert window.count() == 1

    async def test_bucket_share_used(self) -> None:
        """The bucket counts each token taken against what its rate allows in a minute."""
        clock = FakeClock()
        bucket = TokenBucket(rate=0.5, burst=3, clock=clock)
        for _ in range(3):
            await bucket.acquire()
        assert bucket.share_used() == pytest.approx(3 / 30)


def _tier(tier: str, failures: int = 0, next_run: float | None = None) -> TierView:
    run = TierRun("shop", tier, None, None, None, failures, "HTTP 500" if failures else None, None)
    return TierView(tier, run, next_run)


def _overview(**changes: object) -> Overview:
    holder = HolderView(
        name="shop<1>",
        refused_since="2026-11-23T08:00:00.000Z",
        rate=1.0,
        requests_last_window=3,
        share_used=0.05,
        tiers=[_tier("active_orders", 2), _tier("strains", next_run=NOW.timestamp() + 4000)],
        active={"active_orders": 2, "stale_orders": 0, "pending_kyc": 1},
    )
    pending = DeliveryRow(
        7, "evt_1", "order.created", "store", "pending", 0, NOW.timestamp() + 5,
        "2026-11-20T10:00:00.000Z", "2026-11-20T10:00:00.000Z", None,
    )  # fmt: skip
    events = [
        LoggedEvent(100 - n, {"id": f"evt_{n}", "type": "order.paid", "holder": "shop",
                              "resource": {"type": "order", "id": f"o{n}"}, "sequence": n,
                              "inferred": n == 0, "observed_at": "2026-11-23T10:00:00.000Z"})
        for n in range(EVENTS_SHOWN)
    ]  # fmt: skip
    found = Overview(
        now=NOW, holders=[holder],
        sinks=[SinkView("store", "webhook", {"pending": 1, "delivering": 0, "failed": 0,
                                             "delivered": 0}, "2026-11-20T10:00:00.000Z")],
        events=events, event_filter=EventFilter("order.*"), deliveries=[pending], attempts={},
        delivery_filter=DeliveryFilter("pending", "store"),
        events_chart=[], latency_chart=[], notice="error: <nope>",
    )  # fmt: skip
    for key, value in changes.items():
        setattr(found, key, value)
    return found


class TestRender:
    def test_rarer_states(self) -> None:
        """A refused key, a failing tier, a pending delivery never attempted (send now), an
        error notice, and a full page of events with the link to older ones."""
        page = overview_html(_overview(), "csrf-token")
        assert "shop&lt;1&gt;" in page
        assert 'class="badge s-refused">refused</span> since' in page
        assert "2 h ago" in page
        assert "3 d ago" in page
        assert "HTTP 500" in page
        assert "in 67 min" in page
        assert ">Send now</button>" in page
        assert "in 5 s" in page
        assert '<p class="notice error" role="status">error: &lt;nope&gt;</p>' in page
        assert "(inferred)" in page
        assert 'href="/?type=order.%2A&amp;before=51#events">older events' in page
        assert '<option value="pending" selected>' in page
        assert "Requeue all failed deliveries (0)</button>" in page
        assert 'id="requeue-all" disabled' in page

    def test_no_notice_and_hours(self) -> None:
        """Without a notice there is no banner; the refusal's age follows its time."""
        changed = replace(_overview().holders[0], refused_since="2026-11-23T07:30:00.000Z")
        page = overview_html(_overview(notice=None, holders=[changed]), "t")
        assert 'role="status"' not in page
        assert "3 h ago" in page
