"""The operator page's sections and its event page, as HTML, from ``gather``'s values.

Owns what each section shows and its forms; every value that is not this module's own text goes
through ``markup.e`` (an order field holding ``<script>`` is shown as text). Pure functions; no
scripts at all.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

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
from drgreen_poller.operator.markup import (
    at,
    attempt_time,
    badge,
    csrf_field,
    e,
    hidden,
    layout,
    link,
    stamp,
    table,
)
from drgreen_poller.store import DeliveryRow, DeliveryState

EXCERPT_CHARS = 300  # of a receiver's answer, per attempt


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
            f"{badge('refused')} since {stamp(h.refused_since, now)}"
            if h.refused_since
            else badge("ok") + " working"
        )
        budget = (
            f"{h.share_used:.0%} <span class=ago>{h.requests_last_window} requests in the last"
            f" minute of {h.rate * 60:g} allowed ({h.rate:g}/s)</span>"
        )
        rows.append(
            f'<tr class="holder"><td colspan="6"><strong>{e(h.name)}</strong> &nbsp; key: {key}'
            f" &nbsp; budget used: {budget}</td></tr>"
        )
        rows.extend(_tier_row(t, now) for t in h.tiers)
    head = ["tier", "last success", "last attempt", "failures", "last error", "next poll"]
    return '<section id="holders"><h2>Holders</h2>' + table(head, rows, numeric=(3,)) + "</section>"


def _tier_row(t: TierView, now: datetime) -> str:
    run = t.run
    following = (
        at(t.next_run_at, now)
        if t.next_run_at is not None
        else '<span class="muted">running or queued</span>'
    )
    return (
        f"<tr><td>{e(t.tier)}</td><td>{stamp(run.last_success_at if run else None, now)}</td>"
        f"<td>{stamp(run.last_attempt_at if run else None, now)}</td>"
        f'<td class="num">{e(run.consecutive_failures if run else 0)}</td>'
        f'<td class="mono">{e(run.last_error if run and run.consecutive_failures else "")}</td>'
        f"<td>{following}</td></tr>"
    )


def _active_section(holders: list[HolderView]) -> str:
    rows = [
        f"<tr><td>{e(h.name)}</td>"
        + "".join(f'<td class="num">{h.active[tier]:,}</td>' for tier in SET_TIERS)
        + f'<td class="num">{sum(h.active.values()):,}</td></tr>'
        for h in holders
    ]
    head = ["holder", *SET_TIERS, "total"]
    return (
        '<section id="active"><h2>Active sets</h2>'
        + table(head, rows, numeric=range(1, len(head)))
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
    return f'<p class="notice{error}" role="status">{e(notice)}</p>'


def _sinks_section(
    sinks: list[SinkView], now: datetime, csrf: str, notice: str | None = None
) -> str:
    rows = [
        f"<tr><td>{e(s.name)}</td><td>{e(s.kind)}</td>"
        + "".join(
            f'<td class="num">{s.counts[state]:,}</td>'
            for state in ("pending", "delivering", "failed", "delivered")
        )
        + f"<td>{stamp(s.oldest_due_at, now) if s.oldest_due_at else '-'}</td></tr>"
        for s in sinks
    ]
    head = ["sink", "kind", "pending", "delivering", "failed", "delivered", "oldest owed since"]
    failed = sum(s.counts["failed"] for s in sinks)
    options = "".join(f'<option value="{e(s.name)}">{e(s.name)}</option>' for s in sinks)
    actions = (
        f'<form class="bar" method="post" action="/deliveries/requeue">{csrf_field(csrf)}'
        '<input type="hidden" name="all_failed" value="1">'
        f'<button type="submit" id="requeue-all"{"" if failed else " disabled"}>'
        f"Requeue all failed deliveries ({failed:,})</button></form>"
        f'<form class="bar" method="post" action="/deliveries/replay">{csrf_field(csrf)}'
        f'<label>Replay every event since <input name="since" required size="24"'
        ' placeholder="2h, or 2026-11-23T10:00Z"></label>'
        f'<label> to sink <select name="sink">{options}</select></label>'
        '<button type="submit" id="replay">Replay</button></form>'
    )
    return (
        '<section id="sinks"><h2>Sinks</h2>'
        + _notice(notice)
        + table(head, rows, numeric=range(2, 6))
        + actions
        + "</section>"
    )


def _deliveries_section(o: Overview, csrf: str) -> str:
    f = o.delivery_filter
    states = "".join(
        f'<option value="{e(s)}"{" selected" if s == f.state else ""}>{e(s or "any")}</option>'
        for s in ("", *DeliveryState)
    )
    sinks = "".join(
        f'<option value="{e(s)}"{" selected" if s == f.sink else ""}>{e(s or "any")}</option>'
        for s in ("", *(v.name for v in o.sinks))
    )
    keep = hidden({"type": o.event_filter.types, "resource": o.event_filter.resource})
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
        + table([*head, ""], rows, numeric=(0,))
        + "</section>"
    )


def _delivery_row(
    row: DeliveryRow, attempts: list[dict[str, Any]], now: datetime, csrf: str
) -> str:
    pending = row.state == DeliveryState.PENDING
    action = ""
    if row.state in (DeliveryState.FAILED, DeliveryState.PENDING):
        label = "Requeue" if row.state == DeliveryState.FAILED else "Send now"
        action = (
            f'<form class="inline" method="post" action="/deliveries/requeue">{csrf_field(csrf)}'
            f'<input type="hidden" name="delivery" value="{row.id}">'
            f'<button type="submit" class="requeue" id="requeue-{row.id}">{label}</button>'
            "</form>"
        )
    return (
        f'<tr id="delivery-{row.id}"><td class="num">{row.id}</td><td>{e(row.sink)}</td>'
        f'<td class="state">{badge(row.state)}</td>'
        f'<td><a href="{link("/events/" + row.event_id, {})}">{e(row.event_type)}</a></td>'
        f"<td>{_attempts_cell(row.attempts, attempts)}</td>"
        f'<td class="mono">{e(row.last_outcome or "-")}</td><td>{stamp(row.created_at, now)}</td>'
        f"<td>{at(row.next_attempt_at, now) if pending else '-'}</td><td>{action}</td></tr>"
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
        f'<div class="attempt">#{e(a["attempt"])} {attempt_time(a["started_at"])}'
        f" &middot; {float(a['duration_ms']):.0f} ms &middot;"
        f" {badge('ok' if a['ok'] else 'failed')} <span class=mono>{e(outcome)}</span>"
        + (f'<div class="mono excerpt">{e(excerpt)}</div>' if excerpt else "")
        + "</div>"
    )


def _events_section(o: Overview) -> str:
    f = o.event_filter
    keep = hidden({"state": o.delivery_filter.state, "sink": o.delivery_filter.sink})
    filters = (
        f'<form class="bar" method="get" action="/#events">{keep}'
        f'<label>type <input name="type" value="{e(f.types)}" placeholder="order.* client.kyc.*"'
        ' size="28"></label>'
        f'<label>resource id <input name="resource" value="{e(f.resource)}" size="38"></label>'
        '<button class="quiet" type="submit">Filter</button>'
        '<a href="/#events">clear</a></form>'
    )
    head = ["observed", "holder", "type", "resource", "sequence", ""]
    rows = [_event_row(logged.body, o.now) for logged in o.events]
    more = ""
    if len(o.events) == EVENTS_SHOWN:
        older = {"type": f.types, "resource": f.resource, "before": o.events[-1].seq}
        more = f'<p><a href="{link("/", older, "events")}">older events</a></p>'
    return (
        '<section id="events"><h2>Events <span class="muted">(newest first)</span></h2>'
        + filters
        + table(head, rows, numeric=(4,))
        + more
        + "</section>"
    )


def _event_row(event: dict[str, Any], now: datetime) -> str:
    resource = event.get("resource") or {}
    inferred = ' <span class="muted">(inferred)</span>' if event.get("inferred") else ""
    return (
        f"<tr><td>{stamp(event.get('observed_at'), now)}</td><td>{e(event.get('holder'))}</td>"
        f"<td>{e(event.get('type'))}{inferred}</td>"
        f'<td class="mono">{e(resource.get("type"))} {e(resource.get("id"))}</td>'
        f'<td class="num">{e(event.get("sequence"))}</td>'
        f'<td><a href="{link("/events/" + str(event.get("id", "")), {})}">JSON</a></td></tr>'
    )


def event_html(page: EventPage, now: datetime, csrf: str, *, signed_in: bool = False) -> str:
    """One event: its envelope as sent, and its deliveries with their attempts."""
    event = page.event
    rows = [_delivery_row(r, page.attempts.get(r.id, []), now, csrf) for r in page.deliveries]
    head = ["id", "sink", "state", "event", "attempts", "last outcome", "created", "next attempt"]
    body = (
        f'<p><a href="/#events">&larr; all events</a></p><section><h2>{e(event.get("type"))}'
        f' <span class="muted mono">{e(event.get("id"))}</span></h2>'
        f"<pre>{e(json.dumps(event, indent=2, ensure_ascii=False))}</pre></section>"
        f"<section><h2>Its deliveries</h2>{table([*head, ''], rows, numeric=(0,))}</section>"
    )
    return layout(f"event {event.get('id')}", body, signed_in=signed_in, csrf=csrf)
