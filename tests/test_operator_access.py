"""Who may see and act on the operator page over HTTP (no browser), with the real daemon against
the sandbox: loopback only without a token, the token by header or login form, the token's
configuration, and the cross-site checks refusing its two actions."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from drgreen_poller.config import Config, load_config
from drgreen_poller.errors import ConfigError
from drgreen_poller.request_signing import ApiCredentials
from tests.operator_rig import (
    CSRF_RE,
    TOKEN,
    Rig,
    csrf_token,
    get_page,
    new_failed_order,
    non_loopback_address,
    post_form,
    running_daemon,
)


class TestCrossSite:
    @pytest.mark.timeout(30)
    async def test_posts_without_token_or_from_elsewhere_are_refused(self, tmp_path: Path) -> None:
        """A POST without the page's form token, or from another origin or site, is a 403 and
        requeues nothing."""
        async with running_daemon(tmp_path) as rig:
            await new_failed_order(rig)
            token = await csrf_token(rig)
            form = {"all_failed": "1"}
            attempts = [
                await post_form(rig, "/deliveries/requeue", form),
                await post_form(rig, "/deliveries/requeue", {**form, "csrf": "forged"}),
                await post_form(
                    rig,
                    "/deliveries/requeue",
                    {**form, "csrf": token},
                    Origin="http://evil.example",
                ),
                await post_form(
                    rig,
                    "/deliveries/requeue",
                    {**form, "csrf": token},
                    **{"Sec-Fetch-Site": "cross-site"},
                ),
                await post_form(rig, "/deliveries/replay", {"since": "1h", "sink": "store"}),
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
            from_afar = await get_page(remote, "/")
            health = await get_page(remote, "/healthz")
            rebound = await get_page(rig, "/", Host="evil.example")
            local = await get_page(rig, "/", Host=f"localhost:{rig.port}")
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
            bare = await get_page(rig, "/")
            bearer = await get_page(rig, "/", Authorization=f"Bearer {TOKEN}")
            wrong = await get_page(rig, "/", Authorization="Bearer nope")
            post_bare = await post_form(rig, "/deliveries/requeue", {"all_failed": "1"})
            login_forged = await post_form(rig, "/login", {"csrf": "forged", "token": TOKEN})
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
            status, _ = await get_page(rig, "/login")
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
