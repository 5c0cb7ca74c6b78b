"""The operator page's HTML: the layout, each section, the event page, the login and refusal pages.

Owns the markup and the one rule that makes it safe: every value that is not this module's own
text goes through ``_e`` (``html.escape``), upstream text included (an order field holding
``<script>`` is shown as text). Pure functions of ``gather``'s values; no scripts at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from drgreen_poller import __version__
from drgreen_poller.operator.access import CSRF_FIELD
from drgreen_poller.operator.charts import bar_chart
from drgreen_poller.operator.gather import (
    EVENTS_SHOWN,
    SET_TIERS,
    EventPage,
    HolderView,
    Overview,
    SinkView,
    TierView,
)
from drgreen_poller.store import DeliveryRow, DeliveryState

EXCERPT_CHARS = 300  # of a receiver's answer, per attempt
_STYLE = """
:root{--fg:#1d2330;--mute:#5d6779;--line:#dfe3ea;--bg:#f6f7f9;--card:#fff;--accent:#1f6feb}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
header{background:#17202e;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:center}
header h1{font-size:16px;margin:0;font-weight:600}
header nav a{color:#c9d5ea;margin-right:14px;text-decoration:none}
header .meta{margin-left:auto;color:#9fb0c9;font-size:12px}
main{max-width:1240px;margin:0 auto;padding:16px 24px 48px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:14px 18px;margin:14px 0}
h2{font-size:15px;margin:0 0 10px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;color:var(--mute);font-size:12px;text-transform:uppercase;letter-spacing:.03em}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12.5px}
.muted{color:var(--mute)}.ago{color:var(--mute);font-size:12px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.s-ok,.s-delivered{background:#dcf5e3;color:#1a7f37}.s-failed,.s-refused{background:#ffe1e0;color:#b42318}
.s-pending{background:#fff3cd;color:#8a5a00}.s-delivering{background:#dbe9ff;color:#1d4ed8}
.notice{background:#e7f0ff;border:1px solid #b7cffb;padding:8px 12px;border-radius:6px}
.notice.error{background:#ffecec;border-color:#f5b5b5}
form.inline{display:inline}
form.bar{display:flex;gap:8px;align-items:center;flex-wrap:wrap;margin:6px 0 10px}
input,select,button{font:inherit;padding:4px 8px;border:1px solid #c4cad4;border-radius:5px}
button{background:var(--accent);color:#fff;border-color:var(--accent);cursor:pointer}
button.quiet{background:#fff;color:var(--accent)}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:14px}
svg.chart{width:100%;height:auto}.chart .bar{fill:#5b8def}
.chart .high{stroke:#1b3a8a;stroke-width:2}
.chart .axis{stroke:#9aa4b2}.chart .grid{stroke:#eef0f4}.chart .tick{font-size:14px;fill:#5d6779}
figure{margin:0}figcaption{color:var(--mute);margin-bottom:4px}
pre{background:#f3f5f8;border:1px solid var(--line);padding:12px;border-radius:6px;overflow:auto}
details summary{cursor:pointer;color:var(--accent);white-space:nowrap}
time,td.num,.ago{white-space:nowrap}
.attempt{margin:4px 0 0 14px;max-width:340px;font-size:12.5px}
.excerpt{color:var(--mute);overflow-wrap:anywhere}
.scroll{overflow-x:auto}
"""


def _e(value: Any) -> str:
    """``value`` as HTML text (quotes escaped too: safe in attributes)."""
    return escape("" if value is None else str(value), quote=True)


def _ago(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _stamp(iso: str | None, now: datetime) -> str:
    """An ISO time from the database, as UTC text and how long ago (or ahead) it is."""
    if not iso:
        return '<span class="muted">never</span>'
    when = _parse(iso)
    return _time(when, (now - when).total_seconds())


def _time(when: datetime, ago_s: float) -> str:
    shown = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    relative = f"{_ago(ago_s)} ago" if ago_s >= 0 else f"in {_ago(ago_s)}"
    return (
        f'<time datetime="{_e(when.isoformat())}">{_e(shown)}</time>'
        f' <span class="ago">{_e(relative)}</span>'
    )


def _at(timestamp: float, now: datetime) -> str:
    """Unix seconds, as ``_stamp`` shows a time."""
    when = datetime.fromtimestamp(timestamp, UTC)
    return _time(when, (now - when).total_seconds())


def _clock_time(iso: str) -> str:
    """An attempt's start as ``14:32:05.951`` (its date is the row's; the full time is in the
    ``datetime`` attribute)."""
    return iso[11:23]


def _attempt_time(iso: str) -> str:
    return f'<time datetime="{_e(iso)}">{_e(_clock_time(iso))}</time>'


def _badge(state: str) -> str:
    return f'<span class="badge s-{_e(state)}">{_e(state)}</span>'


def _link(path: str, params: dict[str, Any], fragment: str = "") -> str:
    """A URL to ``path`` with the non-empty ``params``, escaped for an attribute."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return _e(path + (f"?{query}" if query else "") + (f"#{fragment}" if fragment else ""))


def _csrf(token: str) -> str:
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{_e(token)}">'


def _table(head: Sequence[str], rows: Iterable[str], numeric: Sequence[int] = ()) -> str:
    cells = "".join(
        f"<th{' class=num' if i in numeric else ''}>{_e(h)}</th>" for i, h in enumerate(head)
    )
    body = "".join(rows) or f'<tr><td colspan="{len(head)}" class="muted">none</td></tr>'
    return (
        f'<div class="scroll"><table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody>'
        "</table></div>"
    )


def layout(title: str, body: str, *, signed_in: bool = False, csrf: str = "") -> str:
    """The whole document around ``body``."""
    logout = (
        f'<form class="inline" method="post" action="/logout">{_csrf(csrf)}'
        '<button class="quiet" type="submit">Sign out</button></form>'
        if signed_in
        else ""
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        '<header><h1>drgreen-poller</h1><nav><a href="/#holders">Holders</a>'
        '<a href="/#charts">Charts</a><a href="/#deliveries">Deliveries</a>'
        '<a href="/#events">Events</a></nav>'
        f'<span class="meta">version {_e(__version__)}</span>{logout}</header>'
        f"<main>{body}</main></body></html>"
    )


def overview_html(o: Overview, csrf: str, *, signed_in: bool = False) -> str:
    """The main page."""
    body = "".join(
        [
            _holders_section(o.holders, o.now),
            _active_section(o.holders),
            _charts_section(o),
            _sinks_section(o.sinks, o.now, csrf, o.notice),
            _deliveries_section(o, csrf),
            _events_section(o),
        ]
    )
    return layout("drgreen-poller: operator page", body, signed_in=signed_in, csrf=csrf)


def _holders_section(holders: list[HolderView], now: datetime) -> str:
    rows = []
    for h in holders:
        key = (
            f"{_badge('refused')} since {_stamp(h.refused_since, now)}"
            if h.refused_since
            else _badge("ok") + " working"
        )
        budget = (
            f"{h.share_used:.0%} <span class=ago>{h.requests_last_window} requests in the last"
            f" minute of {h.rate * 60:g} allowed ({h.rate:g}/s)</span>"
        )
        rows.append(
            f'<tr class="holder"><td colspan="6"><strong>{_e(h.name)}</strong> &nbsp; key: {key}'
            f" &nbsp; budget used: {budget}</td></tr>"
        )
        rows.extend(_tier_row(t, now) for t in h.tiers)
    head = ["tier", "last success", "last attempt", "failures", "last error", "next poll"]
    return (
        '<section id="holders"><h2>Holders</h2>' + _table(head, rows, numeric=(3,)) + "</section>"
    )


def _tier_row(t: TierView, now: datetime) -> str:
    run = t.run
    following = (
        _at(t.next_run_at, now)
        if t.next_run_at is not None
        else '<span class="muted">running or queued</span>'
    )
    return (
        f"<tr><td>{_e(t.tier)}</td><td>{_stamp(run.last_success_at if run else None, now)}</td>"
        f"<td>{_stamp(run.last_attempt_at if run else None, now)}</td>"
        f'<td class="num">{_e(run.consecutive_failures if run else 0)}</td>'
        f'<td class="mono">{_e(run.last_error if run and run.consecutive_failures else "")}</td>'
        f"<td>{following}</td></tr>"
    )


def _active_section(holders: list[HolderView]) -> str:
    rows = [
        f"<tr><td>{_e(h.name)}</td>"
        + "".join(f'<td class="num">{h.active[tier]:,}</td>' for tier in SET_TIERS)
        + f'<td class="num">{sum(h.active.values()):,}</td></tr>'
        for h in holders
    ]
    head = ["holder", *SET_TIERS, "total"]
    return (
        '<section id="active"><h2>Active sets</h2>'
        + _table(head, rows, numeric=range(1, len(head)))
        + "</section>"
    )


def _charts_section(o: Overview) -> str:
    events = bar_chart("Events per hour, last 24 h (UTC)", o.events_chart)
    latency = bar_chart(
        "Delivery latency per hour, last 24 h: median (bars) and p95 (lines)", o.latency_chart, "s"
    )
    return (
        '<section id="charts"><h2>Last 24 hours</h2><div class="charts">'
        f"<figure><figcaption>Events per hour (UTC)</figcaption>{events}</figure>"
        "<figure><figcaption>Delivery latency: median (bars), p95 (lines), from the event's"
        f" outbox row to its receiver's answer</figcaption>{latency}</figure></div></section>"
    )


def _notice(notice: str | None) -> str:
    """What the last action did, above the sinks and their actions (where it lands)."""
    if not notice:
        return ""
    error = " error" if notice.startswith("error:") else ""
    return f'<p class="notice{error}" role="status">{_e(notice)}</p>'


def _sinks_section(
    sinks: list[SinkView], now: datetime, csrf: str, notice: str | None = None
) -> str:
    rows = [
        f"<tr><td>{_e(s.name)}</td><td>{_e(s.kind)}</td>"
        + "".join(
            f'<td class="num">{s.counts[state]:,}</td>'
            for state in ("pending", "delivering", "failed", "delivered")
        )
        + f"<td>{_stamp(s.oldest_due_at, now) if s.oldest_due_at else '-'}</td></tr>"
        for s in sinks
    ]
    head = ["sink", "kind", "pending", "delivering", "failed", "delivered", "oldest owed since"]
    failed = sum(s.counts["failed"] for s in sinks)
    options = "".join(f'<option value="{_e(s.name)}">{_e(s.name)}</option>' for s in sinks)
    actions = (
        f'<form class="bar" method="post" action="/deliveries/requeue">{_csrf(csrf)}'
        '<input type="hidden" name="all_failed" value="1">'
        f'<button type="submit" id="requeue-all"{"" if failed else " disabled"}>'
        f"Requeue all failed deliveries ({failed:,})</button></form>"
        f'<form class="bar" method="post" action="/deliveries/replay">{_csrf(csrf)}'
        f'<label>Replay every event since <input name="since" required size="24"'
        ' placeholder="2h, or 2026-11-23T10:00Z"></label>'
        f'<label> to sink <select name="sink">{options}</select></label>'
        '<button type="submit" id="replay">Replay</button></form>'
    )
    return (
        '<section id="sinks"><h2>Sinks</h2>'
        + _notice(notice)
        + _table(head, rows, numeric=range(2, 6))
        + actions
        + "</section>"
    )


def _deliveries_section(o: Overview, csrf: str) -> str:
    f = o.delivery_filter
    states = "".join(
        f'<option value="{_e(s)}"{" selected" if s == f.state else ""}>{_e(s or "any")}</option>'
        for s in ("", *DeliveryState)
    )
    sinks = "".join(
        f'<option value="{_e(s)}"{" selected" if s == f.sink else ""}>{_e(s or "any")}</option>'
        for s in ("", *(v.name for v in o.sinks))
    )
    keep = _hidden({"type": o.event_filter.types, "resource": o.event_filter.resource})
    filters = (
        f'<form class="bar" method="get" action="/#deliveries">{keep}'
        f'<label>state <select name="state">{states}</select></label>'
        f'<label>sink <select name="sink">{sinks}</select></label>'
        '<button class="quiet" type="submit">Show</button></form>'
    )
    head = ["id", "sink", "state", "event", "attempts", "last outcome", "created", "next attempt"]
    rows = [_delivery_row(row, o.attempts.get(row.id, []), o.now, csrf) for row in o.deliveries]
    return (
        '<section id="deliveries"><h2>Deliveries <span class="muted">(newest first)</span></h2>'
        + filters
        + _table([*head, ""], rows, numeric=(0,))
        + "</section>"
    )


def _hidden(params: dict[str, str]) -> str:
    return "".join(
        f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">' for k, v in params.items() if v
    )


def _delivery_row(
    row: DeliveryRow, attempts: list[dict[str, Any]], now: datetime, csrf: str
) -> str:
    pending = row.state == DeliveryState.PENDING
    action = ""
    if row.state in (DeliveryState.FAILED, DeliveryState.PENDING):
        label = "Requeue" if row.state == DeliveryState.FAILED else "Send now"
        action = (
            f'<form class="inline" method="post" action="/deliveries/requeue">{_csrf(csrf)}'
            f'<input type="hidden" name="delivery" value="{row.id}">'
            f'<button type="submit" class="requeue" id="requeue-{row.id}">{label}</button>'
            "</form>"
        )
    return (
        f'<tr id="delivery-{row.id}"><td class="num">{row.id}</td><td>{_e(row.sink)}</td>'
        f'<td class="state">{_badge(row.state)}</td>'
        f'<td><a href="{_link("/events/" + row.event_id, {})}">{_e(row.event_type)}</a></td>'
        f"<td>{_attempts_cell(row.attempts, attempts)}</td>"
        f'<td class="mono">{_e(row.last_outcome or "-")}</td><td>{_stamp(row.created_at, now)}</td>'
        f"<td>{_at(row.next_attempt_at, now) if pending else '-'}</td><td>{action}</td></tr>"
    )


def _attempts_cell(count: int, attempts: list[dict[str, Any]]) -> str:
    if not attempts:
        return f"{count}"
    return (
        f"<details><summary>{count} attempt(s)</summary>"
        + "".join(_attempt(a) for a in attempts)
        + "</details>"
    )


def _attempt(a: dict[str, Any]) -> str:
    """One attempt: number, start, duration, outcome, and the first bytes of the answer."""
    outcome = a["status"] if a["status"] is not None else a["error_class"]
    excerpt = (a["response_excerpt"] or "")[:EXCERPT_CHARS]
    return (
        f'<div class="attempt">#{_e(a["attempt"])} {_attempt_time(a["started_at"])}'
        f" &middot; {float(a['duration_ms']):.0f} ms &middot;"
        f" {_badge('ok' if a['ok'] else 'failed')} <span class=mono>{_e(outcome)}</span>"
        + (f'<div class="mono excerpt">{_e(excerpt)}</div>' if excerpt else "")
        + "</div>"
    )


def _events_section(o: Overview) -> str:
    f = o.event_filter
    keep = _hidden({"state": o.delivery_filter.state, "sink": o.delivery_filter.sink})
    filters = (
        f'<form class="bar" method="get" action="/#events">{keep}'
        f'<label>type <input name="type" value="{_e(f.types)}" placeholder="order.* client.kyc.*"'
        ' size="28"></label>'
        f'<label>resource id <input name="resource" value="{_e(f.resource)}" size="38"></label>'
        '<button class="quiet" type="submit">Filter</button>'
        '<a href="/#events">clear</a></form>'
    )
    head = ["observed", "holder", "type", "resource", "sequence", ""]
    rows = [_event_row(e.body, o.now) for e in o.events]
    more = ""
    if len(o.events) == EVENTS_SHOWN:
        older = {"type": f.types, "resource": f.resource, "before": o.events[-1].seq}
        more = f'<p><a href="{_link("/", older, "events")}">older events</a></p>'
    return (
        '<section id="events"><h2>Events <span class="muted">(newest first)</span></h2>'
        + filters
        + _table(head, rows, numeric=(4,))
        + more
        + "</section>"
    )


def _event_row(event: dict[str, Any], now: datetime) -> str:
    resource = event.get("resource") or {}
    inferred = ' <span class="muted">(inferred)</span>' if event.get("inferred") else ""
    return (
        f"<tr><td>{_stamp(event.get('observed_at'), now)}</td><td>{_e(event.get('holder'))}</td>"
        f"<td>{_e(event.get('type'))}{inferred}</td>"
        f'<td class="mono">{_e(resource.get("type"))} {_e(resource.get("id"))}</td>'
        f'<td class="num">{_e(event.get("sequence"))}</td>'
        f'<td><a href="{_link("/events/" + str(event.get("id", "")), {})}">JSON</a></td></tr>'
    )


def event_html(page: EventPage, now: datetime, csrf: str, *, signed_in: bool = False) -> str:
    """One event: its envelope as sent, and its deliveries with their attempts."""
    event = page.event
    rows = [_delivery_row(r, page.attempts.get(r.id, []), now, csrf) for r in page.deliveries]
    head = ["id", "sink", "state", "event", "attempts", "last outcome", "created", "next attempt"]
    body = (
        f'<p><a href="/#events">&larr; all events</a></p><section><h2>{_e(event.get("type"))}'
        f' <span class="muted mono">{_e(event.get("id"))}</span></h2>'
        f"<pre>{_e(json.dumps(event, indent=2, ensure_ascii=False))}</pre></section>"
        f"<section><h2>Its deliveries</h2>{_table([*head, ''], rows, numeric=(0,))}</section>"
    )
    return layout(f"event {event.get('id')}", body, signed_in=signed_in, csrf=csrf)


def login_html(csrf: str, error: str | None = None) -> str:
    """The token form shown when ``[daemon] operator_token`` is set."""
    shown = f'<p class="notice error">{_e(error)}</p>' if error else ""
    body = (
        f"<section><h2>Sign in</h2>{shown}<p>This page needs the token set as"
        " <code>[daemon] operator_token</code> in the daemon's configuration.</p>"
        f'<form class="bar" method="post" action="/login">{_csrf(csrf)}'
        '<label>token <input type="password" name="token" autocomplete="current-password"'
        ' required size="40"></label><button type="submit">Sign in</button></form></section>'
    )
    return layout("drgreen-poller: sign in", body)


def refused_html(reason: str) -> str:
    """Why the page is not shown to this request."""
    return layout(
        "drgreen-poller: refused", f"<section><h2>Refused</h2><p>{_e(reason)}</p></section>"
    )


def not_found_html(what: str) -> str:
    return layout(
        "drgreen-poller: not found", f"<section><h2>Not found</h2><p>{_e(what)}</p></section>"
    )
