"""The operator page over HTTP (no browser): the real daemon against the sandbox and a failing
receiver; what the page shows, its filters, escaping, who may see it, and the cross-site checks
on its two actions."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from drgreen_poller.config import Config, load_config
from drgreen_poller.errors import ConfigError
from drgreen_poller.operator.app import NOTICES_KEPT
from drgreen_poller.operator.gather import EVENTS_SHOWN
from drgreen_poller.request_signing import ApiCredentials
from drgreen_poller.store import Store
from tests.operator_rig import CSRF_RE, TOKEN, Rig, non_loopback_address, running_daemon
from tests.waiting import eventually

SCRIPT = "<script>alert(1)</script>"


async def _get(rig: Rig, path: str, **headers: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(rig.base + path, headers=headers, allow_redirects=False) as response,
    ):
        return response.status, await response.text()


async def _post(
    rig: Rig, path: str, form: dict[str, str], **headers: str
) -> tuple[int, str, aiohttp.ClientResponse]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            rig.base + path, data=form, headers=headers, allow_redirects=False
        ) as response,
    ):
        return response.status, await response.text(), response


def _events(page: str) -> str:
    """The events section of the main page."""
    return page.split('id="events"')[1]


async def _csrf(rig: Rig, **headers: str) -> str:
    _, page = await _get(rig, "/", **headers)
    found = CSRF_RE.search(page)
    assert found, page[:500]
    return found.group(1)


async def _new_failed_order(rig: Rig) -> str:
    """An order created upstream now; returns its id once its delivery has failed for good."""
    order = rig.box.state.orders.create("shop")

    async def failed() -> bool:
        _, page = await _get(rig, f"/?state=failed&resource={order.id}")
        return order.id in page and "order.created" in page

    await rig.wait_failed()
    await eventually(failed, what="the order's failed delivery", task=rig.daemon, timeout_s=8)
    return order.id


class TestPageShows:
    @pytest.mark.timeout(30)
    async def test_sections_holder_event_and_failed_delivery(self, tmp_path: Path) -> None:
        """The page lists the holder with its tiers, the active sets, both charts, the sink's
        counts, a new event and its failed delivery with its attempts and a requeue button."""
        async with running_daemon(tmp_path) as rig:
            order_id = await _new_failed_order(rig)
            status, page = await _get(rig, "/")
        assert status == 200
        for section in ("Holders", "Active sets", "Last 24 hours", "Sinks", "Deliveries", "Events"):
            assert f"<h2>{section}" in page
        assert "<strong>shop</strong>" in page
        assert "working" in page
        assert "active_orders" in page
        assert "pending_kyc" in page
        assert page.count("<svg") == 2
        assert order_id in page
        assert 'class="badge s-failed">failed' in page
        assert "2 attempt(s)" in page
        assert ">500<" in page
        assert "try later" in page
        assert 'class="requeue"' in page

    @pytest.mark.timeout(30)
    async def test_event_json_is_escaped(self, tmp_path: Path) -> None:
        """An upstream field holding markup is shown as text on the event's page, never as a
        tag, and the page forbids scripts altogether."""
        async with running_daemon(tmp_path) as rig:
            order = rig.box.state.orders.of("shop")[0]
            order.order_status = SCRIPT
            store_events: list[dict[str, object]] = []

            async def changed() -> bool:
                store = await Store.open_reader(rig.config.daemon.state_path)
                try:
                    store_events[:] = await store.events(patterns=["order.status_changed"])
                finally:
                    await store.close()
                return bool(store_events)

            await eventually(changed, what="order.status_changed", task=rig.daemon)
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{rig.base}/events/{store_events[0]['id']}") as response,
            ):
                page = await response.text()
                policy = response.headers["Content-Security-Policy"]
        assert SCRIPT not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "default-src 'none'" in policy
        assert "script-src" not in policy

    @pytest.mark.timeout(30)
    async def test_unknown_event_is_404(self, tmp_path: Path) -> None:
        """An event id that is not in the log is a 404 page saying so."""
        async with running_daemon(tmp_path) as rig:
            status, page = await _get(rig, "/events/evt_nothere")
        assert status == 404
        assert "no event evt_nothere" in page


class TestFilters:
    @pytest.mark.timeout(30)
    async def test_type_and_resource(self, tmp_path: Path) -> None:
        """``type`` keeps the events of matching types, ``resource`` those of one resource."""
        async with running_daemon(tmp_path) as rig:
            first = rig.box.state.orders.create("shop")
            await rig.wait_failed()
            second = rig.box.state.orders.create("shop")
            await rig.wait_failed(2)
            _, orders = await _get(rig, "/?type=order.*")
            _, clients = await _get(rig, "/?type=client.kyc.*")
            _, one = await _get(rig, f"/?resource={second.id}")
        assert first.id in _events(orders)
        assert second.id in _events(orders)
        assert first.id not in _events(clients)
        assert second.id not in _events(clients)
        assert second.id in _events(one)
        assert first.id not in _events(one)

    @pytest.mark.timeout(30)
    async def test_state_filter_and_bad_filters(self, tmp_path: Path) -> None:
        """``state=failed`` lists only failed deliveries; a bad pattern, state or sink is a 400
        saying which."""
        async with running_daemon(tmp_path) as rig:
            await _new_failed_order(rig)
            _, failed = await _get(rig, "/?state=failed")
            bad_type = await _get(rig, "/?type=order;drop")
            bad_state = await _get(rig, "/?state=lost")
            bad_sink = await _get(rig, "/?sink=nowhere")
        listing = failed.split('id="deliveries"')[1].split('id="events"')[0]
        assert "s-failed" in listing
        assert "s-delivered" not in listing
        assert bad_type[0] == 400
        assert "is not an event pattern" in bad_type[1]
        assert bad_state[0] == 400
        assert "not a delivery state" in bad_state[1]
        assert bad_sink[0] == 400
        assert "no such sink" in bad_sink[1]


class TestActions:
    @pytest.mark.timeout(30)
    async def test_requeue_one_delivers_it(self, tmp_path: Path) -> None:
        """Requeueing a failed delivery from the page sends it at once, and the page says so."""
        async with running_daemon(tmp_path) as rig:
            order_id = await _new_failed_order(rig)
            failed = await rig.deliveries("failed")
            rig.receiver.fail_next = 0
            token = await _csrf(rig)
            status, _, response = await _post(
                rig, "/deliveries/requeue", {"csrf": token, "delivery": str(failed[0].id)},
                Origin=rig.base, **{"Referer": rig.base + "/?state=failed&x=1"},
            )  # fmt: skip
            assert status == 303
            location = response.headers["Location"]
            assert location.startswith("/?state=failed&notice=")
            assert "x=1" not in location
            await eventually(
                lambda: any(d.event["resource"]["id"] == order_id for d in rig.receiver.accepted()),
                what="the requeued delivery", task=rig.daemon,
            )  # fmt: skip
            _, page = await _get(rig, location)
        assert f"delivery {failed[0].id} requeued" in page

    @pytest.mark.timeout(30)
    async def test_requeue_all_and_replay(self, tmp_path: Path) -> None:
        """``Requeue all failed`` and ``Replay since`` call the CLI's tools and report counts;
        a bad time or sink is reported, not raised. They write through the daemon's own
        connection: the state is not opened again (each open raises the sequence floor)."""
        async with running_daemon(tmp_path) as rig:
            await _new_failed_order(rig)
            opened = await rig.opened()
            token = await _csrf(rig)
            forms = [
                ("/deliveries/requeue", {"all_failed": "1"}),
                ("/deliveries/replay", {"since": "1h", "sink": "store"}),
                ("/deliveries/replay", {"since": "yesterday", "sink": "store"}),
                ("/deliveries/replay", {"since": "1h", "sink": "nowhere"}),
                ("/deliveries/requeue", {"delivery": "abc"}),
                ("/deliveries/requeue", {"delivery": "99999"}),
            ]
            said = []
            for path, form in forms:
                _, _, response = await _post(rig, path, {"csrf": token, **form})
                said.append((await _get(rig, response.headers["Location"]))[1])
            assert await rig.opened() == opened
        notices = [re.findall(r'role="status">([^<]*)<', page)[0] for page in said]
        assert re.fullmatch(r"\d+ failed delivery\(ies\) requeued", notices[0])
        assert re.fullmatch(r"\d+ event\(s\) queued again for store", notices[1])
        assert notices[2].startswith("error: since &#x27;yesterday&#x27;: use a time like")
        assert notices[3].startswith("error: sink &#x27;nowhere&#x27;: no such sink")
        assert notices[4] == "error: &#x27;abc&#x27; is not a delivery id"
        assert notices[5] == "error: delivery 99999 not requeued: no such delivery"


class TestPaging:
    @pytest.mark.timeout(30)
    async def test_older_events_and_old_notices(self, tmp_path: Path) -> None:
        """A full page of events links to the older ones; a notice is kept for the last 32
        actions only."""
        async with running_daemon(tmp_path) as rig:
            rig.box.state.orders.create_many("shop", EVENTS_SHOWN + 5)
            await rig.wait_failed(EVENTS_SHOWN + 5)
            _, newest = await _get(rig, "/?type=order.created")
            older = re.search(r'href="([^"]*)">older events', newest)
            assert older
            _, rest = await _get(rig, older.group(1).replace("&amp;", "&"))
            token = await _csrf(rig)
            locations = []
            for _ in range(NOTICES_KEPT + 1):
                _, _, response = await _post(
                    rig, "/deliveries/requeue", {"csrf": token, "delivery": "x"}
                )
                locations.append(response.headers["Location"])
            first = (await _get(rig, locations[0]))[1]
            last = (await _get(rig, locations[-1]))[1]
        assert _events(newest).count(">order.created<") == EVENTS_SHOWN
        assert _events(rest).count(">order.created<") == 5
        assert 'role="status"' not in first
        assert 'role="status"' in last


class TestCrossSite:
    @pytest.mark.timeout(30)
    async def test_posts_without_token_or_from_elsewhere_are_refused(self, tmp_path: Path) -> None:
        """A POST without the page's form token, or from another origin or site, is a 403 and
        requeues nothing."""
        async with running_daemon(tmp_path) as rig:
            await _new_failed_order(rig)
            token = await _csrf(rig)
            form = {"all_failed": "1"}
            attempts = [
                await _post(rig, "/deliveries/requeue", form),
                await _post(rig, "/deliveries/requeue", {**form, "csrf": "forged"}),
                await _post(
                    rig,
                    "/deliveries/requeue",
                    {**form, "csrf": token},
                    Origin="http://evil.example",
                ),
                await _post(
                    rig,
                    "/deliveries/requeue",
                    {**form, "csrf": token},
                    **{"Sec-Fetch-Site": "cross-site"},
                ),
                await _post(rig, "/deliveries/replay", {"since": "1h", "sink": "store"}),
            ]
            still_failed = await rig.deliveries("failed")
        assert [status for status, _, _ in attempts] == [403] * 5
        assert "stale or was not sent by this page" in attempts[0][1]
        assert "http://evil.example" in attempts[2][1]
        assert "another site (cross-site)" in attempts[3][1]
        assert still_failed


class TestWhoMaySee:
    @pytest.mark.timeout(30)
    async def test_loopback_only_without_token(self, tmp_path: Path) -> None:
        """Without a token, a peer on another address is refused (health and metrics stay
        open), and so is a loopback request naming a foreign host (DNS rebinding)."""
        address = non_loopback_address()
        if address is None:
            pytest.skip("this machine has no non-loopback address to connect from")
        async with running_daemon(tmp_path, listen="0.0.0.0") as rig:  # noqa: S104 - the test's point
            remote = Rig(**{**vars(rig), "base": f"http://{address}:{rig.port}"})
            from_afar = await _get(remote, "/")
            health = await _get(remote, "/healthz")
            rebound = await _get(rig, "/", Host="evil.example")
            local = await _get(rig, "/", Host=f"localhost:{rig.port}")
        assert from_afar[0] == 403
        assert "SSH tunnel" in from_afar[1]
        assert health[0] in (200, 503)
        assert rebound[0] == 403
        assert "loopback names" in rebound[1]
        assert local[0] == 200

    @pytest.mark.timeout(30)
    async def test_token_by_header_or_login(self, tmp_path: Path) -> None:
        """With a token, a request without it is sent to the login form; the bearer header or
        the cookie the form sets lets it in; a wrong token does not; signing out ends it."""
        token_file = tmp_path / "operator.token"
        token_file.write_text(TOKEN + "\n")
        async with running_daemon(tmp_path, daemon='operator_token_file = "operator.token"') as rig:
            bare = await _get(rig, "/")
            bearer = await _get(rig, "/", Authorization=f"Bearer {TOKEN}")
            wrong = await _get(rig, "/", Authorization="Bearer nope")
            post_bare = await _post(rig, "/deliveries/requeue", {"all_failed": "1"})
            login_forged = await _post(rig, "/login", {"csrf": "forged", "token": TOKEN})
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
                async with session.get(rig.base + "/login") as login:
                    csrf = CSRF_RE.search(await login.text())
                assert csrf
                form = {"csrf": csrf.group(1)}
                async with session.post(rig.base + "/login", data={**form, "token": "x"}) as bad:
                    refused = bad.status, await bad.text()
                async with session.post(rig.base + "/login", data={**form, "token": TOKEN}) as ok:
                    signed_in = ok.status, await ok.text()
                    set_cookie = ok.history[0].headers["Set-Cookie"]
                async with session.post(rig.base + "/logout", data=form) as out:
                    signed_out = out.status, str(out.url)
        assert bare[0] == 303
        assert wrong[0] == 303
        assert post_bare[0] == 401
        assert login_forged[0] == 403
        assert "drgreen_operator" not in login_forged[2].headers.get("Set-Cookie", "")
        assert bearer[0] == 200
        assert "<h2>Holders" in bearer[1]
        assert refused[0] == 403
        assert "wrong token" in refused[1]
        assert signed_in[0] == 200
        assert "<h2>Holders" in signed_in[1]
        assert "Sign out" in signed_in[1]
        assert set_cookie.startswith("drgreen_operator=")
        assert TOKEN not in set_cookie
        assert "HttpOnly" in set_cookie
        assert "SameSite=Strict" in set_cookie
        assert signed_out == (200, rig.base + "/login")

    @pytest.mark.timeout(30)
    async def test_no_login_form_without_token(self, tmp_path: Path) -> None:
        """Without a token there is nothing to sign in to: /login goes to the page."""
        async with running_daemon(tmp_path) as rig:
            status, _ = await _get(rig, "/login")
            async with (
                aiohttp.ClientSession() as session,
                session.post(rig.base + "/login", data={"token": "x"}, allow_redirects=False) as r,
            ):
                posted = r.status
        assert status == 303
        assert posted == 303


class TestTokenConfig:
    def _load(
        self, tmp_path: Path, creds: ApiCredentials, lines: str, environ: dict[str, str]
    ) -> Config:
        (tmp_path / "a.api_key").write_text(creds.api_key)
        (tmp_path / "a.secret_key").write_text(creds.secret_key)
        path = tmp_path / "config.toml"
        path.write_text(
            f"[daemon]\n{lines}\n[[holders]]\nname = 'a'\napi_key_file = 'a.api_key'\n"
            "secret_key_file = 'a.secret_key'\n"
        )
        return load_config(path, environ)

    def test_short_token_and_two_ways_are_refused(
        self, tmp_path: Path, credentials: ApiCredentials
    ) -> None:
        """A token under 16 characters, or given two ways, is a problem naming the key."""
        with pytest.raises(ConfigError) as short:
            self._load(tmp_path, credentials, 'operator_token = "short"', {})
        lines = f'operator_token = "{TOKEN}"\noperator_token_env = "T"'
        with pytest.raises(ConfigError) as both:
            self._load(tmp_path, credentials, lines, {"T": TOKEN})
        assert short.value.problems == [
            "daemon.operator_token: too short to guess safely: use at least 16 characters"
            " (e.g. the output of: openssl rand -hex 24)"
        ]
        assert any("give only one of operator_token" in p for p in both.value.problems)
        with pytest.raises(ConfigError) as array:
            self._load(tmp_path, credentials, f'operator_token = ["{TOKEN}", "{TOKEN}"]', {})
        assert array.value.problems == ["daemon.operator_token: give one value, not an array"]
        assert all(TOKEN not in p for p in both.value.problems)

    def test_token_from_environment_or_none(
        self, tmp_path: Path, credentials: ApiCredentials
    ) -> None:
        """``operator_token_env`` reads the token from the environment; by default there is
        none (loopback only); its repr never shows it."""
        given = self._load(
            tmp_path, credentials, 'operator_token_env = "OP_TOKEN"', {"OP_TOKEN": TOKEN}
        )
        default = self._load(tmp_path, credentials, "", {})
        assert given.daemon.operator_token is not None
        assert given.daemon.operator_token.value == TOKEN
        assert TOKEN not in repr(given.daemon)
        assert default.daemon.operator_token is None
