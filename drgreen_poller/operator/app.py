"""The operator page's routes: ``GET /``, ``GET /events/{id}``, the two actions, sign-in and out.

Owns request handling: the access rules (``access``) before anything is read, the query
string's filters, and the actions, which call the CLI's own operator tools (``deliveries
retry`` and ``replay``: ``drgreen_poller.deliveries``) and then wake the delivery worker so a
requeued delivery goes out at once. Every answer is HTML under a strict Content-Security-Policy
(no script may run). It never logs a request, a token or a form.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiohttp import web
from yarl import URL

from drgreen_poller.admin import event_patterns, parse_since
from drgreen_poller.deliveries import replay, retry_deliveries, retry_failed
from drgreen_poller.errors import DrGreenError
from drgreen_poller.operator import markup, render
from drgreen_poller.operator.access import COOKIE, SIGN_IN, Access, session_value
from drgreen_poller.operator.gather import DeliveryFilter, EventFilter, event_page, overview
from drgreen_poller.service import Service
from drgreen_poller.store import DeliveryState

# No script may run, nothing may frame the page, and forms post only to it.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # "same-origin", not "no-referrer": with no-referrer, browsers send "Origin: null" on the
    # page's own POSTs, and the cross-site check could not tell them from a foreign site's.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NOTICES_KEPT = 32
FILTER_CHARS_MAX = 200
_FILTERS = ("type", "resource", "state", "sink")  # the main page's query string

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=HEADERS)


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})


class OperatorPage:
    """The page over a running ``service``; ``routes()`` are added to the daemon's HTTP app."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.access = Access(self._token)
        self._notices: OrderedDict[str, str] = OrderedDict()

    def _token(self) -> str | None:
        token = self.service.config.daemon.operator_token
        return token.value if token is not None else None

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self._guarded(self.index)),
            web.get("/events/{event_id}", self._guarded(self.event)),
            web.post("/deliveries/requeue", self._guarded(self.requeue)),
            web.post("/deliveries/replay", self._guarded(self.replay)),
            web.get("/login", self.login_form),
            web.post("/login", self.login),
            web.post("/logout", self._guarded(self.logout)),
        ]

    def _guarded(self, handler: Handler) -> Handler:
        """``handler`` behind the access rules (and, for a POST, the cross-site checks)."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            refusal = self.access.refusal(request)
            if refusal == SIGN_IN:
                if request.method == "GET":
                    return _see_other("/login")
                return _html(markup.refused_html("sign in first"), 401)
            if refusal is not None:
                return _html(markup.refused_html(refusal), 403)
            if request.method == "POST":
                why = self.access.post_refusal(request, await _form(request))
                if why is not None:
                    return _html(markup.refused_html(why), 403)
            return await handler(request)

        return guarded

    @property
    def _signed_in(self) -> bool:
        return self._token() is not None

    # --- pages ------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        try:
            events, deliveries = self._filters(request)
        except DrGreenError as exc:
            return _html(markup.refused_html(str(exc).removeprefix("--")), 400)
        found = await overview(self.service, events, deliveries, self.service.runtime.clock.now())
        found.notice = self._notices.get(request.query.get("notice", ""))
        return _html(render.overview_html(found, self.access.csrf, signed_in=self._signed_in))

    def _filters(self, request: web.Request) -> tuple[EventFilter, DeliveryFilter]:
        """The listings' filters from the query string.

        Raises:
            DrGreenError: a filter that is not a glob, a delivery state or a configured sink.
        """
        q = request.query
        types, resource = q.get("type", "")[:FILTER_CHARS_MAX], q.get("resource", "").strip()
        event_patterns(EventFilter(types).patterns)  # raises on a pattern that is not a glob
        before = q.get("before", "")
        state, sink = q.get("state", ""), q.get("sink", "")
        if state and state not in set(DeliveryState):
            raise DrGreenError(f"state {state!r}: not a delivery state")
        if sink and sink not in {s.name for s in self.service.config.sinks}:
            raise DrGreenError(f"sink {sink!r}: no such sink")
        return (
            EventFilter(
                types, resource[:FILTER_CHARS_MAX], int(before) if before.isdigit() else None
            ),
            DeliveryFilter(state, sink),
        )

    async def event(self, request: web.Request) -> web.StreamResponse:
        event_id = request.match_info["event_id"]
        found = await event_page(self.service, event_id)
        if found is None:
            return _html(
                markup.not_found_html(f"no event {event_id} (pruned, or never logged)"), 404
            )
        now = self.service.runtime.clock.now()
        return _html(render.event_html(found, now, self.access.csrf, signed_in=self._signed_in))

    # --- actions ----------------------------------------------------------------------------

    async def requeue(self, request: web.Request) -> web.StreamResponse:
        """``deliveries retry --all-failed`` or ``deliveries retry ID``."""
        form = await _form(request)
        if form.get("all_failed"):
            return await self._act(request, self._requeue_failed)
        return await self._act(request, lambda: self._requeue_one(form.get("delivery", "")))

    async def replay(self, request: web.Request) -> web.StreamResponse:
        """``deliveries replay --since T --sink N``."""
        form = await _form(request)
        return await self._act(request, lambda: self._replay(form.get("sink", ""), form))

    async def _act(
        self, request: web.Request, action: Callable[[], Awaitable[str]]
    ) -> web.Response:
        """Run ``action``, wake the delivery worker (rows it made due go out at once), and
        show the page again with what it did (a refusal is said there, not raised)."""
        try:
            said = await action()
        except DrGreenError as exc:
            said = f"error: {str(exc).removeprefix('--')}"
        self.service.worker.wake()
        return self._done(request, said)

    async def _requeue_failed(self) -> str:
        count = await retry_failed(
            self.service.config, self.service.runtime.clock.now(), store=self.service.runtime.store
        )
        return f"{count} failed delivery(ies) requeued"

    async def _requeue_one(self, given: str) -> str:
        if not given.isdigit():
            return f"error: {given!r} is not a delivery id"
        delivery_id = int(given)
        now = self.service.runtime.clock.now()
        store = self.service.runtime.store
        found = await retry_deliveries(self.service.config, [delivery_id], now, store=store)
        why = found[delivery_id]
        if why is None:
            return f"delivery {delivery_id} requeued"
        return f"error: delivery {delivery_id} not requeued: {why}"

    async def _replay(self, sink: str, form: dict[str, str]) -> str:
        now = self.service.runtime.clock.now()
        since = parse_since(form.get("since", "").strip(), now)
        count = await replay(
            self.service.config, sink, since, now, store=self.service.runtime.store
        )
        return f"{count} event(s) queued again for {sink}"

    def _done(self, request: web.Request, notice: str) -> web.Response:
        """Post/redirect/get: the main page again, with its filters as they were (from the
        page's own address, when the browser gave it) and what the action did."""
        key = secrets.token_urlsafe(8)
        self._notices[key] = notice
        while len(self._notices) > NOTICES_KEPT:
            self._notices.popitem(last=False)
        came_from = URL(request.headers.get("Referer", "/"))
        # Only the listing filters are carried over, into this page's own path: a Referer can
        # choose nothing else.
        kept = {k: v for k, v in came_from.query.items() if k in _FILTERS}
        target = URL("/").with_query({**kept, "notice": key}).with_fragment("sinks")
        return _see_other(str(target))

    # --- signing in -------------------------------------------------------------------------

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        if self._token() is None:
            return _see_other("/")
        return _html(markup.login_html(self.access.csrf))

    async def login(self, request: web.Request) -> web.StreamResponse:
        token = self._token()
        if token is None:
            return _see_other("/")
        form = await _form(request)
        why = self.access.post_refusal(request, form)
        if why is not None:
            return _html(markup.refused_html(why), 403)
        if not secrets.compare_digest(form.get("token", "").encode(), token.encode()):
            return _html(markup.login_html(self.access.csrf, "wrong token"), 403)
        response = _see_other("/")
        response.set_cookie(
            COOKIE, session_value(token), httponly=True, samesite="Strict", path="/",
            secure=request.secure,
        )  # fmt: skip
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        response = _see_other("/login")
        response.del_cookie(COOKIE, path="/")
        return response


async def _form(request: web.Request) -> dict[str, str]:
    """A POST's form fields as text (files and repeated fields are not expected here)."""
    data = await request.post()
    return {key: value for key, value in data.items() if isinstance(value, str)}
